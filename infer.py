"""Offline inference, step 2 on any machine: run an exported model over the preprocessed inputs.

    python infer.py --config configs/vig_ti_224_gelu.yaml --file_name vig_ti --file_format MINDIR \
        --preprocess_path ./preprocess_Result --result_path ./result_Files

Reads <file_name>.mindir with MindSpore or <file_name>.onnx with onnxruntime and writes the logits of
each input as <result_path>/<id>_0.bin, as the Ascend 310 application (ascend310_infer/) does.
"""
from src.app.cli import run_cli
from src.app.config import load_config


def main(argv=None) -> int:
    cfg = load_config(argv, description=__doc__, entry="infer")
    from src.app.jobs import run_inference  # MindSpore and the models load here, once the command line is good
    count = run_inference(cfg)
    print(f"wrote the logits of {count} inputs to {cfg.result_path}")
    return count


if __name__ == "__main__":
    run_cli(main)
