"""Train a Vision GNN model.

    python train.py --config configs/vig_ti_224_gelu.yaml --data_url /path/to/imagenet [--key value ...]

Every key of the YAML file can be overridden on the command line (see --help); the merged
configuration, logs, checkpoints and training curves are written to --train_url. Ctrl-C (SIGINT)
or SIGTERM stops the run after the current step with a checkpoint that --resume auto continues.
"""


from src.app.cli import run_cli
from src.app.config import load_config


def main(argv=None, stop=None) -> dict:
    cfg = load_config(argv, description=__doc__, entry="train")
    from src.app.jobs import run_training  # MindSpore and the models load here, once the command line is good
    return run_training(cfg, stop)


if __name__ == "__main__":
    from src.app.signals import StopSignals
    stop_signals = StopSignals.install()  # before MindSpore starts its threads (see src/app/signals.py)
    run_cli(lambda: main(stop=stop_signals))
