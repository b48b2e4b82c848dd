"""Run configuration: one schema, a YAML file, and command-line overrides.

``python train.py --config configs/<model>.yaml [--key value ...]``: every key of the schema below
may appear in the YAML file and on the command line (the command line wins). Keys keep the names
and meaning of the MindSpore ModelZoo ViG configuration. An unknown key, in the file or on the
command line, is an error that names it and lists the closest valid keys. Only entry points call
``load_config``; the rest of the project receives plain values.
"""
import argparse
import difflib
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import yaml


class ConfigError(ValueError):
    """A configuration file or override that cannot be used as written."""


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _floats(value: Any) -> Tuple[float, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
    return tuple(float(v) for v in value)


def fraction(value: Any) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError("must be between 0 and 1")
    return number


def positive_int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError("must be a whole number") from None
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _optional(kind: Callable) -> Callable:
    def convert(value: Any):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        return kind(value)
    convert.__name__ = f"optional {kind.__name__}"
    return convert


@dataclass(frozen=True)
class Option:
    default: Any
    kind: Callable
    help: str
    choices: Optional[Tuple] = None


_str, _int, _float = str, int, float
OPTIONS: Dict[str, Option] = {
    # ----- model
    "arch": Option(None, _str, "registered model name, e.g. vig_ti_224_gelu (see src/models)"),
    "num_classes": Option(1000, _int, "number of classes"),
    "image_size": Option(224, _int, "input side in pixels (multiple of 16 for ViG, 32 for Pyramid ViG)"),
    "drop_path_rate": Option(0.0, _float, "stochastic depth rate of the last block (linear from 0)"),
    "drop_rate": Option(0.0, _float, "dropout before the classifier's last layer"),
    "kernel_impl": Option("auto", _str, "auto: CPU formulations on CPU, native kernels elsewhere",
                          ("auto", "native", "cpu")),
    "pretrained": Option(None, _optional(str), "checkpoint to start from (train) or to evaluate/export"),
    "use_ema": Option(False, _bool, "evaluate/export the EMA weights of the checkpoint"),
    "crop_pct": Option(None, _optional(float), "evaluation centre-crop fraction (null: the model's default)"),
    # ----- data
    "data_url": Option("./data/imagenet", _str, "dataset root holding train/ and val/ class folders"),
    "set": Option("ImageNet", _str, "ImageNet: an ImageNet-style folder tree at data_url; digits: "
                                    "scikit-learn's bundled digits, written to data_url on first use",
                  ("ImageNet", "digits")),
    "batch_size": Option(128, _int, "batch size per device"),
    "num_parallel_workers": Option(8, _int, "data-loading worker processes per device"),
    "interpolation": Option("bicubic", _str, "training resize interpolation", ("bicubic", "bilinear", "random")),
    "crop_scale": Option((0.08, 1.0), _floats, "area range of the random resized crop"),
    "hflip": Option(0.5, _float, "horizontal flip probability"),
    "auto_augment": Option("rand-m9-mstd0.5-inc1", _optional(str), "timm RandAugment string (null: off)"),
    "color_jitter": Option(0.4, _float, "colour jitter strength when auto_augment is off"),
    "re_prob": Option(0.25, _float, "random erasing probability"),
    "re_mode": Option("pixel", _str, "random erasing fill", ("pixel", "rand", "const")),
    "re_count": Option(1, _int, "maximum random erasing boxes per image"),
    "mix_up": Option(0.8, _float, "mixup alpha (0: off)"),
    "cutmix": Option(1.0, _float, "cutmix alpha (0: off)"),
    "mixup_prob": Option(1.0, _float, "probability of mixing a batch"),
    "switch_prob": Option(0.5, _float, "probability of cutmix instead of mixup when both are on"),
    "mixup_mode": Option("batch", _str, "mix per batch, pair or element", ("batch", "pair", "elem")),
    "label_smoothing": Option(0.1, _float, "label smoothing"),
    "repeated_aug": Option(3, _int, "repeated augmentation: copies of each image per epoch (0 or 1: off)"),
    "max_bad_image_fraction": Option(0.001, fraction, "unreadable images (damaged, truncated, not images) are skipped "
                                                      "with a warning each; a run stops when more than this share "
                                                      "of a split's images are unreadable"),
    "max_image_pixels": Option(178_956_970, positive_int, "images with more pixels (width x height) are skipped as "
                                                         "unreadable, a guard against decompression bombs (default: "
                                                         "Pillow's limit); raise it for genuine huge images"),
    # ----- optimisation
    "optimizer": Option("adamw", _str, "adamw, or sgd/momentum", ("adamw", "sgd", "momentum")),
    "base_lr": Option(2e-3, _float, "peak learning rate"),
    "lr_batch_size": Option(None, _optional(int), "total batch size base_lr is meant for; when set, base_lr is "
                                                  "scaled by (batch_size x devices) / lr_batch_size"),
    "warmup_lr": Option(1e-6, _float, "learning rate at the start of warm-up"),
    "min_lr": Option(1e-5, _float, "floor of the cosine schedule"),
    "lr_scheduler": Option("cosine_lr", _str, "learning-rate schedule", ("cosine_lr", "constant_lr")),
    "warmup_length": Option(20, _int, "warm-up epochs"),
    "epochs": Option(300, _int, "epochs of the schedule"),
    "cooldown_epochs": Option(10, _int, "epochs at min_lr after the schedule"),
    "weight_decay": Option(0.05, _float, "decoupled weight decay (AdamW) / L2 (SGD); none on 1-D and position "
                                         "parameters"),
    "beta": Option((0.9, 0.999), _floats, "AdamW betas"),
    "eps": Option(1e-8, _float, "AdamW epsilon"),
    "momentum": Option(0.9, _float, "SGD momentum"),
    "amp_level": Option("O2", _str, "mixed precision: O0 fp32, O2 fp16 with fp32 BatchNorm, O3 fp16",
                        ("O0", "O2", "O3")),
    "is_dynamic_loss_scale": Option(True, _bool, "dynamic loss scale (else fixed at loss_scale)"),
    "loss_scale": Option(65536.0, _float, "initial (dynamic) or fixed loss scale"),
    "loss_scale_window": Option(2000, _int, "clean steps before the dynamic scale doubles"),
    "clip_global_norm_value": Option(5.0, _float, "clip gradients to this global norm (0: off)"),
    "ema_decay": Option(0.99996, _float, "EMA of the weights (0: off)"),
    "seed": Option(0, _int, "random seed"),
    # ----- run
    "train_url": Option("./outputs", _str, "output folder: checkpoints, logs, merged config, curves"),
    "resume": Option(None, _optional(str), "checkpoint to continue from, or 'auto' for the newest in train_url"),
    "save_every": Option(1, _int, "save a checkpoint every N epochs"),
    "keep_last": Option(5, _int, "periodic checkpoints to keep (best.ckpt and last.ckpt are kept too)"),
    "eval_every": Option(1, _int, "validate every N epochs"),
    "log_every": Option(20, _int, "log every N steps"),
    "device_target": Option("CPU", _str, "device", ("CPU", "GPU", "Ascend")),
    "device_id": Option(0, _int, "device id (single-device runs; launchers set DEVICE_ID when distributed)"),
    "distribute": Option(False, _bool, "data-parallel run launched by msrun or an HCCL rank table"),
    "graph_mode": Option(True, _bool, "GRAPH_MODE (else PYNATIVE_MODE)"),
    # ----- export and offline inference
    "file_format": Option("MINDIR", _str, "export format", ("MINDIR", "AIR", "ONNX")),
    "file_name": Option(None, _optional(str), "export file name without extension (default: the arch)"),
    "preprocess_path": Option("./preprocess_Result", _str, "offline inference inputs: one .bin per validation "
                                                            "image and labels.json"),
    "result_path": Option("./result_Files", _str, "offline inference outputs: one <id>_0.bin of logits per input"),
}


class Config(dict):
    """The merged configuration; keys are also attributes (``cfg.base_lr``). Besides the schema keys
    it records ``config`` (the YAML path) and ``command_line_keys`` (what the command line set)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _unknown(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(OPTIONS), n=4, cutoff=0.6)
    hint = f" Close valid keys: {', '.join(close)}." if close else " Run with --help to list the valid keys."
    return ConfigError(f"unknown config key {key!r} {where}.{hint}")


def _convert(key: str, value: Any, where: str) -> Any:
    option = OPTIONS[key]
    try:
        converted = option.kind(value)
    except (TypeError, ValueError) as err:
        kind = getattr(option.kind, "__name__", "value")
        raise ConfigError(f"config key {key!r} {where}: cannot use {value!r} as {kind} ({err})") from None
    if option.choices and converted not in option.choices:
        raise ConfigError(f"config key {key!r} {where}: {converted!r} is not one of {list(option.choices)}")
    return converted


def read_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist; pass --config configs/<model>.yaml")
    with open(path, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must be a mapping of keys to values")
    return data


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "--vig_config", dest="config", help="YAML file (configs/<model>.yaml)")
    group = parser.add_argument_group("config keys (override the YAML file)")
    for key, option in OPTIONS.items():
        choices = f" {{{', '.join(map(str, option.choices))}}}" if option.choices else ""
        group.add_argument(f"--{key}", dest=key, default=argparse.SUPPRESS, metavar="V",
                           help=f"{option.help}{choices} (default: {option.default})")
    return parser


def load_config(argv: Optional[List[str]] = None, description: str = "", require_arch: bool = True) -> Config:
    """Schema defaults <- YAML file (--config) <- command-line overrides, converted and checked."""
    parser = build_parser(description)
    args, rest = parser.parse_known_args(argv)
    for token in rest:
        if token.startswith("--"):
            raise _unknown(token[2:].split("=", 1)[0], "on the command line")
        raise ConfigError(f"unexpected command-line argument {token!r}; use --key value")
    values = {key: option.default for key, option in OPTIONS.items()}
    cli = {k: v for k, v in vars(args).items() if k != "config"}
    if args.config:
        for key, value in read_yaml(args.config).items():
            if key not in OPTIONS:
                raise _unknown(key, f"in {args.config}")
            values[key] = _convert(key, value, f"in {args.config}")
    for key, value in cli.items():
        values[key] = _convert(key, value, "on the command line")
    if require_arch and not values["arch"]:
        raise ConfigError("no model given: pass --config configs/<model>.yaml or --arch <name>")
    cfg = Config(values)
    cfg["config"] = args.config
    cfg["command_line_keys"] = sorted(cli)
    return cfg


def save_config(cfg: Config, path: str) -> None:
    """Write the merged configuration as YAML (lists and tuples as YAML lists)."""
    plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if k in OPTIONS}
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"# merged configuration: defaults <- {cfg.get('config') or 'no file'} <- command line\n")
        yaml.safe_dump(plain, handle, sort_keys=False)
