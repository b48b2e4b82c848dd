"""Evaluate a checkpoint (ours, or a converted official one) on the validation split.

    python eval.py --config configs/vig_ti_224_gelu.yaml --data_url /path/to/imagenet \
        --pretrained vig_ti.ckpt [--use_ema true|false]

Prints top-1, top-5 and the mean cross-entropy, computed with the evaluation transform (bicubic resize to
image_size / crop_pct, centre crop, mean/std: each from the command line, else the config file, else the
checkpoint's record, else the ModelZoo's value with a config file or the model's default without one), and
the MindSpore ModelZoo's `=> eval results:{...}` line. With --train_url on the command line (as ModelArts passes
it) the results are also written there as JSON.
"""
from src.app.cli import run_cli
from src.app.config import load_config

# Not the config key train_url (a training run's folder): ModelArts passes every job its output location so.
ARGUMENTS = [
    (("--train_url",), dict(dest="results_to", metavar="DIR",
                            help="also write the results as JSON to this folder (ModelArts passes the job's output "
                                 "location so); the config file's train_url is not read")),
]


def main(argv=None) -> dict:
    cfg = load_config(argv, description=__doc__, entry="eval", arguments=ARGUMENTS)
    from src.app.jobs import run_evaluation  # MindSpore and the models load here, once the command line is good
    result = run_evaluation(cfg, cfg.arguments.results_to)
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
