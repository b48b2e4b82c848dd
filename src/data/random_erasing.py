"""timm 0.3.2 RandomErasing on normalised CHW float32 numpy images.

Why not MindSpore's ``vision.RandomErasing``: it is the torchvision variant (one box, a
constant or one random value), whereas the ViG recipe uses timm's ``pixel`` mode, which
fills the box with per-pixel standard-normal noise, i.e. noise in the *normalised* space.

Semantics (timm 0.3.2 ``RandomErasing``):

* with probability ``1 - probability`` the image is returned untouched;
* ``count`` boxes are erased, ``count = min_count`` if ``min_count == max_count`` else a uniform
  integer in ``[min_count, max_count]``; ``max_count=None`` means ``min_count`` (timm's
  ``re_count`` is passed as ``max_count`` with ``min_count=1``, so ``re_count=3`` erases 1-3
  boxes);
* each box gets up to 10 attempts: area ``U(min_area, max_area) * H * W / count``, aspect
  ``exp(U(log(min_aspect), log(max_aspect)))``, ``h = round(sqrt(area * aspect))``,
  ``w = round(sqrt(area / aspect))``; accepted only if ``w < W and h < H``; the top-left
  corner is uniform over all valid positions;
* fill: ``const`` zeros, ``rand`` one normal value per channel, ``pixel`` a normal value per
  element.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..choices import ERASE_MODES
from .rng import ProcessLocalRNG

__all__ = ["RandomErasing", "ERASE_MODES"]


class RandomErasing:
    """Erase random boxes of a CHW (or NCHW, per image) float array, timm semantics."""

    def __init__(self, *, probability: float = 0.5, min_area: float = 0.02, max_area: float = 1 / 3,
                 min_aspect: float = 0.3, max_aspect: Optional[float] = None, mode: str = "const",
                 min_count: int = 1, max_count: Optional[int] = None,
                 seed: Optional[int] = None) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        if not 0.0 < min_area <= max_area <= 1.0:
            raise ValueError(f"need 0 < min_area <= max_area <= 1, got ({min_area}, {max_area})")
        max_aspect = max_aspect or 1.0 / min_aspect
        if not 0.0 < min_aspect <= max_aspect:
            raise ValueError(f"need 0 < min_aspect <= max_aspect, got ({min_aspect}, {max_aspect})")
        mode = (mode or "const").lower()
        if mode not in ERASE_MODES:
            raise ValueError(f"unknown random erasing mode {mode!r}; expected one of {ERASE_MODES}")
        max_count = max_count or min_count
        if not 1 <= min_count <= max_count:
            raise ValueError(f"need 1 <= min_count <= max_count, got ({min_count}, {max_count})")
        self.probability = float(probability)
        self.min_area = float(min_area)
        self.max_area = float(max_area)
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))
        self.mode = mode
        self.min_count = int(min_count)
        self.max_count = int(max_count)
        self.rng = ProcessLocalRNG(seed, "random_erasing")

    def _erase(self, img: np.ndarray, gen: np.random.Generator) -> None:
        if gen.random() > self.probability:
            return
        chan, img_h, img_w = img.shape
        area = img_h * img_w
        count = (self.min_count if self.min_count == self.max_count
                 else int(gen.integers(self.min_count, self.max_count + 1)))
        for _ in range(count):
            for _attempt in range(10):
                target_area = gen.uniform(self.min_area, self.max_area) * area / count
                aspect = math.exp(gen.uniform(*self.log_aspect))
                h = int(round(math.sqrt(target_area * aspect)))
                w = int(round(math.sqrt(target_area / aspect)))
                if w < img_w and h < img_h:
                    top = int(gen.integers(0, img_h - h + 1))
                    left = int(gen.integers(0, img_w - w + 1))
                    img[:, top:top + h, left:left + w] = self._fill((chan, h, w), img.dtype, gen)
                    break

    def _fill(self, shape: tuple, dtype: np.dtype, gen: np.random.Generator) -> np.ndarray:
        if self.mode == "pixel":
            return gen.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
        if self.mode == "rand":
            return gen.standard_normal((shape[0], 1, 1), dtype=np.float32).astype(dtype, copy=False)
        return np.zeros((shape[0], 1, 1), dtype=dtype)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """Erase in place when the array is writeable (else on a copy) and return it."""
        if not isinstance(img, np.ndarray) or img.ndim not in (3, 4):
            raise ValueError(f"RandomErasing expects a CHW or NCHW numpy array, got "
                             f"{type(img).__name__} with shape {getattr(img, 'shape', None)}")
        if not np.issubdtype(img.dtype, np.floating):
            raise ValueError(f"RandomErasing expects a normalised float array, got dtype {img.dtype}")
        if not img.flags.writeable:
            img = img.copy()
        gen = self.rng.gen
        for one in (img if img.ndim == 4 else (img,)):
            self._erase(one, gen)
        return img

    def __repr__(self) -> str:
        return (f"RandomErasing(probability={self.probability}, area=({self.min_area}, {self.max_area}), "
                f"mode={self.mode!r}, count=({self.min_count}, {self.max_count}))")
