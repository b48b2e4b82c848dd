"""Train a Vision GNN model.

    python train.py --config configs/vig_ti_224_gelu.yaml --data_url /path/to/imagenet [--key value ...]

Every key of the YAML file can be overridden on the command line (see --help); the merged
configuration, logs, checkpoints and training curves are written to --train_url.
"""
from src.tools.cli import run_cli


def main(argv=None) -> None:
    from src.config import load_config
    cfg = load_config(argv, description=__doc__)
    from src.trainers.trainer import train
    train(cfg)


if __name__ == "__main__":
    run_cli(main)
