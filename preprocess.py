"""Offline inference, step 1: the validation images as model inputs on disk.

    python preprocess.py --config configs/vig_ti_224_gelu.yaml --data_url /path/to/imagenet \
        --preprocess_path ./preprocess_Result

Each image of <data_url>/val goes through the model's evaluation transform (bicubic resize to
image_size / crop_pct, centre crop, the model's mean/std) into <id>.bin (float32, 1x3xSxS), with
labels.json mapping ids to labels and files.
"""
from src.app.cli import run_cli
from src.app.config import ConfigError, load_config


# The ModelZoo's preprocess.py flag: the one dataset it knew, an ImageNet-style tree (set ImageNet here).
DATASET_NAME = (("--dataset_name",), {"choices": ["imagenet2012"], "default": None,
                                      "help": "the ModelZoo's flag: imagenet2012 reads an ImageNet-style tree at "
                                              "--data_url (alias --data_path), as set ImageNet does"})


def main(argv=None) -> dict:
    cfg = load_config(argv, description=__doc__, entry="preprocess", arguments=[DATASET_NAME])
    if cfg.arguments.dataset_name and cfg.set != "ImageNet":
        raise ConfigError(f"--dataset_name {cfg.arguments.dataset_name} reads an ImageNet-style tree, but set is "
                          f"{cfg.set!r}: drop one of them")
    from src.app.jobs import run_preprocess  # MindSpore and the models load here, once the command line is good
    counts = run_preprocess(cfg)
    verb = "reused" if counts["reused"] else "wrote"
    print(f"{verb} {counts['images']} inputs of {counts['classes']} classes in {cfg.preprocess_path}")
    return counts


if __name__ == "__main__":
    run_cli(main)
