"""Run configuration: one schema, a YAML file, and command-line overrides.

``python train.py --config configs/<model>.yaml [--key value ...]``: a YAML file may hold any key of
the schema below (one file serves train.py, eval.py, export.py, ...); the command line of each entry
point accepts only the keys that entry point reads (``ENTRY_KEYS``), and its ``--help`` lists only
those. The command line wins over the file. Keys keep the names and meaning of the MindSpore ModelZoo
ViG configuration. An unknown key, or a value out of its range, is an error that names it; unknown
keys list the closest valid ones. Only entry points call ``load_config``; the rest of the project
receives plain values.
"""
import argparse
import difflib
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml

from ..data.mixup import MIX_MODES
from ..data.random_erasing import ERASE_MODES
from ..data.transforms import DEFAULT_MAX_IMAGE_PIXELS, TRAIN_INTERPOLATIONS
from ..engine.optim import OPTIMIZERS
from ..engine.schedule import SCHEDULERS
from ..engine.train_step import AMP_LEVELS
from ..deploy.export import EXTENSIONS
from ..models import KERNEL_IMPLS
from ..models.layers import GRAPH_CONVS
from .device import DEVICE_TARGETS


Argument = Tuple[Tuple[str, ...], Dict[str, Any]]  # an entry point's own argument: (flags, argparse options)


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


def _int(value: Any) -> int:
    """An integer written as one: 8, "8", 8.0; never 8.9 truncated to 8."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value)
    return int(str(value).strip())


_int.__name__ = "int"


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"expected a finite number, got {value!r}")
    return out


_float.__name__ = "float"


def _floats(value: Any) -> Tuple[float, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
    return tuple(_float(v) for v in value)


_floats.__name__ = "list of floats"


def _optional(kind: Callable) -> Callable:
    def convert(value: Any):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        return kind(value)
    convert.__name__ = f"optional {kind.__name__}"
    return convert


def at_least(low) -> Callable[[Any], Optional[str]]:
    return lambda v: None if v is None or v >= low else f"must be >= {low}"


def in_range(low, high, high_open: bool = False, low_open: bool = False) -> Callable[[Any], Optional[str]]:
    def check(v):
        if v is None:
            return None
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        return None if ok else (f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")
    return check


def one_of(names) -> Callable[[Any], Optional[str]]:
    """A choice that may also be left unset (None)."""
    return lambda v: None if v is None or v in names else f"is not one of {sorted(names)}"


def each(check: Callable, count: int) -> Callable[[Any], Optional[str]]:
    def run(values):
        if len(values) != count:
            return f"needs {count} values"
        return next((f"{problem} (got {v})" for v in values if (problem := check(v))), None)
    return run


@dataclass(frozen=True)
class Option:
    default: Any
    kind: Callable
    help: str
    choices: Optional[Tuple] = None
    check: Optional[Callable[[Any], Optional[str]]] = None  # returns a problem, or None when the value is fine
    flags: Tuple[str, ...] = ()  # other command-line spellings (the official ones)


_str = str
POSITIVE, NON_NEGATIVE, PROBABILITY = at_least(1), at_least(0), in_range(0.0, 1.0)
OPTIONS: Dict[str, Option] = {
    # ----- model
    "arch": Option(None, _str, "registered model name, e.g. vig_ti_224_gelu (see src/models)"),
    "num_classes": Option(1000, _int, "number of classes", check=POSITIVE),
    "image_size": Option(224, _int, "input side in pixels (multiple of 16 for ViG, 32 for Pyramid ViG)",
                         check=at_least(16)),
    "drop_path_rate": Option(0.0, _float, "stochastic depth rate of the last block (linear from 0)",
                             check=in_range(0.0, 1.0, high_open=True)),
    "drop_rate": Option(0.0, _float, "dropout before the classifier's last layer",
                        check=in_range(0.0, 1.0, high_open=True)),
    "frozen_stages": Option(0, _int, "fine-tuning: freeze the stem, pos_embed and the first N stages (pyramid) or "
                                     "blocks (isotropic): no updates, BatchNorm statistics kept", check=NON_NEGATIVE),
    "norm_eval": Option(False, _bool, "fine-tuning: every backbone BatchNorm keeps its running statistics"),
    "kernel_impl": Option("auto", _str, "auto: CPU formulations on CPU, native kernels elsewhere",
                          ("auto",) + KERNEL_IMPLS),
    "pretrained": Option(None, _optional(str), "checkpoint to start from (train) or to evaluate/export"),
    "use_ema": Option(None, _optional(_bool), "evaluate/export the EMA weights (true) or the model weights "
                                              "(false); null: the weights the checkpoint records as its best"),
    "crop_pct": Option(None, _optional(_float), "evaluation centre-crop fraction (null: the model's default)",
                       check=in_range(0.0, 1.0, low_open=True)),
    # ----- graph options (official names; null: the model's own setting)
    "conv": Option(None, _optional(str), "graph convolution: mr (max-relative), edge, sage or gin (null: mr)",
                   check=one_of(GRAPH_CONVS)),
    "k": Option(None, _optional(_int), "kNN models: base neighbour count; isotropic models grow it to 2k over the "
                                       "blocks, pyramid models keep it (null: 9)", check=POSITIVE),
    "use_stochastic": Option(None, _optional(_bool), "kNN models: stochastic dilation in training (null: off)"),
    "epsilon": Option(None, _optional(_float), "kNN models: with use_stochastic, the probability of random instead "
                                               "of dilated neighbours per forward (null: 0.2)", check=PROBABILITY),
    "start_thresh": Option(None, _optional(_float), "SViG: edge probability threshold of the first block (null: "
                                                    "0.89)", flags=("--start-thresh",)),
    "dec": Option(None, _optional(_float), "SViG: decrement of the edge probability threshold per block (null: "
                                           "0.03)"),
    # ----- data
    "data_url": Option("./data/imagenet", _str, "dataset root holding train/ and val/ class folders"),
    "set": Option("ImageNet", _str, "ImageNet: an ImageNet-style folder tree at data_url; digits: "
                                    "scikit-learn's bundled digits, written to data_url on first use",
                  ("ImageNet", "digits")),
    "batch_size": Option(128, _int, "batch size per device", check=POSITIVE),
    "num_parallel_workers": Option(8, _int, "data-loading worker processes per device", check=POSITIVE),
    "interpolation": Option("bicubic", _str, "training resize interpolation", TRAIN_INTERPOLATIONS),
    "crop_scale": Option((0.08, 1.0), _floats, "area range of the random resized crop",
                         check=each(in_range(0.0, 1.0, low_open=True), 2)),
    "hflip": Option(0.5, _float, "horizontal flip probability", check=PROBABILITY),
    "auto_augment": Option("rand-m9-mstd0.5-inc1", _optional(str), "timm RandAugment string (null: off)"),
    "color_jitter": Option(0.4, _float, "colour jitter strength when auto_augment is off", check=NON_NEGATIVE),
    "re_prob": Option(0.25, _float, "random erasing probability", check=PROBABILITY),
    "re_mode": Option("pixel", _str, "random erasing fill", ERASE_MODES),
    "re_count": Option(1, _int, "maximum random erasing boxes per image", check=POSITIVE),
    "mix_up": Option(0.8, _float, "mixup alpha (0: off)", check=NON_NEGATIVE),
    "cutmix": Option(1.0, _float, "cutmix alpha (0: off)", check=NON_NEGATIVE),
    "mixup_prob": Option(1.0, _float, "probability of mixing a batch", check=PROBABILITY),
    "switch_prob": Option(0.5, _float, "probability of cutmix instead of mixup when both are on", check=PROBABILITY),
    "mixup_mode": Option("batch", _str, "mix per batch, pair or element", MIX_MODES),
    "label_smoothing": Option(0.1, _float, "label smoothing", check=in_range(0.0, 1.0, high_open=True)),
    "repeated_aug": Option(3, _int, "repeated augmentation: copies of each image per epoch (0 or 1: off)",
                           check=NON_NEGATIVE),
    "max_bad_image_fraction": Option(0.001, _float, "unreadable images (damaged, truncated, not images) are skipped "
                                                    "with a warning each; a run stops when more than this share of "
                                                    "a split's images are unreadable", check=PROBABILITY),
    "max_image_pixels": Option(DEFAULT_MAX_IMAGE_PIXELS, _int, "images with more pixels (width x height) are "
                                                               "skipped as unreadable, a guard against "
                                                               "decompression bombs (default: Pillow's limit); raise "
                                                               "it for genuine huge images", check=POSITIVE),
    # ----- optimisation
    "optimizer": Option("adamw", _str, "adamw, or sgd/momentum", OPTIMIZERS),
    "base_lr": Option(2e-3, _float, "peak learning rate", check=in_range(0.0, math.inf, low_open=True)),
    "lr_batch_size": Option(None, _optional(_int), "total batch size base_lr is meant for; when set, base_lr is "
                                                   "scaled by (batch_size x devices) / lr_batch_size",
                            check=POSITIVE),
    "warmup_lr": Option(1e-6, _float, "learning rate at the start of warm-up", check=NON_NEGATIVE),
    "min_lr": Option(1e-5, _float, "floor of the cosine schedule", check=NON_NEGATIVE),
    "lr_scheduler": Option("cosine_lr", _str, "learning-rate schedule", SCHEDULERS),
    "warmup_length": Option(20, _int, "warm-up epochs", check=NON_NEGATIVE),
    "epochs": Option(300, _int, "epochs of the schedule", check=POSITIVE),
    "cooldown_epochs": Option(10, _int, "epochs at min_lr after the schedule", check=NON_NEGATIVE),
    "weight_decay": Option(0.05, _float, "decoupled weight decay (AdamW) / L2 (SGD); none on 1-D and position "
                                         "parameters", check=NON_NEGATIVE),
    "beta": Option((0.9, 0.999), _floats, "AdamW betas", check=each(in_range(0.0, 1.0, high_open=True), 2)),
    "eps": Option(1e-8, _float, "AdamW epsilon", check=in_range(0.0, math.inf, low_open=True)),
    "momentum": Option(0.9, _float, "SGD momentum", check=in_range(0.0, 1.0, high_open=True)),
    "amp_level": Option("O2", _str, "training precision: O0 fp32, O2 fp16 with fp32 BatchNorm, O3 fp16", AMP_LEVELS),
    "is_dynamic_loss_scale": Option(True, _bool, "dynamic loss scale (else fixed at loss_scale)"),
    "loss_scale": Option(65536.0, _float, "initial (dynamic) or fixed loss scale", check=at_least(1.0)),
    "loss_scale_window": Option(2000, _int, "clean steps before the dynamic scale doubles", check=POSITIVE),
    "clip_global_norm_value": Option(5.0, _float, "clip gradients to this global norm (0: off)", check=NON_NEGATIVE),
    "ema_decay": Option(0.99996, _float, "EMA of the weights (0: off)", check=in_range(0.0, 1.0, high_open=True)),
    "max_overflow_fraction": Option(0.5, _float, "stop the run when more than this share of the last overflow_window "
                                                 "steps were skipped for non-finite loss or gradients (1: never)",
                                    check=PROBABILITY),
    "overflow_window": Option(100, _int, "steps over which max_overflow_fraction is counted", check=POSITIVE),
    "seed": Option(0, _int, "random seed", check=NON_NEGATIVE),
    # ----- run
    "train_url": Option("./outputs", _str, "output folder: checkpoints, logs, merged config, curves"),
    "resume": Option(None, _optional(str), "checkpoint to continue from, or 'auto' for the newest in train_url"),
    "save_every": Option(1, _int, "save a checkpoint every N epochs", check=POSITIVE),
    "keep_last": Option(5, _int, "periodic checkpoints to keep (best.ckpt and last.ckpt are kept too)",
                        check=POSITIVE),
    "eval_every": Option(1, _int, "validate every N epochs", check=POSITIVE),
    "log_every": Option(20, _int, "log every N steps", check=POSITIVE),
    "device_target": Option("CPU", _str, "device", DEVICE_TARGETS),
    "device_id": Option(0, _int, "device id (single-device runs; launchers set DEVICE_ID when distributed)",
                        check=NON_NEGATIVE),
    "distribute": Option(False, _bool, "data-parallel run launched by msrun or an HCCL rank table"),
    "graph_mode": Option(True, _bool, "GRAPH_MODE (else PYNATIVE_MODE)"),
    # ----- evaluation, export and offline inference
    "eval_amp_level": Option("O0", _str, "precision of validation, eval.py and export: O0 fp32 (default), O2, O3",
                             AMP_LEVELS),
    "file_format": Option("MINDIR", _str, "export format", tuple(EXTENSIONS)),
    "file_name": Option(None, _optional(str), "export file name without extension (default: the arch)"),
    "preprocess_path": Option("./preprocess_Result", _str, "offline inference inputs: one .bin per validation "
                                                            "image and labels.json"),
    "result_path": Option("./result_Files", _str, "offline inference outputs: one <id>_0.bin of logits per input"),
}

_MODEL = ("arch", "num_classes", "image_size", "kernel_impl", "pretrained", "use_ema", "crop_pct", "conv", "k",
          "use_stochastic", "epsilon", "start_thresh", "dec")
_IMAGES = ("max_bad_image_fraction", "max_image_pixels")
_DATA = ("data_url", "set", "batch_size", "num_parallel_workers") + _IMAGES
_DEVICE = ("device_target", "device_id", "graph_mode")
_TRAINING = ("drop_path_rate", "drop_rate", "frozen_stages", "norm_eval", "interpolation", "crop_scale", "hflip",
             "auto_augment", "color_jitter",
             "re_prob", "re_mode", "re_count", "mix_up", "cutmix", "mixup_prob", "switch_prob", "mixup_mode",
             "label_smoothing", "repeated_aug", "optimizer", "base_lr", "lr_batch_size", "warmup_lr", "min_lr",
             "lr_scheduler", "warmup_length", "epochs", "cooldown_epochs", "weight_decay", "beta", "eps", "momentum",
             "amp_level", "is_dynamic_loss_scale", "loss_scale", "loss_scale_window", "clip_global_norm_value",
             "ema_decay", "max_overflow_fraction", "overflow_window", "seed", "train_url", "resume", "save_every",
             "keep_last", "eval_every", "log_every", "distribute")
# The keys each entry point reads (and so accepts on its command line).
ENTRY_KEYS: Dict[str, Tuple[str, ...]] = {
    "train": _MODEL + _DATA + _DEVICE + _TRAINING + ("eval_amp_level",),
    "eval": _MODEL + _DATA + _DEVICE + ("distribute", "eval_amp_level"),
    "export": _MODEL + _DEVICE + ("batch_size", "eval_amp_level", "file_format", "file_name"),
    "preprocess": ("arch", "num_classes", "image_size", "crop_pct", "data_url", "set", "seed", "preprocess_path")
                  + _IMAGES,
    "infer": ("arch", "device_target", "device_id", "file_format", "file_name", "preprocess_path", "result_path"),
    "postprocess": ("preprocess_path", "result_path"),
    "predict": _MODEL + _DEVICE + _IMAGES[1:] + ("batch_size", "eval_amp_level"),
    "visualize": _MODEL + _DEVICE + _IMAGES[1:],
}
assert all(set(keys) <= set(OPTIONS) for keys in ENTRY_KEYS.values())


class Config(dict):
    """The merged configuration; keys are also attributes (``cfg.base_lr``). Besides the schema keys
    it records ``config`` (the YAML path) and ``command_line_keys`` (what the command line set)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _unknown(key: str, where: str, valid) -> ConfigError:
    close = difflib.get_close_matches(key, list(valid), n=4, cutoff=0.6)
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
    problem = option.check(converted) if option.check else None
    if problem:
        raise ConfigError(f"config key {key!r} {where}: {value!r} {problem}")
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


def build_parser(description: str, entry: str = "train", arguments: Sequence[Argument] = ()) -> argparse.ArgumentParser:
    """The command line of ``entry``: --config, the entry point's own ``arguments`` (not config keys: inputs
    such as image files) and the keys that entry point reads."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "--vig_config", dest="config", help="YAML file (configs/<model>.yaml)")
    if arguments:
        own = parser.add_argument_group(f"{entry}.py arguments")
        for flags, options in arguments:
            own.add_argument(*flags, **options)
    group = parser.add_argument_group("config keys (override the YAML file)")
    for key in ENTRY_KEYS[entry]:
        option = OPTIONS[key]
        choices = f" {{{', '.join(map(str, option.choices))}}}" if option.choices else ""
        group.add_argument(f"--{key}", *option.flags, dest=key, default=argparse.SUPPRESS, metavar="V",
                           help=f"{option.help}{choices} (default: {option.default})")
    return parser


def load_config(argv: Optional[List[str]] = None, description: str = "", entry: str = "train",
                arguments: Sequence[Argument] = ()) -> Config:
    """Schema defaults <- YAML file (--config) <- command-line overrides of ``entry``'s keys, converted
    and checked. The YAML file may hold any schema key; the command line only ``ENTRY_KEYS[entry]``.
    ``arguments`` ((flags, argparse options) pairs) are the entry point's own; their values are in the
    result under their argparse names."""
    if entry not in ENTRY_KEYS:
        raise ValueError(f"unknown entry point {entry!r}; one of {sorted(ENTRY_KEYS)}")
    parser = build_parser(description, entry, arguments)
    own = {action.dest for action in parser._actions if action.dest not in OPTIONS} - {"config", "help"}
    args, rest = parser.parse_known_args(argv)
    for token in rest:
        if token.startswith("--"):
            key = token[2:].split("=", 1)[0]
            if key in OPTIONS:
                raise ConfigError(f"config key {key!r} is not read by {entry}.py; drop it from the command line "
                                  f"(--help lists this entry point's keys)")
            raise _unknown(key, "on the command line", ENTRY_KEYS[entry])
        raise ConfigError(f"unexpected command-line argument {token!r}; use --key value")
    values = {key: option.default for key, option in OPTIONS.items()}
    cli = {k: v for k, v in vars(args).items() if k != "config" and k not in own}
    if args.config:
        for key, value in read_yaml(args.config).items():
            if key not in OPTIONS:
                raise _unknown(key, f"in {args.config}", OPTIONS)
            values[key] = _convert(key, value, f"in {args.config}")
    for key, value in cli.items():
        values[key] = _convert(key, value, "on the command line")
    if "arch" in ENTRY_KEYS[entry] and not values["arch"]:
        raise ConfigError("no model given: pass --config configs/<model>.yaml or --arch <name>")
    cfg = Config(values)
    cfg["config"] = args.config
    cfg["command_line_keys"] = sorted(cli)
    cfg.update({name: getattr(args, name) for name in own})
    return cfg


def save_config(cfg: Config, path: str) -> None:
    """Write the merged configuration as YAML (lists and tuples as YAML lists)."""
    plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if k in OPTIONS}
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"# merged configuration: defaults <- {cfg.get('config') or 'no file'} <- command line\n")
        yaml.safe_dump(plain, handle, sort_keys=False)
