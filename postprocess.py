"""Offline inference, step 3: accuracy of the result files.

    python postprocess.py --preprocess_path ./preprocess_Result --result_path ./result_Files

Compares <result_path>/<id>_0.bin (float32 logits) with the labels preprocess.py wrote.
"""
from src.app.cli import run_cli
from src.app.config import load_config


def main(argv=None) -> dict:
    cfg = load_config(argv, description=__doc__, entry="postprocess")
    from src.app.jobs import run_postprocess  # MindSpore and the models load here, once the command line is good
    result = run_postprocess(cfg)
    print(f"top1 {result['top1']:.2f} top5 {result['top5']:.2f} ({result['count']} images)")
    return result


if __name__ == "__main__":
    run_cli(main)
