"""Export a trained (or converted) model for inference.

    python export.py --config configs/vig_ti_224_gelu.yaml --pretrained vig_ti.ckpt --file_format MINDIR \
        [--file_name vig_ti] [--batch_size 1] [--image_size 224] [--use_ema true|false]

MINDIR reloads with mindspore.nn.GraphCell(mindspore.load(path)); AIR needs an Ascend host;
ONNX runs in onnxruntime. The batch size is 1 unless --batch_size is given (the config file's batch_size,
a training setting, is not read).
"""
from src.app.cli import run_cli
from src.app.config import int_in, load_config

ARGUMENTS = [
    (("--batch_size",), dict(type=int_in(1, 4096), default=1,
                             help="images per call of the exported graph, 1 to 4096 (default: 1, as offline inference "
                                  "runs; the config file's batch_size, a training setting, is not read)")),
]


def main(argv=None) -> str:
    cfg = load_config(argv, description=__doc__, entry="export", arguments=ARGUMENTS)
    from src.app.jobs import run_export  # MindSpore and the models load here, once the command line is good
    path = run_export(cfg, cfg.arguments.batch_size)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_cli(main)
