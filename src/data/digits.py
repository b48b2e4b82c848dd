"""Write scikit-learn's bundled handwritten digits as an ImageNet-style folder tree (the demo data).

Why: the project's one-command demo must train and evaluate without a network or a
download.  ``sklearn.datasets.load_digits`` ships 1,797 8x8 grey images of 10 classes inside
the scikit-learn wheel.  They are written as RGB PNGs, upscaled with bicubic resampling, to
``root/train/<digit>/<index>.png`` and ``root/val/<digit>/<index>.png`` (a stratified held-out
split), which ``create_dataset`` then reads like ImageNet.

A finished tree carries ``root/digits.json`` (settings and counts, written last).  A later
call with the same settings only checks the file counts and returns; a call with other
settings refuses to mix two trees.  The tree is built in a temporary sibling directory and
renamed into place, so concurrent callers (e.g. several ranks) never see half a tree.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Dict

import numpy as np
from PIL import Image

__all__ = ["write_digits_dataset", "MARKER"]

MARKER = "digits.json"


def _count_pngs(root: str) -> Dict[str, int]:
    counts = {}
    for split in ("train", "val"):
        total = 0
        split_dir = os.path.join(root, split)
        if os.path.isdir(split_dir):
            for cls in os.listdir(split_dir):
                cls_dir = os.path.join(split_dir, cls)
                if os.path.isdir(cls_dir):
                    total += sum(1 for f in os.listdir(cls_dir) if f.endswith(".png"))
        counts[split] = total
    return counts


def _existing(root: str, settings: dict) -> Dict[str, int] | None:
    """Counts of a complete tree with the same settings, None if there is none yet."""
    marker = os.path.join(root, MARKER)
    if not os.path.isfile(marker):
        return None
    with open(marker, encoding="utf-8") as fh:
        info = json.load(fh)
    if info.get("settings") != settings:
        raise ValueError(f"{root} already holds a digits tree written with {info.get('settings')}, "
                         f"not {settings}; use another root or delete {root}")
    counts = _count_pngs(root)
    if counts["train"] != info["train"] or counts["val"] != info["val"]:
        raise RuntimeError(f"the digits tree in {root} is damaged ({counts} files, {MARKER} says "
                           f"train={info['train']}, val={info['val']}); delete {root} and run again")
    return {"train": info["train"], "val": info["val"], "num_classes": info["num_classes"]}


def _write_tree(dest: str, image_size: int, val_fraction: float, seed: int, settings: dict) -> dict:
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
    info = {"settings": settings, "train": int(len(train_idx)), "val": int(len(val_idx)),
            "num_classes": 10}
    with open(os.path.join(dest, MARKER), "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1)
    return {"train": info["train"], "val": info["val"], "num_classes": 10}


def write_digits_dataset(root: str, *, image_size: int = 32, val_fraction: float = 0.2,
                         seed: int = 0) -> dict:
    """Write (or find) the digits tree under ``root``; returns ``{'train', 'val', 'num_classes', 'written'}``."""
    if int(image_size) != image_size or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    settings = {"image_size": int(image_size), "val_fraction": float(val_fraction), "seed": int(seed)}
    root = os.path.abspath(root)
    found = _existing(root, settings)
    if found is not None:
        return {**found, "written": False}
    if os.path.isdir(root) and any(os.scandir(root)):
        leftovers = [e.name for e in os.scandir(root)]
        if set(leftovers) - {"train", "val"}:
            raise ValueError(f"{root} is not empty and holds no complete digits tree ({sorted(leftovers)[:5]}); "
                             "use an empty or new directory")
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    # not tempfile.mkdtemp: its 0700 mode would end up on the renamed root
    tmp = os.path.join(parent, f".{os.path.basename(root)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        counts = _write_tree(tmp, int(image_size), float(val_fraction), int(seed), settings)
        if os.path.isdir(root):
            # an empty root or an interrupted earlier attempt: replace its split folders
            for split in ("train", "val"):
                shutil.rmtree(os.path.join(root, split), ignore_errors=True)
            for name in ("train", "val", MARKER):
                os.replace(os.path.join(tmp, name), os.path.join(root, name))
        else:
            try:
                os.rename(tmp, root)
            except OSError:  # another process finished first
                found = _existing(root, settings)
                if found is None:
                    raise
                return {**found, "written": False}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**counts, "written": True}
