"""Offline inference, step 2 on any machine: run an exported model over the preprocessed inputs.

    python infer.py --config configs/vig_ti_224_gelu.yaml --file_name vig_ti --file_format MINDIR \
        --preprocess_path ./preprocess_Result --result_path ./result_Files

Reads <file_name>.mindir with MindSpore or <file_name>.onnx with onnxruntime and writes the logits of
each input as <result_path>/<id>_0.bin, as the Ascend 310 application (ascend310_infer/) does.
"""
from src.tools.cli import run_cli


def main(argv=None) -> int:
    from src.config import load_config
    cfg = load_config(argv, description=__doc__)
    from src.tools.export import EXTENSIONS
    from src.tools.offline import run_inference
    if cfg.file_format not in ("MINDIR", "ONNX"):
        raise ValueError("infer.py runs MINDIR or ONNX exports; pass --file_format MINDIR or ONNX")
    if cfg.file_format == "MINDIR":
        from src.tools.device import init_device
        init_device(cfg.device_target, cfg.device_id, graph_mode=True)
    count = run_inference((cfg.file_name or cfg.arch) + EXTENSIONS[cfg.file_format], cfg.preprocess_path,
                          cfg.result_path)
    print(f"wrote the logits of {count} inputs to {cfg.result_path}")
    return count


if __name__ == "__main__":
    run_cli(main)
