"""Run configuration: one schema, a YAML file (with its bases), and command-line overrides.

``python train.py --config configs/<model>.yaml [--key value ...]``: a YAML file may hold any key of
the schema below (one file serves train.py, eval.py, export.py, ...); the command line of each entry
point accepts only the keys that entry point reads (``ENTRY_KEYS``), and its ``--help`` lists only
those. The command line wins over the file. A file may name bases (``_base_: path`` or a list of paths,
relative to the file, as mmpretrain's configs do): their keys first, the file's own over them; bases may
have bases. Keys and flags keep the names and meaning of the MindSpore ModelZoo ViG (its ``src/args.py``
flags, aliases included, and its YAML keys), and a key absent from the file and its bases takes the
ModelZoo's value (``Option.origin`` says where it comes from), so a ModelZoo YAML trains the ModelZoo
recipe; the project's own configs write every recipe value out (``configs/_base_/``). An unknown key, or
a value out of its range, is an error that names it and its file; unknown keys list the closest valid
ones. Only entry points call ``load_config``; the rest of the project receives plain values.

This module imports no MindSpore and no model (the choices come from ``src/choices``, the data keys'
defaults from ``src/data/params.py``): every entry point parses its command line first, in well under a
second, and imports the job only once the configuration is good.
"""
import argparse
import difflib
import math
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import yaml

from ..choices import (AMP_LEVELS, COSINE_STYLES, DEVICE_TARGETS, ERASE_MODES, EXTENSIONS, GRAPH_CONVS,
                       INTERPOLATIONS, KERNEL_IMPLS, MIX_MODES, MODES, OPTIMIZERS, SCHEDULERS, SETS)
from ..data.params import DatasetParams, EvalTransformParams, MixParams, TrainTransformParams


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


def _mode(value: Any) -> int:
    """MindSpore's execution-mode constant (or its name), as the ModelZoo's --graph_mode."""
    text = str(value).strip().upper()
    if isinstance(value, bool) or text in ("TRUE", "FALSE", "YES", "NO", "ON", "OFF"):
        raise ValueError(f"graph_mode is MindSpore's mode constant, "
                         f"{' or '.join(f'{v} = {k}' for k, v in MODES.items())}; a boolean is ambiguous")
    return MODES[text] if text in MODES else _int(value)


_mode.__name__ = " or ".join(f"{v} ({k})" for k, v in MODES.items())


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
    flags: Tuple[str, ...] = ()  # other command-line spellings (the official or ModelZoo ones)
    origin: str = "project default"  # where the default comes from (the ModelZoo file that sets it, or this project)


# Origins of defaults: the ModelZoo ViG's files (research/cv/ViG in mindspore-ai/models).
MZ_YAML = "ModelZoo src/configs/vig_s_patch16_224.yaml"
MZ_ARGS = "ModelZoo src/args.py"
MZ_DATA = "ModelZoo src/data/imagenet.py"
MZ_OPTIM = "ModelZoo src/tools/optimizer.py, schedulers.py"
MZ_STEP = "ModelZoo src/tools/get_misc.py"
MZ_NONE = "ModelZoo: no such step (off)"
# Its train.py saved a checkpoint every epoch and kept save_every (default 2) of them.
MZ_TRAIN = "ModelZoo train.py (a checkpoint every epoch, the newest 2 kept)"
# Defaults of the data keys: the data package's parameter objects (the ModelZoo recipe's values).
_EVAL, _TRAIN, _MIX, _READ = EvalTransformParams(), TrainTransformParams(), MixParams(), DatasetParams()


_str = str
POSITIVE, NON_NEGATIVE, PROBABILITY = at_least(1), at_least(0), in_range(0.0, 1.0)
MAX_EPOCHS = 10_000
OPTIONS: Dict[str, Option] = {
    # ----- model
    "arch": Option(None, _str, "registered model name, e.g. vig_ti_224_gelu (see src/models)", flags=("-a",)),
    "num_classes": Option(1000, _int, "number of classes (at most 100000)", check=in_range(1, 100_000),
                          origin=MZ_YAML),
    "in_channel": Option(3, _int, "input channels of the model (the image pipeline decodes RGB: 3)", check=POSITIVE,
                         origin=MZ_ARGS),
    "mlp_ratio": Option(4.0, _float, "FFN hidden width / channels (4 in every ViG architecture)", origin=MZ_ARGS),
    "image_size": Option(_EVAL.image_size, _int, "input side in pixels (multiple of 16 for ViG, 32 for Pyramid ViG; "
                                                 "at most 4096)", check=in_range(16, 4096), origin=MZ_YAML),
    "drop_path_rate": Option(0.1, _float, "stochastic depth rate of the last block (linear from 0)",
                             check=in_range(0.0, 1.0, high_open=True), origin=MZ_YAML),
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
    "crop_pct": Option(_EVAL.crop_pct, _optional(_float), "evaluation centre-crop fraction: resize to image_size / "
                       "crop_pct, crop image_size (null: the model's default)",
                       check=in_range(0.0, 1.0, low_open=True), origin=MZ_DATA),
    "mean": Option(_EVAL.mean, _floats, "per-channel mean of the input normalisation (training and evaluation)",
                   check=each(in_range(0.0, 1.0), 3), origin=MZ_DATA),
    "std": Option(_EVAL.std, _floats, "per-channel std of the input normalisation (training and evaluation)",
                  check=each(in_range(0.0, 1.0, low_open=True), 3), origin=MZ_DATA),
    # ----- graph options (official names; null: the model's own setting)
    "conv": Option(None, _optional(str), f"graph convolution, one of {', '.join(GRAPH_CONVS)} (null: mr, "
                                         f"max-relative)", check=one_of(GRAPH_CONVS)),
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
    "data_url": Option("./data/imagenet", _str, "dataset root holding train/ and val/ class folders",
                       flags=("--data_path",)),
    "set": Option("ImageNet", _str, "ImageNet: an ImageNet-style folder tree at data_url; digits: "
                                    "scikit-learn's bundled digits, written to data_url on first use",
                  SETS, origin=MZ_YAML),
    "batch_size": Option(16, _int, "batch size per device (per micro-batch with accumulation_step; at most 4096)",
                         check=in_range(1, 4096), origin=MZ_YAML),
    "num_parallel_workers": Option(_READ.num_parallel_workers, _int, "data-loading worker processes per device (at "
                                                                     "most 256)",
                                   check=in_range(1, 256), origin=MZ_YAML, flags=("-j",)),
    "interpolation": Option(_TRAIN.interpolation, _str, "training resize interpolation", INTERPOLATIONS,
                            origin=MZ_YAML),
    "crop_scale": Option(_TRAIN.crop_scale, _floats, "area range of the random resized crop",
                         check=each(in_range(0.0, 1.0, low_open=True), 2), origin=MZ_DATA),
    "hflip": Option(_TRAIN.hflip, _float, "horizontal flip probability", check=PROBABILITY, origin=MZ_DATA),
    "auto_augment": Option(_TRAIN.auto_augment, _optional(str), "timm RandAugment string (null: off)",
                           origin=MZ_YAML),
    "color_jitter": Option(_TRAIN.color_jitter, _float, "colour jitter strength when auto_augment is off",
                           check=NON_NEGATIVE),
    "re_prob": Option(_TRAIN.re_prob, _float, "random erasing probability", check=PROBABILITY, origin=MZ_YAML),
    "re_mode": Option(_TRAIN.re_mode, _str, "random erasing fill", ERASE_MODES, origin=MZ_YAML),
    "re_count": Option(_TRAIN.re_count, _int, "maximum random erasing boxes per image", check=POSITIVE, origin=MZ_YAML),
    "mix_up": Option(_MIX.mix_up, _float, "mixup alpha (0: off)", check=NON_NEGATIVE, origin=MZ_YAML),
    "cutmix": Option(_MIX.cutmix, _float, "cutmix alpha (0: off)", check=NON_NEGATIVE, origin=MZ_YAML),
    "mixup_prob": Option(_MIX.mixup_prob, _float, "probability of mixing a batch", check=PROBABILITY, origin=MZ_YAML),
    "switch_prob": Option(_MIX.switch_prob, _float, "probability of cutmix instead of mixup when both are on",
                          check=PROBABILITY, origin=MZ_YAML),
    "mixup_mode": Option(_MIX.mixup_mode, _str, "mix per batch, pair or element", MIX_MODES, origin=MZ_YAML),
    "label_smoothing": Option(_MIX.label_smoothing, _float, "label smoothing", check=in_range(0.0, 1.0, high_open=True),
                              origin=MZ_YAML),
    "repeated_aug": Option(_READ.repeated_aug, _int, "repeated augmentation: copies of each image per epoch (0 or 1: "
                                                     "off; at most 16)", check=in_range(0, 16), origin=MZ_NONE),
    "max_bad_image_fraction": Option(_READ.max_bad_image_fraction, _float,
                                     "unreadable images (damaged, truncated, not images) are skipped with a warning "
                                     "each; a run stops when more than this share of a split's images are unreadable",
                                     check=PROBABILITY),
    "max_image_pixels": Option(_READ.max_image_pixels, _int,
                               "images with more pixels (width x height) are skipped as unreadable, a guard against "
                               "decompression bombs (default: Pillow's limit); raise it for genuine huge images",
                               check=POSITIVE),
    # ----- optimisation
    "optimizer": Option("adamw", _str, "adamw, or sgd/momentum", OPTIMIZERS, origin=MZ_YAML),
    "base_lr": Option(2e-3, _float, "peak learning rate (for a total batch of lr_batch_size)",
                      check=in_range(0.0, math.inf, low_open=True), origin=MZ_YAML,
                      flags=("--lr", "--learning_rate")),
    "lr_batch_size": Option(512, _optional(_int), "total batch (batch_size x devices x accumulation_step) the "
                                                  "schedule is written for: base_lr, warmup_lr and min_lr are "
                                                  "scaled by total / lr_batch_size (null: no scaling)",
                            check=POSITIVE, origin=MZ_OPTIM),
    "warmup_lr": Option(7e-8, _float, "learning rate at the start of warm-up", check=NON_NEGATIVE, origin=MZ_YAML),
    "min_lr": Option(6e-6, _float, "floor of the schedule", check=NON_NEGATIVE, origin=MZ_YAML),
    "lr_scheduler": Option("cosine_lr", _str, "learning-rate schedule", SCHEDULERS, origin=MZ_YAML),
    "cosine_style": Option("modelzoo", _str, "cosine_lr formula: modelzoo (cosine from base_lr after warm-up, "
                                             "floored at min_lr) or timm (official: min_lr + cosine over all steps)",
                           COSINE_STYLES, origin=MZ_OPTIM),
    "lr_adjust": Option(30.0, _float, "multistep_lr: epochs per factor lr_gamma",
                        check=in_range(0.0, math.inf, low_open=True), origin=MZ_ARGS),
    "lr_gamma": Option(0.97, _float, "multistep_lr / exp_lr decay factor", check=in_range(0.0, 1.0, low_open=True),
                       origin=MZ_ARGS),
    "warmup_length": Option(20, _int, "warm-up epochs (at most 10000)", check=in_range(0, MAX_EPOCHS), origin=MZ_YAML),
    "epochs": Option(300, _int, "epochs of the schedule (at most 10000)", check=in_range(1, MAX_EPOCHS),
                     origin=MZ_YAML),
    "start_epoch": Option(0, _int, "first epoch of a new run (the schedule starts there; not with resume)",
                          check=NON_NEGATIVE, origin=MZ_ARGS),
    "cooldown_epochs": Option(0, _int, "epochs at min_lr after the schedule (at most 10000)",
                              check=in_range(0, MAX_EPOCHS), origin=MZ_NONE),
    "weight_decay": Option(0.05, _float, "decoupled weight decay (AdamW) / L2 (SGD); none on 1-D and position "
                                         "parameters", check=NON_NEGATIVE, origin=MZ_YAML, flags=("--wd",)),
    "beta": Option((0.9, 0.999), _floats, "AdamW betas", check=each(in_range(0.0, 1.0, high_open=True), 2),
                   origin=MZ_YAML),
    "eps": Option(1e-8, _float, "AdamW epsilon", check=in_range(0.0, math.inf, low_open=True), origin=MZ_ARGS),
    "momentum": Option(0.9, _float, "SGD momentum", check=in_range(0.0, 1.0, high_open=True), origin=MZ_YAML),
    "amp_level": Option("O2", _str, "training precision: O0 fp32, O2 fp16 with fp32 BatchNorm, O3 fp16", AMP_LEVELS,
                        origin=MZ_YAML),
    "keep_bn_fp32": Option(True, _bool, "BatchNorm computes in float32 under amp_level O2/O3 (O2 always does)",
                           origin=MZ_YAML),
    "is_dynamic_loss_scale": Option(True, _bool, "dynamic loss scale (else fixed at loss_scale)", origin=MZ_YAML),
    "loss_scale": Option(None, _optional(_float), "initial (dynamic) or fixed loss scale (null: 2^24 when dynamic, "
                                                  "1024 when fixed, as the ModelZoo)", check=at_least(1.0),
                         origin=MZ_STEP),
    "loss_scale_window": Option(2000, _int, "clean steps before the dynamic scale doubles", check=POSITIVE,
                                origin=MZ_STEP),
    "clip_global_norm_value": Option(5.0, _float, "clip gradients to this global norm (0: off)", check=NON_NEGATIVE,
                                     origin=MZ_YAML),
    "accumulation_step": Option(1, _int, "micro-batches accumulated into one optimizer update (at most 1024)",
                                check=in_range(1, 1024), origin=MZ_ARGS),
    "ema_decay": Option(0.0, _float, "EMA of the weights (0: off)", check=in_range(0.0, 1.0, high_open=True),
                        origin=MZ_NONE),
    "max_overflow_fraction": Option(0.5, _float, "stop the run when more than this share of the last overflow_window "
                                                 "steps were skipped for non-finite loss or gradients (1: never)",
                                    check=PROBABILITY),
    "overflow_window": Option(100, _int, "updates over which max_overflow_fraction is counted (a shorter run: all "
                                         "its updates, once 10 are counted)", check=POSITIVE),
    "seed": Option(0, _int, "random seed (0 to 2^32 - 1)", check=in_range(0, 2 ** 32 - 1), origin=MZ_ARGS),
    # ----- run
    "train_url": Option("./outputs", _str, "output folder of a training run: checkpoints, logs, merged config, "
                                           "curves"),
    "resume": Option(None, _optional(str), "checkpoint to continue from, or 'auto' for the newest in train_url"),
    "save_every": Option(1, _int, "save a checkpoint every N epochs", check=POSITIVE, origin=MZ_TRAIN),
    "keep_last": Option(2, _int, "periodic checkpoints to keep (best.ckpt and last.ckpt are kept too)",
                        check=POSITIVE, origin=MZ_TRAIN, flags=("--keep_checkpoint_max",)),
    "eval_every": Option(1, _int, "validate every N epochs", check=POSITIVE),
    "log_every": Option(20, _int, "log every N steps", check=POSITIVE),
    "device_target": Option("CPU", _str, "device", DEVICE_TARGETS),
    "device_id": Option(0, _int, "device id (DEVICE_ID in the environment wins, as launchers set it)",
                        check=NON_NEGATIVE, origin=MZ_ARGS),
    "device_num": Option(1, _int, "devices of a data-parallel run; > 1 (or DEVICE_NUM > 1 in the environment) "
                                  "joins the launcher's group, as the ModelZoo does", check=POSITIVE, origin=MZ_ARGS),
    "distribute": Option(False, _bool, "data-parallel run launched by msrun or an HCCL rank table"),
    "graph_mode": Option(MODES["GRAPH_MODE"], _mode, f"MindSpore mode: {_mode.__name__}", tuple(MODES.values())),
    "run_modelarts": Option(False, _bool, "ModelArts job: obs:// config/data_url/pretrained/train_url through "
                                          "moxing, local copies under cache_dir", origin=MZ_ARGS,
                            flags=("--enable_modelarts",)),
    "cache_dir": Option("/cache", _str, "ModelArts: local folder for the copies of data, weights and outputs"),
    # ----- evaluation, export and offline inference
    "eval_amp_level": Option("O0", _str, "precision of validation, eval.py and export: O0 fp32 (default), O2, O3",
                             AMP_LEVELS),
    "file_format": Option("MINDIR", _str, "export format", tuple(EXTENSIONS)),
    "file_name": Option(None, _optional(str), "export file name without extension (default: the arch)"),
    "preprocess_path": Option("./preprocess_Result", _str, "offline inference inputs: one .bin per validation "
                              "image and labels.json"),
    "result_path": Option("./result_Files", _str, "offline inference outputs: one <id>_0.bin of logits per input",
                          flags=("--result_dir",)),
}

_MODEL = ("arch", "num_classes", "in_channel", "mlp_ratio", "image_size", "kernel_impl", "pretrained", "use_ema",
          "crop_pct", "mean", "std", "conv", "k", "use_stochastic", "epsilon", "start_thresh", "dec")
_IMAGES = ("max_bad_image_fraction", "max_image_pixels")
_DATA = ("data_url", "set", "batch_size", "num_parallel_workers") + _IMAGES
_DEVICE = ("device_target", "device_id")
_MODELARTS = ("run_modelarts", "cache_dir")
_TRAINING = ("drop_path_rate", "drop_rate", "frozen_stages", "norm_eval", "interpolation", "crop_scale", "hflip",
             "auto_augment", "color_jitter",
             "re_prob", "re_mode", "re_count", "mix_up", "cutmix", "mixup_prob", "switch_prob", "mixup_mode",
             "label_smoothing", "repeated_aug", "optimizer", "base_lr", "lr_batch_size", "warmup_lr", "min_lr",
             "lr_scheduler", "cosine_style", "lr_adjust", "lr_gamma", "warmup_length", "epochs", "start_epoch",
             "cooldown_epochs", "weight_decay", "beta", "eps", "momentum", "amp_level", "keep_bn_fp32",
             "is_dynamic_loss_scale", "loss_scale", "loss_scale_window", "clip_global_norm_value", "accumulation_step",
             "ema_decay", "max_overflow_fraction", "overflow_window", "seed", "train_url", "resume", "save_every",
             "keep_last", "eval_every", "log_every")
# The keys each entry point reads, and so accepts on its command line: tests/test_entry_keys.py runs each entry
# point and fails when it reads a key not listed here, or never reads one that is.
ENTRY_KEYS: Dict[str, Tuple[str, ...]] = {
    "train": _MODEL + _DATA + _DEVICE + ("device_num", "graph_mode") + _MODELARTS + _TRAINING
    + ("distribute", "eval_amp_level"),
    "eval": _MODEL + _DATA + _DEVICE + ("device_num", "graph_mode") + _MODELARTS
    + ("distribute", "eval_amp_level", "keep_bn_fp32", "seed"),
    "export": _MODEL + _DEVICE + ("eval_amp_level", "keep_bn_fp32", "file_format", "file_name"),
    "preprocess": ("arch", "image_size", "crop_pct", "mean", "std", "data_url", "set", "seed",
                   "preprocess_path") + _IMAGES,
    "infer": ("arch", "device_target", "device_id", "file_format", "file_name", "preprocess_path", "result_path"),
    "postprocess": ("preprocess_path", "result_path"),
    "predict": _MODEL + _DEVICE + ("graph_mode",) + _IMAGES[1:] + ("eval_amp_level", "keep_bn_fp32"),
    "visualize": _MODEL + _DEVICE + _IMAGES[1:],  # in PyNative mode, which its hooks need
}
assert all(set(keys) <= set(OPTIONS) for keys in ENTRY_KEYS.values())
# The training recipe: the project's configs/*.yaml write every one of these out, so that no ModelZoo
# default (which a key absent from a file takes) changes what they train.
RECIPE_KEYS = ("num_classes", "image_size", "drop_path_rate", "drop_rate", "crop_pct", "mean", "std", "batch_size",
               "interpolation", "crop_scale", "hflip", "auto_augment", "color_jitter", "re_prob", "re_mode",
               "re_count", "mix_up", "cutmix", "mixup_prob", "switch_prob", "mixup_mode", "label_smoothing",
               "repeated_aug", "optimizer", "base_lr", "lr_batch_size", "warmup_lr", "min_lr", "lr_scheduler",
               "cosine_style", "warmup_length", "epochs", "cooldown_epochs", "weight_decay", "beta", "eps", "momentum",
               "amp_level", "keep_bn_fp32", "is_dynamic_loss_scale", "loss_scale", "loss_scale_window",
               "clip_global_norm_value", "accumulation_step", "ema_decay", "graph_mode")
assert set(RECIPE_KEYS) <= set(ENTRY_KEYS["train"])
# A YAML file may also spell a key as one of its long flags (the ModelZoo's args.py destinations among them).
_FILE_ALIASES = {flag.lstrip("-"): key for key, option in OPTIONS.items() for flag in option.flags
                 if flag.startswith("--")}
# Keys whose value is a path; a scheme:// value (obs://, s3://, ...) needs run_modelarts.
PATH_KEYS = ("data_url", "train_url", "pretrained", "resume")
_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(path: Optional[str]) -> bool:
    """An object-store URL (obs://bucket/...) rather than a local path."""
    return bool(path) and bool(_REMOTE.match(str(path)))


COMMAND_LINE = "command line"


class Config(Mapping):
    """The merged configuration: every schema key and nothing else, also as attributes (``cfg.base_lr``).

    Besides the keys: ``origins`` says where each value that is not the schema's default came from (the config
    file or base file that wrote it, or ``COMMAND_LINE``); ``files`` are the config file given and its bases, in
    the order they apply (the given file last); ``arguments`` holds the entry point's own arguments, which are not
    config keys (predict.py's images, ...).
    """

    def __init__(self, values: Mapping[str, Any], origins: Optional[Mapping[str, str]] = None,
                 files: Sequence[str] = (), arguments: Optional[argparse.Namespace] = None):
        self._values = dict(values)
        self.origins = dict(origins or {})
        self.files = tuple(files)
        self.arguments = arguments if arguments is not None else argparse.Namespace()

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not a key (copy and pickle look for such attributes before __init__ ran)
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def file(self) -> Optional[str]:
        """The config file given (--config), or None."""
        return self.files[-1] if self.files else None

    def replace(self, **values: Any) -> "Config":
        """A copy with ``values`` in place of the current ones (values resolved or localised, not set anew: the
        origins stay)."""
        unknown = set(values) - set(self._values)
        if unknown:
            raise KeyError(f"not config keys: {sorted(unknown)}")
        return type(self)({**self._values, **values}, self.origins, self.files, self.arguments)


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


class _DuplicateKey(Exception):
    def __init__(self, key: str, lines: Tuple[int, int]):
        super().__init__(key)
        self.key, self.lines = key, lines


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a mapping writing a key twice is refused (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                if key_node.value in seen:
                    raise _DuplicateKey(key_node.value, (seen[key_node.value], line))
                seen[key_node.value] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: str, remote: bool = False) -> Dict[str, Any]:
    """A YAML mapping from a local file, or with ``remote`` through moxing (ModelArts); a key written twice is
    an error."""
    if remote:
        from .modelarts import read_text
        text = read_text(path)
    else:
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path!r} does not exist.{shipped_configs_hint(path)}")
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    try:
        data = yaml.load(text, Loader=_StrictLoader) or {}
    except _DuplicateKey as twice:
        raise ConfigError(f"config file {path!r} sets {twice.key!r} twice (lines {twice.lines[0]} and "
                          f"{twice.lines[1]}); keep one") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path!r} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must be a mapping of keys to values")
    return data


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shipped_configs_hint(path: str) -> str:
    """What to pass instead of a config file that does not exist: the shipped file of the same name, if any, and
    the two recipes this repository ships (a ModelZoo user's ./src/configs/vig_s_patch16_224.yaml lives in
    configs/modelzoo/ here)."""
    name = os.path.basename(path)
    same = [os.path.join(folder, name) for folder in ("configs", os.path.join("configs", "modelzoo"))
            if os.path.isfile(os.path.join(REPO_ROOT, folder, name))]
    found = f" Did you mean {same[0]}?" if same else ""
    return (f"{found} This repository ships configs/<model>.yaml (the official recipe: EMA, repeated augmentation, "
            f"total batch 1024, cooldown) and configs/modelzoo/vig_{{ti,s,b}}_patch16_224.yaml (the MindSpore "
            f"ModelZoo's recipe)")


def _config_location(path: str, modelarts: bool) -> Tuple[str, bool]:
    """Where the config file is read from: (path, through moxing?). On ModelArts, as in the ModelZoo, an
    absolute path that is not a local file names an OBS object (``/bucket/x.yaml`` -> ``obs://bucket/x.yaml``)."""
    if is_remote(path):
        if not modelarts:
            raise ConfigError(f"config file {path!r} is an object-store URL: add --run_modelarts True (ModelArts, "
                              f"read through moxing) or give a local file")
        return path, True
    if modelarts and path.startswith("/") and not os.path.exists(path):
        return "obs:/" + path, True
    return path, False


class ArgumentParser(argparse.ArgumentParser):
    """argparse, except that a command-line mistake is a ConfigError (one line through ``cli.run_cli``)
    instead of the usage text and a message."""

    def error(self, message: str):
        raise ConfigError(f"{message} (--help shows the usage)")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type for an entry point's own count: an integer in [low, high] (config keys have
    ``Option.check``)."""
    def parse(text: str) -> int:
        try:
            value = _int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        problem = in_range(low, high)(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{value} {problem}")
        return value
    parse.__name__ = "int"
    return parse


def build_parser(description: str, entry: str = "train", arguments: Sequence[Argument] = ()) -> argparse.ArgumentParser:
    """The command line of ``entry``: --config, the entry point's own ``arguments`` (not config keys: inputs
    such as image files) and the keys that entry point reads."""
    parser = ArgumentParser(description=description, allow_abbrev=False,
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


BASE_KEY = "_base_"


def _base_location(base: str, path: str, remote: bool) -> str:
    """Where a base named in ``path`` is: relative to the folder of ``path`` (an object-store one too)."""
    if not remote:
        return os.path.normpath(os.path.join(os.path.dirname(path), base))
    if is_remote(base):
        return base
    scheme, rest = path.split("://", 1)
    return f"{scheme}://{posixpath.normpath(posixpath.join(posixpath.dirname(rest), base))}"


def read_config_file(path: str, remote: bool = False, including: Tuple[str, ...] = ()
                     ) -> Tuple[Dict[str, Tuple[Any, str]], List[str]]:
    """The keys a config file and its bases write, each as (value as written, the file that wrote it), and the
    files read, in the order they apply: the bases' keys in their order, then the file's own over them. Keys
    spelled as an alias get their schema name. An unknown key, a key set twice in one file, two bases setting one
    key, a missing base and a chain of bases that comes back to a file are errors naming the files.
    ``including``: the files whose bases lead here, outermost first."""
    def same(a: str, b: str) -> bool:
        return a == b if remote else os.path.realpath(a) == os.path.realpath(b)

    if any(same(path, outer) for outer in including):
        first = next(i for i, outer in enumerate(including) if same(path, outer))
        raise ConfigError(f"config file {path} is its own base ({' -> '.join(including[first:] + (path,))}); "
                          f"remove one {BASE_KEY}")
    if including and not remote and not os.path.isfile(path):
        raise ConfigError(f"config file {including[-1]} names the base {path}, which does not exist; fix its "
                          f"{BASE_KEY} (a path relative to that file)")
    data = read_yaml(path, remote)
    bases = data.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(base, str) and base for base in bases):
        raise ConfigError(f"{BASE_KEY} in {path} must be a path or a list of paths (relative to the file), got "
                          f"{bases!r}")
    merged: Dict[str, Tuple[Any, str]] = {}
    files: List[str] = []
    for base in bases:
        written, read = read_config_file(_base_location(base, path, remote), remote, including + (path,))
        for key, (value, where) in written.items():
            if key in merged and merged[key][1] != where:
                raise ConfigError(f"{merged[key][1]} and {where} both set {key!r}, as bases of {path}: set it in "
                                  f"one of them, or in {path} itself")
            merged[key] = (value, where)
        files += [name for name in read if name not in files]
    own: Dict[str, Tuple[Any, str]] = {}
    for key, value in data.items():
        name = _FILE_ALIASES.get(key, key)
        if name not in OPTIONS:
            raise _unknown(key, f"in {path}", OPTIONS)
        if name in own:
            raise ConfigError(f"{path} sets {name!r} twice (as {name!r} and as an alias); keep one")
        own[name] = (value, path)
    merged.update(own)
    return merged, files + [path]


def load_config(argv: Optional[List[str]] = None, description: str = "", entry: str = "train",
                arguments: Sequence[Argument] = ()) -> Config:
    """Schema defaults <- YAML file (--config) and its bases <- command-line overrides of ``entry``'s keys,
    converted and checked. The YAML files may hold any schema key; the command line only ``ENTRY_KEYS[entry]``.
    ``arguments`` ((flags, argparse options) pairs) are the entry point's own; their values are
    ``cfg.arguments``."""
    if entry not in ENTRY_KEYS:
        raise ValueError(f"unknown entry point {entry!r}; one of {sorted(ENTRY_KEYS)}")
    keys = set(ENTRY_KEYS[entry])
    parser = build_parser(description, entry, arguments)
    own = {action.dest for action in parser._actions} - keys - {"config", "help"}
    args, rest = parser.parse_known_args(argv)
    for token in rest:
        if token.startswith("-") and len(token) > 1:
            key = token.lstrip("-").split("=", 1)[0]
            key = _FILE_ALIASES.get(key, key)
            if key in OPTIONS:
                raise ConfigError(f"config key {key!r} ({token}) is not read by {entry}.py; drop it from the "
                                  f"command line (--help lists this entry point's keys)")
            raise _unknown(key, "on the command line", ENTRY_KEYS[entry])
        raise ConfigError(f"unexpected command-line argument {token!r}; use --key value")
    values = {key: option.default for key, option in OPTIONS.items()}
    cli = {k: v for k, v in vars(args).items() if k != "config" and k not in own}
    modelarts = _convert("run_modelarts", cli["run_modelarts"], COMMAND_LINE) if "run_modelarts" in cli else False
    origins: Dict[str, str] = {}
    files: List[str] = []
    if args.config:
        written, files = read_config_file(*_config_location(args.config, modelarts))
        for key, (value, where) in written.items():
            values[key] = _convert(key, value, f"in {where}")
            origins[key] = where
    for key, value in cli.items():
        values[key] = _convert(key, value, "on the command line")
        origins[key] = COMMAND_LINE
    if "arch" in keys and not values["arch"]:
        raise ConfigError("no model given: pass --config configs/<model>.yaml or --arch <name>")
    _check_combinations(values, keys)
    if not values["run_modelarts"]:
        for key in keys.intersection(PATH_KEYS):
            if is_remote(values[key]):
                raise ConfigError(f"{key} {values[key]!r} is an object-store URL: add --run_modelarts True "
                                  f"(ModelArts, copied through moxing) or give a local path")
    return Config(values, origins, files, argparse.Namespace(**{name: getattr(args, name) for name in own}))


def _check_combinations(values: Dict[str, Any], keys: set) -> None:
    """Keys that are fine alone but contradict each other; each check when the entry point reads its ``keys``."""
    for level in ("amp_level", "eval_amp_level"):
        if {level, "keep_bn_fp32"} <= keys and values[level] == "O2" and not values["keep_bn_fp32"]:
            raise ConfigError(f"keep_bn_fp32 false cannot be honoured with {level} O2, which always computes "
                              f"BatchNorm in float32: use {level} O3 for float16 BatchNorm, or keep_bn_fp32 true")
    if {"start_epoch", "resume"} <= keys and values["start_epoch"] and values["resume"]:
        raise ConfigError("start_epoch and resume both given: a resumed run continues at its checkpoint's epoch; "
                          "drop one")
    if {"start_epoch", "epochs", "cooldown_epochs"} <= keys and \
            values["start_epoch"] >= values["epochs"] + values["cooldown_epochs"]:
        raise ConfigError(f"start_epoch {values['start_epoch']} leaves nothing of the "
                          f"{values['epochs'] + values['cooldown_epochs']} epochs to train")


def effective_recipe(cfg: Config, entry: str = "train", sources: Optional[Dict[str, str]] = None
                     ) -> Dict[str, List[str]]:
    """The values of ``entry``'s keys that the config file given does not write itself, grouped by where they
    come from (a base file, the command line, a ModelZoo file, this project, or as ``sources`` says for keys
    resolved elsewhere, such as the evaluation transform): what a run logs at its start."""
    groups: Dict[str, List[str]] = {}
    where = {**cfg.origins, **(sources or {})}
    for key in ENTRY_KEYS[entry]:
        source = where.get(key, OPTIONS[key].origin)
        if cfg.file and source == cfg.file:
            continue
        value = cfg[key]
        groups.setdefault(source, []).append(f"{key}={list(value) if isinstance(value, tuple) else value}")
    return groups


def save_config(cfg: Config, path: str) -> None:
    """Write the merged configuration as one flat YAML file (every key; lists and tuples as YAML lists), which
    reloads to the same values without its bases."""
    plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"# merged configuration: defaults <- {' <- '.join(cfg.files) or 'no file'} <- command line\n")
        yaml.safe_dump(plain, handle, sort_keys=False)
