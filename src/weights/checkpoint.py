"""Checkpoint files: atomic writes and strict, explained loading.

Layout of the project's checkpoints: model parameters under their own names (the names of the
official state dict after the BatchNorm renames), the EMA copy under ``ema.<name>``, the rest of the
train step's state (optimizer moments and step, loss scale) under ``train_state.<name>`` and run
metadata (epoch, step, best accuracy and whether it came from the EMA) under ``meta.<name>``.
``meta.data`` is a JSON text: the class names in label order and the evaluation transform
(image_size, mean, std, crop_pct) the weights were trained for. Converted official checkpoints hold
the model parameters and, in ``meta.data``, the official evaluation transform only (no class list:
ImageNet-1k in the official order).
"""
import json
import os
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Union

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from ..utils.files import atomic_path, temporary_path

EMA_PREFIX = "ema."
STATE_PREFIX = "train_state."
META_PREFIX = "meta."
DATA_KEY = META_PREFIX + "data"
CHECKPOINT_TEMPORARIES = ("ckpt", "tmp")  # our temporary name, and MindSpore's own step before its rename
_STATE_PREFIXES = (EMA_PREFIX, STATE_PREFIX, META_PREFIX)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model."""


def save_checkpoint(entries: Mapping[str, Union[Tensor, np.ndarray, int, float, str]], path: str) -> str:
    """Write ``entries`` (tensors, numbers, texts) to ``path`` atomically: a temporary file in the same
    folder (``utils.files.atomic_path``), then a rename.

    An interrupted write never leaves a truncated file under ``path``, and an existing file at
    ``path`` is only replaced by a complete one. A failed write (full disk, lost permission) is a
    CheckpointError naming the file; the file that was there stays as it was.
    """
    if not path.endswith(".ckpt"):
        raise CheckpointError(f"checkpoint path {path!r} must end with .ckpt")
    staging = os.path.splitext(temporary_path(path))[0] + ".tmp"  # MindSpore writes here, then renames it
    payload = [{"name": name, "data": _as_tensor(value)} for name, value in entries.items()
               if not isinstance(value, str)]
    texts = {name: value for name, value in entries.items() if isinstance(value, str)}
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_path(path) as tmp:
            ms.save_checkpoint(payload, tmp, append_dict=texts or None)
    except OSError as err:
        raise CheckpointError(f"cannot write checkpoint {path!r} ({err.strerror or err}); it was left as it was"
                              ) from None
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return path


def _as_tensor(value) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (int, np.integer)):
        return Tensor(np.array(value, np.int64))
    if isinstance(value, (float, np.floating)):  # float64: a resumed run compares its best top-1 exactly
        return Tensor(np.array(value, np.float64))
    return Tensor(np.asarray(value))


def read_checkpoint(path: str, meta_only: bool = False) -> Dict[str, Union[Tensor, str]]:
    """All entries of a MindSpore checkpoint (or only its ``meta.`` entries, without converting the
    other tensors), with a clear error for a missing or unreadable file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist; check the path (--pretrained / --resume)")
    try:
        if meta_only:
            return dict(ms.load_checkpoint(path, choice_func=lambda name: name.startswith(META_PREFIX)))
        return dict(ms.load_checkpoint(path))
    except Exception as err:  # MindSpore raises ValueError/RuntimeError with long internal texts
        if meta_only:  # MindSpore also refuses a file without any meta. entry (converted checkpoints)
            return {k: v for k, v in read_checkpoint(path).items() if k.startswith(META_PREFIX)}
        if "filter_prefix" in str(err):  # no entry at all: MindSpore's message blames filters nobody set
            raise CheckpointError(f"cannot read {path!r} as a MindSpore checkpoint: the file is empty or truncated "
                                  f"({os.path.getsize(path)} bytes, no complete entry); write or copy it again"
                                  ) from None
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise CheckpointError(f"cannot read {path!r} as a MindSpore checkpoint (MindSpore: {reason[:300]}). If it "
                              f"is an official PyTorch .pth file, convert it first with convert_checkpoint.py"
                              ) from None


def stored_data(checkpoint: Mapping[str, Union[Tensor, str]]) -> Optional[dict]:
    """The classes and evaluation transform recorded in ``meta.data``, or None (converted or older files)."""
    text = checkpoint.get(DATA_KEY)
    return json.loads(text) if isinstance(text, str) else None


def data_differences(trained_for: dict, current: dict) -> str:
    """What differs between the recorded classes/transform and the current ones, in words."""
    parts = []
    for key in sorted(set(trained_for) | set(current)):
        then, now = trained_for.get(key), current.get(key)
        if then == now:
            continue
        if key == "classes" and then and now:
            if sorted(then) == sorted(now):
                parts.append("the same classes in another order")
            else:
                only_then, only_now = sorted(set(then) - set(now)), sorted(set(now) - set(then))
                parts.append(f"other classes (only in the checkpoint: {_first(only_then, 5) or '-'}; "
                             f"only here: {_first(only_now, 5) or '-'})")
        else:
            parts.append(f"{key} {then!r} (here {now!r})")
    return "it was trained for " + ", ".join(parts)


BEST_IS_EMA = META_PREFIX + "best_is_ema"


def wants_ema(checkpoint: Mapping[str, Tensor], use_ema: Optional[bool]) -> bool:
    """``use_ema`` None means: the weights the checkpoint records as its best (``best.ckpt`` of a run
    whose EMA validated better holds ``meta.best_is_ema`` = 1), else the model weights."""
    if use_ema is not None:
        return bool(use_ema)
    return BEST_IS_EMA in checkpoint and float(checkpoint[BEST_IS_EMA].asnumpy()) > 0


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


# Parameter names of the MindSpore ModelZoo ViG (research/cv/ViG), whose network differs from the official one.
MODELZOO_NAMES = ("patch_embed.conv", "blocks.0.grapher.", "head.0.")


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
        if any(n.startswith(MODELZOO_NAMES) for n in unexpected):
            raise CheckpointError(f"{source} is a MindSpore ModelZoo ViG checkpoint ({_first(unexpected)}): that "
                                  "network computes another function (kNN on unnormalised features, ceil(k/d) "
                                  "neighbours, [x, max-relative] concatenated as blocks, convolutions without "
                                  "biases), so its weights cannot load here; convert the official PyTorch weights "
                                  "with convert_checkpoint.py, or train with this project (README: ModelZoo)")
        raise CheckpointError(f"{source} does not fit {what}: " + "; ".join(parts) + ". Is it a checkpoint of "
                              "another architecture?")


def _first(names: Iterable[str], count: int = 3) -> str:
    names = list(names)
    return ", ".join(repr(n) for n in names[:count]) + (", ..." if len(names) > count else "")


class LoadedWeights(NamedTuple):
    ema: bool                 # the EMA copy was loaded
    reinitialised: List[str]  # classifier entries kept at their fresh values (another class count)


def load_model_weights(net: nn.Cell, path: str, use_ema: Optional[bool] = False, arch: Optional[str] = None,
                       new_classifier: Optional[str] = None) -> LoadedWeights:
    """Load a project or converted checkpoint into ``net``, refusing anything that does not fit exactly.

    ``use_ema`` None takes the weights the checkpoint records as its best (see ``wants_ema``).
    A features-only backbone (``create_model(..., features_only=True)``) takes a full model's checkpoint:
    the entries of the parts it dropped (head, blocks after its last feature point) are skipped.
    Fine-tuning: with ``new_classifier`` (a parameter-name prefix), entries under it whose shapes differ
    from the model's (another class count) are not loaded and the model keeps its freshly initialised
    ones; their names are returned.
    """
    checkpoint = read_checkpoint(path)
    ema = wants_ema(checkpoint, use_ema)
    weights = model_entries(checkpoint, ema)
    dropped = getattr(net, "dropped_prefixes", ())  # a features-only backbone: no head, maybe fewer blocks
    weights = {name: value for name, value in weights.items() if not name.startswith(dropped)}
    params = net.parameters_dict()
    kept = [n for n in weights if new_classifier and n.startswith(new_classifier) and n in params
            and tuple(weights[n].shape) != tuple(params[n].shape)]
    weights.update({name: params[name] for name in kept})
    check_fits(net, weights, f"checkpoint {path!r}", arch)
    not_loaded, _ = ms.load_param_into_net(net, {n: ms.Parameter(v, name=n) for n, v in weights.items()},
                                           strict_load=True)
    if not_loaded:
        raise CheckpointError(f"parameters {_first(not_loaded)} of the model were not loaded from {path!r}")
    return LoadedWeights(ema, kept)
