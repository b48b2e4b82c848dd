"""Offline inference, step 3: accuracy of the result files.

    python postprocess.py --preprocess_path ./preprocess_Result --result_path ./result_Files

Compares <result_path>/<id>_0.bin (float32 logits) with the labels preprocess.py wrote.
"""
from src.tools.cli import run_cli


def main(argv=None) -> dict:
    from src.config import load_config
    cfg = load_config(argv, description=__doc__, require_arch=False)
    from src.tools.offline import postprocess
    result = postprocess(cfg.preprocess_path, cfg.result_path)
    print(f"top1 {result['top1']:.2f} top5 {result['top5']:.2f} ({result['count']} images)")
    return result


if __name__ == "__main__":
    run_cli(main)
