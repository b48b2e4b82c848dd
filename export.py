"""Export a trained (or converted) model for inference.

    python export.py --config configs/vig_ti_224_gelu.yaml --pretrained vig_ti.ckpt --file_format MINDIR \
        [--file_name vig_ti] [--batch_size 1] [--image_size 224] [--use_ema true|false]

MINDIR reloads with mindspore.nn.GraphCell(mindspore.load(path)); AIR needs an Ascend host;
ONNX runs in onnxruntime. The batch size is 1 unless --batch_size is given.
"""
from src.app.cli import run_cli


def main(argv=None) -> str:
    from src.app.config import load_config
    from src.app.jobs import run_export
    path = run_export(load_config(argv, description=__doc__, entry="export"))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_cli(main)
