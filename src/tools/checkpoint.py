"""Checkpoint files: atomic writes and strict, explained loading.

Layout of the project's checkpoints: model parameters under their own names (the names of the
official state dict after the BatchNorm renames), the EMA copy under ``ema.<name>``, optimizer
state under ``optimizer.<name>`` and run metadata (epoch, step, loss scale, best accuracy) under
``meta.<name>``. Converted official checkpoints hold model parameters only.
"""
import os
from typing import Dict, Iterable, List, Mapping, Optional, Union

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

EMA_PREFIX = "ema."
STATE_PREFIX = "train_state."
META_PREFIX = "meta."
_STATE_PREFIXES = (EMA_PREFIX, STATE_PREFIX, META_PREFIX)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model."""


def save_checkpoint(entries: Mapping[str, Union[Tensor, np.ndarray, int, float]], path: str) -> str:
    """Write ``entries`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    An interrupted write never leaves a truncated file under ``path``, and an existing file at
    ``path`` is only replaced by a complete one.
    """
    if not path.endswith(".ckpt"):
        raise CheckpointError(f"checkpoint path {path!r} must end with .ckpt")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)[:-5]}.tmp{os.getpid()}.ckpt")
    payload = [{"name": name, "data": _as_tensor(value)} for name, value in entries.items()]
    try:
        ms.save_checkpoint(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _as_tensor(value) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (int, np.integer)):
        return Tensor(np.array(value, np.int64))
    if isinstance(value, (float, np.floating)):
        return Tensor(np.array(value, np.float32))
    return Tensor(np.asarray(value))


def read_checkpoint(path: str) -> Dict[str, Tensor]:
    """All entries of a MindSpore checkpoint, with a clear error for a missing or unreadable file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist; check the path (--pretrained / --resume)")
    try:
        return dict(ms.load_checkpoint(path))
    except Exception as err:  # MindSpore raises ValueError/RuntimeError with long internal texts
        raise CheckpointError(f"cannot read {path!r} as a MindSpore checkpoint ({type(err).__name__}). If it "
                              f"is an official PyTorch .pth file, convert it first with convert_checkpoint.py"
                              ) from None


def model_entries(checkpoint: Mapping[str, Tensor], use_ema: bool = False) -> Dict[str, Tensor]:
    """The model weights of a checkpoint: plain names, or their ``ema.`` copies when asked.

    Parameters without an EMA copy (frozen tables) are taken from the plain entries.
    """
    plain = {k: v for k, v in checkpoint.items() if not k.startswith(_STATE_PREFIXES)}
    if not use_ema:
        return plain
    ema = {k[len(EMA_PREFIX):]: v for k, v in checkpoint.items() if k.startswith(EMA_PREFIX)}
    if not ema:
        raise CheckpointError("the checkpoint holds no EMA weights; drop --use_ema (or convert an official "
                              "checkpoint with --ema)")
    return {**plain, **ema}


def check_fits(net: nn.Cell, weights: Mapping[str, Union[Tensor, np.ndarray]], source: str,
               arch: Optional[str] = None) -> None:
    """Raise CheckpointError unless ``weights`` has exactly the parameters of ``net`` with their shapes."""
    expected = {p.name: tuple(p.shape) for p in net.get_parameters()}
    what = f"model {arch!r}" if arch else "the model"
    for name, value in weights.items():
        if name in expected and tuple(value.shape) != expected[name]:
            raise CheckpointError(f"{source} does not fit {what}: {name!r} has shape {tuple(value.shape)} in "
                                  f"the checkpoint but {expected[name]} in the model (another arch, "
                                  f"num_classes or image size?)")
    missing = [n for n in expected if n not in weights]
    unexpected = [n for n in weights if n not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model parameters are missing from it (first: {_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} entries are not in the model (first: {_first(unexpected)})")
        raise CheckpointError(f"{source} does not fit {what}: " + "; ".join(parts) + ". Is it a checkpoint of "
                              "another architecture?")


def _first(names: Iterable[str], count: int = 3) -> str:
    names = list(names)
    return ", ".join(repr(n) for n in names[:count]) + (", ..." if len(names) > count else "")


def load_model_weights(net: nn.Cell, path: str, use_ema: bool = False, arch: Optional[str] = None,
                       new_classifier: Optional[str] = None) -> List[str]:
    """Load a project or converted checkpoint into ``net``, refusing anything that does not fit exactly.

    Fine-tuning: with ``new_classifier`` (a parameter-name prefix), entries under it whose shapes differ
    from the model's (another class count) are not loaded and the model keeps its freshly initialised
    ones; their names are returned.
    """
    weights = model_entries(read_checkpoint(path), use_ema)
    params = net.parameters_dict()
    kept = [n for n in weights if new_classifier and n.startswith(new_classifier) and n in params
            and tuple(weights[n].shape) != tuple(params[n].shape)]
    weights.update({name: params[name] for name in kept})
    check_fits(net, weights, f"checkpoint {path!r}", arch)
    not_loaded, _ = ms.load_param_into_net(net, {n: ms.Parameter(v, name=n) for n, v in weights.items()},
                                           strict_load=True)
    if not_loaded:
        raise CheckpointError(f"parameters {_first(not_loaded)} of the model were not loaded from {path!r}")
    return kept
