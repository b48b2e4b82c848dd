"""Official PyTorch ViG checkpoints -> MindSpore checkpoints of our models.

Our module tree mirrors the official one, so the names map one-to-one; only BatchNorm entries are
renamed (weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance) and
``num_batches_tracked`` is dropped. The file is read by ``pth_reader`` (no PyTorch, no code run).
"""
import json
import os
from typing import Dict

import numpy as np

from ..data.params import EvalTransformParams
from ..models import canonical_name, create_model, model_cfg
from .checkpoint import DATA_KEY, CheckpointError, check_fits, save_checkpoint
from .download import download
from ..utils.files import check_writable
from .pth_reader import read_pth

BN_RENAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def select_state_dict(obj, use_ema: bool = False) -> Dict[str, np.ndarray]:
    """The state dict inside a checkpoint: a plain state dict, or the ``state_dict`` /
    ``state_dict_ema`` entry of a training checkpoint."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"expected a state dict (a mapping of names to tensors), found {type(obj).__name__}")
    key = "state_dict_ema" if use_ema else "state_dict"
    if key in obj:
        obj = obj[key]
    elif use_ema:
        raise CheckpointError("--ema was given but the checkpoint has no 'state_dict_ema' entry (the official "
                              "release files are plain state dicts: convert without --ema)")
    elif "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    tensors = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not tensors or len(tensors) != len(obj):
        raise CheckpointError("the checkpoint is not a state dict of tensors (no 'state_dict' entry, and its "
                              f"top-level entries are {sorted(obj)[:5]}...)")
    return tensors


def to_mindspore_names(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Rename official keys to ours (in their order); a ``module.`` prefix (DataParallel) is removed."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    bn_modules = {k[:-len(".running_mean")] for k in state if k.endswith(".running_mean")}
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        if module in bn_modules:
            leaf = BN_RENAMES[leaf]
        out[f"{module}.{leaf}" if module else leaf] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def to_official_names(weights: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Our names -> the official state dict's (the inverse of ``to_mindspore_names``). ``num_batches_tracked``
    is not made up: PyTorch's BatchNorm loads a state dict without it."""
    official = {ours: theirs for theirs, ours in BN_RENAMES.items()}
    bn_modules = {k[:-len(".moving_mean")] for k in weights if k.endswith(".moving_mean")}
    out = {}
    for key, value in weights.items():
        module, _, leaf = key.rpartition(".")
        out[f"{module}.{official[leaf]}" if module in bn_modules else key] = value
    return out


def check_destination(dst: str, overwrite: bool) -> None:
    """An existing output is replaced only when asked, and its folder must take files (checked before any
    download or conversion)."""
    if os.path.exists(dst) and not overwrite:
        raise CheckpointError(f"{dst!r} already exists; choose another --dst or pass --overwrite")
    check_writable(os.path.dirname(os.path.abspath(dst)), "destination folder", "dst")


def convert_official_checkpoint(src: str, dst: str, arch: str, use_ema: bool = False,
                                overwrite: bool = False) -> Dict[str, int]:
    """Convert ``src`` (.pth) for ``arch`` into ``dst`` (.ckpt) after checking it fits the model exactly."""
    arch = canonical_name(arch)
    check_destination(dst, overwrite)
    content = read_pth(src)
    weights = to_mindspore_names(select_state_dict(content, use_ema))
    classifier_bias = model_cfg(arch)["classifier"] + ".bias"
    num_classes = int(weights[classifier_bias].shape[0]) if classifier_bias in weights else 1000
    net = create_model(arch, num_classes=num_classes, kernel_impl="native")
    check_fits(net, weights, f"checkpoint {src!r}", arch)
    transform = official_transform(arch)
    save_checkpoint({**weights, DATA_KEY: json.dumps(transform)}, dst)
    info = {"tensors": len(weights), "num_classes": num_classes, "transform": transform}
    graph_args = training_graph_args(content)
    return {**info, "graph_args": graph_args} if graph_args else info


def official_transform(arch: str) -> dict:
    """The evaluation transform the official weights of ``arch`` were evaluated with (its default cfg), as a
    checkpoint records it (``meta.data``): evaluation then uses it unless the command line or config file says
    otherwise."""
    cfg = model_cfg(arch)
    return EvalTransformParams(image_size=cfg["input_size"], mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                               crop_pct=cfg["crop_pct"]).record()


def training_graph_args(content) -> Dict[str, float]:
    """SViG's threshold settings recorded in a training checkpoint's ``args`` (its weights are evaluated
    with the settings they were trained with, which the state dict itself does not show); else empty."""
    args = content.get("args") if isinstance(content, dict) else None
    recorded = vars(args) if args is not None and hasattr(args, "__dict__") else {}
    return {k: float(recorded[k]) for k in ("start_thresh", "dec") if isinstance(recorded.get(k), (int, float))}


def fetch_release(arch: str, progress: bool = True) -> str:
    """The official checkpoint file of ``arch`` (its default cfg's ``url``), from the cache or downloaded."""
    arch = canonical_name(arch)
    cfg = model_cfg(arch)
    if not cfg.get("url"):
        raise CheckpointError(f"no downloadable release file is known for {arch}; download its official checkpoint "
                              f"by hand and convert it with --src <file>")
    return download(cfg["url"], sha256=cfg.get("sha256"), num_bytes=cfg.get("num_bytes"), progress=progress)
