"""Evaluate a checkpoint (ours, or a converted official one) on the validation split.

    python eval.py --config configs/vig_ti_224_gelu.yaml --data_url /path/to/imagenet --pretrained vig_ti.ckpt [--use_ema true|false]

Prints top-1, top-5 and the mean cross-entropy, computed with the evaluation transform (bicubic resize to
image_size / crop_pct, centre crop, mean/std: each from the command line, else the config file, else the
checkpoint's record, else the ModelZoo's value with a config file or the model's default without one), and
the MindSpore ModelZoo's `=> eval results:{...}` line. With --train_url on the command line (as ModelArts passes
it) the results are also written there as JSON.
"""
from src.app.cli import run_cli


def main(argv=None) -> dict:
    from src.app.config import load_config
    from src.app.jobs import run_evaluation
    cfg = load_config(argv, description=__doc__, entry="eval")
    result = run_evaluation(cfg)
    print(f"evaluation transform: {result['transform']}")
    print(f"{cfg.arch} {'EMA' if result['ema'] else 'model'} weights of {cfg.pretrained} ({cfg.eval_amp_level}): "
          f"top1 {result['top1']:.2f} top5 {result['top5']:.2f} loss {result['loss']:.4f} ({result['count']} images"
          f"{', classes matched by name' if result['classes_by_name'] else ''})")
    # The MindSpore ModelZoo's result line (fractions), which scripts written for it read.
    modelzoo = {"Loss": result["loss"], "Top1-Acc": round(result["top1"] / 100, 6),
                "Top5-Acc": round(result["top5"] / 100, 6)}
    print(f"=> eval results:{modelzoo}")
    if "results_file" in result:
        print(f"results written to {result['results_file']}")
    return result


if __name__ == "__main__":
    run_cli(main)
