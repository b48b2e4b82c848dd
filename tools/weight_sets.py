"""The weight sets the benchmarks measure with, each giving realistic activations its own way; a speed that
depends on the set shows a data-dependent cost (docs/performance.md):

- ``calibrated``: our initialisation, BatchNorm affine parameters drawn, running statistics measured on the
  measured images (``tools.calibrate.calibrate``, run in PyNative mode);
- ``official``: the official code's own initialisation (PyTorch's, ``tools/torch_reference.py``), BatchNorm
  affine parameters and ``pos_embed`` drawn, running statistics calibrated by cumulative average on the
  measured images in PyTorch, converted to our names as ``convert_checkpoint.py`` converts;
- ``trained``: ``train.py`` for ``TRAIN_EPOCHS`` epochs on the demo digits (10 classes) at the measured image
  size, its head's rows then repeated to 1000 classes, the head of the other sets.

``official`` and ``trained`` are made once per model and size, each in a subprocess, and cached as checkpoints
in ``~/.cache/vig_mindspore/benchmark`` (``VIG_BENCHMARK_CACHE``), outside the repository.
This module imports no framework at the top: ``python -m tools.weight_sets official ARCH SIZE OUT`` runs the
PyTorch side.
"""
import os
import subprocess
import sys
import tempfile
from typing import Optional, Union

import numpy as np

WEIGHT_SETS = ("calibrated", "official", "trained")
TRAIN_EPOCHS = 2
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("VIG_BENCHMARK_CACHE", "~/.cache/vig_mindspore/benchmark"))


def size_tag(image_size) -> str:
    return str(image_size) if isinstance(image_size, int) else "x".join(map(str, image_size))


def weights_file(arch: str, which: str, image_size: Union[int, tuple], batch_size: int = 8) -> Optional[str]:
    """The cached checkpoint of set ``which`` for ``arch`` (made first if missing); None for 'calibrated', which
    is made in place (``apply``)."""
    if which not in WEIGHT_SETS:
        raise ValueError(f"weight set must be one of {WEIGHT_SETS}, got {which!r}")
    if which == "calibrated":
        return None
    folder = os.path.join(cache_dir(), f"{arch}_{size_tag(image_size)}_{which}")
    path = os.path.join(folder, "weights.ckpt")
    if os.path.exists(path):
        return path
    os.makedirs(folder, exist_ok=True)
    if which == "official":
        command = [sys.executable, "-m", "tools.weight_sets", "official", arch, size_tag(image_size), str(batch_size),
                   path]
    else:
        run = tempfile.mkdtemp(prefix="run-", dir=folder)  # a failed attempt's run does not block the next
        command = [sys.executable, "train.py", "--config", "configs/demo.yaml", "--arch", arch, "--num_classes", "10",
                   "--image_size", str(image_size), "--epochs", str(TRAIN_EPOCHS), "--batch_size", "16",
                   "--ema_decay", "0", "--data_url", os.path.join(cache_dir(), f"digits_{size_tag(image_size)}"),
                   "--train_url", run]
    print(f"making the {which} weights of {arch} into {folder} (once)", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"making the {which} weights of {arch} failed:\n" + "\n".join(
            (done.stdout + done.stderr).strip().splitlines()[-15:]))
    if which == "trained":
        _widen_head(os.path.join(run, "last.ckpt"), path)
    return path


def _widen_head(trained: str, out: str, classes: int = 10, wanted: int = 1000) -> None:
    """Save the model entries of ``trained`` (a ``classes``-way head: the digits) into ``out`` with the head's rows
    repeated to ``wanted`` classes, the head the other sets have; the rest as trained."""
    from src.weights.checkpoint import model_entries, read_checkpoint, save_checkpoint
    entries = {name: value.asnumpy() for name, value in model_entries(read_checkpoint(trained)).items()}
    heads = [name for name, value in entries.items() if value.ndim and value.shape[0] == classes]
    if not heads:
        raise RuntimeError(f"no {classes}-class head in {trained}")
    for name in heads:
        value = entries[name]
        entries[name] = np.resize(value, (wanted,) + value.shape[1:]).astype(value.dtype)
    save_checkpoint(entries, out)


def apply(net, arch: str, which: str, images: np.ndarray, image_size, batch_size: int = 8):
    """Give ``net`` (built for ``arch``) the weights of set ``which``; ``images``: the calibration images."""
    from src.weights.checkpoint import load_model_weights
    from tools.calibrate import calibrate
    if which == "calibrated":
        return calibrate(net, images)
    load_model_weights(net, weights_file(arch, which, image_size, batch_size), arch=arch)
    return net


def make_official(arch: str, image_size, batch_size: int, out: str) -> None:
    """PyTorch: the official model's initialisation, calibrated in place (``calibrate_``), saved under our names
    (``save_checkpoint`` writes atomically)."""
    import torch
    from tools.against_pytorch import reference_module
    from tools.calibrate import calibration_images
    from src.weights.checkpoint import save_checkpoint
    from src.weights.convert import to_mindspore_names
    torch.manual_seed(0)
    reference = reference_module()
    model = reference.build_named(arch, image_size)
    reference.calibrate_(model, torch.from_numpy(calibration_images(max(8, batch_size), image_size)))
    save_checkpoint(to_mindspore_names({k: v.numpy() for k, v in model.state_dict().items()}), out)


if __name__ == "__main__":
    _, _, name, size, batch, target = sys.argv
    make_official(name, int(size) if size.isdigit() else tuple(int(s) for s in size.split("x")), int(batch), target)
