"""Train a Vision GNN model.

    python train.py --config configs/vig_ti_224_gelu.yaml --data_url /path/to/imagenet [--key value ...]

Every key of the YAML file can be overridden on the command line (see --help); the merged
configuration, logs, checkpoints and training curves are written to --train_url.
"""
from src.app.cli import run_cli


def main(argv=None) -> dict:
    from src.app.config import load_config
    from src.app.jobs import run_training
    return run_training(load_config(argv, description=__doc__, entry="train"))


if __name__ == "__main__":
    run_cli(main)
