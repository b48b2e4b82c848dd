"""Export a trained (or converted) model for inference.

    python export.py --config configs/vig_ti_224_gelu.yaml --pretrained vig_ti.ckpt --file_format MINDIR \
        [--file_name vig_ti] [--batch_size 1] [--image_size 224] [--use_ema true]

MINDIR reloads with mindspore.nn.GraphCell(mindspore.load(path)); AIR needs an Ascend host;
ONNX runs in onnxruntime. The batch size is 1 unless --batch_size is given.
"""
from src.tools.cli import run_cli


def main(argv=None) -> str:
    from src.config import load_config
    cfg = load_config(argv, description=__doc__)
    from src.tools.export import run_export
    path = run_export(cfg)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_cli(main)
