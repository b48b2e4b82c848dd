"""Write scikit-learn's bundled handwritten digits as an ImageNet-style folder tree (the demo data).

Why: the project's one-command demo must train and evaluate without a network or a
download.  ``sklearn.datasets.load_digits`` ships 1,797 8x8 grey images of 10 classes inside
the scikit-learn wheel.  They are written as RGB PNGs, upscaled with bicubic resampling, to
``root/train/<digit>/<index>.png`` and ``root/val/<digit>/<index>.png`` (a stratified held-out
split), which ``create_dataset`` then reads like ImageNet.

The folder rule: the digits go only into a new or empty ``root``, and the project never
deletes or replaces anything there.  A tree it wrote carries ``root/digits.json`` (settings,
counts, writer), written into the tree first, before any image.  A later call with the same
settings checks the counts and reuses the tree; other settings, a damaged tree or a ``root``
holding anything else (a user's own ``train/`` and ``val/``, say) are refused with one line
naming the folder and the fix.  The tree is built in a hidden sibling and renamed into place
(``staging.py``), so concurrent callers never see half a tree and an interrupted run leaves
only that sibling, which the next call removes.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

import numpy as np
from PIL import Image

from ..choices import SETS
from .errors import DatasetError
from .files import visible
from .staging import StagedDir

__all__ = ["write_digits_dataset", "find_digits_dataset", "MARKER", "SETS"]

MARKER = "digits.json"


def _count_pngs(root: str) -> Dict[str, int]:
    counts = {}
    for split in ("train", "val"):
        total = 0
        split_dir = os.path.join(root, split)
        if os.path.isdir(split_dir):
            for cls in filter(visible, os.listdir(split_dir)):
                cls_dir = os.path.join(split_dir, cls)
                if os.path.isdir(cls_dir):
                    total += sum(1 for f in os.listdir(cls_dir) if visible(f) and f.endswith(".png"))
        counts[split] = total
    return counts


def _existing(root: str, settings: dict) -> Optional[Dict[str, int]]:
    """Counts of the finished digits tree at ``root``; None for a missing or empty folder.

    Raises for anything else, naming the folder and the fix.
    """
    marker = os.path.join(root, MARKER)
    if not os.path.isfile(marker):
        if os.path.exists(root) and (not os.path.isdir(root) or any(os.scandir(root))):
            found = sorted(os.listdir(root))[:5] if os.path.isdir(root) else []
            raise DatasetError(
                f"set: digits writes the demo digits only into a new or empty folder, and {root} holds other files "
                f"({', '.join(found) or 'it is a file'}): nothing was changed; point data_url at a new folder for "
                f"the demo, or use set: ImageNet to read your own train/ and val/ there")
        return None
    with open(marker, encoding="utf-8") as fh:
        info = json.load(fh)
    if info.get("settings") != settings:
        raise DatasetError(f"{root} already holds a digits tree written with {info.get('settings')}, "
                           f"not {settings}; use another data_url or delete {root}")
    counts = _count_pngs(root)
    if "train" not in info or counts["train"] != info["train"] or counts["val"] != info["val"]:
        raise DatasetError(f"the digits tree in {root} is damaged ({counts} files, {MARKER} says "
                           f"train={info.get('train')}, val={info.get('val')}); delete {root} and run again")
    return {"train": info["train"], "val": info["val"], "num_classes": info["num_classes"]}


def _write_tree(dest: str, image_size: int, val_fraction: float, seed: int) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # 0..16 -> 0..255
    labels = digits.target.astype(int)
    index = np.arange(len(labels))
    train_idx, val_idx = train_test_split(index, test_size=val_fraction, stratify=labels,
                                          random_state=seed)
    for split, idx in (("train", train_idx), ("val", val_idx)):
        for cls in range(10):
            os.makedirs(os.path.join(dest, split, str(cls)), exist_ok=True)
        for i in sorted(idx):
            img = Image.fromarray(images[i])
            if image_size != 8:
                img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
            img.convert("RGB").save(os.path.join(dest, split, str(labels[i]), f"{i:04d}.png"))
    return {"train": int(len(train_idx)), "val": int(len(val_idx)), "num_classes": 10}


def _settings(image_size: int, val_fraction: float, seed: int) -> dict:
    if int(image_size) != image_size or image_size < 8:
        raise DatasetError(f"image_size must be an int >= 8, got {image_size!r}")
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in (0, 1), got {val_fraction}")
    return {"image_size": int(image_size), "val_fraction": float(val_fraction), "seed": int(seed)}


def write_digits_dataset(root: str, *, image_size: int = 32, val_fraction: float = 0.2,
                         seed: int = 0) -> dict:
    """Write (or find) the digits tree under ``root``; returns ``{'train', 'val', 'num_classes', 'written'}``."""
    settings = _settings(image_size, val_fraction, seed)
    root = os.path.abspath(root)
    found = _existing(root, settings)
    if found is not None:
        return {**found, "written": False}
    with StagedDir(root, MARKER, {"settings": settings}) as stage:  # the marker is its first file
        counts = _write_tree(stage.path, settings["image_size"], settings["val_fraction"], settings["seed"])
        stage.write_marker(counts)
        if not stage.publish():  # root was filled meanwhile: another process's tree, or not ours
            found = _existing(root, settings)
            if found is None:
                raise DatasetError(f"cannot publish the digits tree at {root}")
            return {**found, "written": False}
    return {**counts, "written": True}


def find_digits_dataset(root: str, *, image_size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> Optional[dict]:
    """The finished tree ``write_digits_dataset`` would write at ``root``, or None while there is none yet
    (for processes that wait for another to write it); refuses like ``write_digits_dataset``."""
    found = _existing(os.path.abspath(root), _settings(image_size, val_fraction, seed))
    return None if found is None else {**found, "written": False}
