"""timm 0.3.2 Mixup / CutMix on numpy batches, producing label-smoothed soft targets.

Why not MindSpore's ``MixUpBatch`` / ``CutMixBatch``: they need one-hot labels, have no
``switch_prob``, no ``pair``/``elem`` modes and no cut-area lambda correction.  This module
reproduces timm's ``Mixup`` class (the non-prefetcher path of timm's train loop):

* ``mode='batch'``: one ``lam`` (and one mixup-vs-cutmix choice) for the whole batch;
  ``'pair'``: one per pair ``(i, B-1-i)``, both members mixed with each other;
  ``'elem'``: one per element, each mixed with its mirror ``B-1-i`` (taken from the unmixed batch);
* with probability ``prob`` a batch/element is mixed at all; if both alphas are > 0, cutmix is
  chosen with probability ``switch_prob``; ``lam ~ Beta(alpha, alpha)``;
* cutmix pastes the mirror's box; the box is a ``sqrt(1-lam)``-scaled rectangle centred at a
  uniform point and clipped at the borders (or, with ``cutmix_minmax``, a box whose sides are
  uniform fractions of the image); ``correct_lam`` (always on with minmax) recomputes
  ``lam = 1 - box_area / image_area`` from the clipped box;
* targets: ``lam * smooth(y) + (1 - lam) * smooth(y_mirror)`` with ``off = s / C`` and
  ``on = 1 - s + off``.

Batch sizes must be even for ``pair`` and ``elem`` (timm asserts even sizes in every mode;
``batch`` mode is well defined for odd sizes, the middle sample mixing with itself, and is
allowed here).  Without mixing (both alphas 0 and no minmax) this class refuses to be built:
the data pipeline then yields integer labels and label smoothing is done by the loss, which
is equivalent to ``one_hot_smoothed``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..choices import MIX_MODES
from .rng import ProcessLocalRNG

__all__ = ["Mixup", "one_hot_smoothed", "mixup_target", "rand_bbox", "rand_bbox_minmax",
           "cutmix_bbox_and_lam", "MIX_MODES"]

Box = Tuple[int, int, int, int]  # (y_low, y_high, x_low, x_high)


def one_hot_smoothed(labels: np.ndarray, num_classes: int, smoothing: float = 0.0) -> np.ndarray:
    """timm's smoothed one-hot: ``off = s / C``, ``on = 1 - s + off`` (float32, rows sum to 1)."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got range "
                         f"[{labels.min()}, {labels.max()}]")
    off = smoothing / num_classes
    out = np.full((labels.size, num_classes), off, dtype=np.float32)
    out[np.arange(labels.size), labels] = 1.0 - smoothing + off
    return out


def mixup_target(labels: np.ndarray, num_classes: int, lam: Union[float, np.ndarray] = 1.0,
                 smoothing: float = 0.0) -> np.ndarray:
    """Soft targets mixing each label with its mirror ``B-1-i`` by ``lam`` (scalar or (B, 1))."""
    labels = np.asarray(labels).reshape(-1)
    y1 = one_hot_smoothed(labels, num_classes, smoothing)
    y2 = one_hot_smoothed(labels[::-1], num_classes, smoothing)
    lam = np.asarray(lam, dtype=np.float32)
    return (y1 * lam + y2 * (np.float32(1.0) - lam)).astype(np.float32)


def rand_bbox(img_shape: Sequence[int], lam: float, gen: np.random.Generator) -> Box:
    """timm's standard CutMix box: side ``sqrt(1-lam)``, uniform centre, clipped to the image."""
    img_h, img_w = img_shape[-2:]
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(img_h * ratio), int(img_w * ratio)
    cy = int(gen.integers(0, img_h))
    cx = int(gen.integers(0, img_w))
    yl = int(np.clip(cy - cut_h // 2, 0, img_h))
    yh = int(np.clip(cy + cut_h // 2, 0, img_h))
    xl = int(np.clip(cx - cut_w // 2, 0, img_w))
    xh = int(np.clip(cx + cut_w // 2, 0, img_w))
    return yl, yh, xl, xh


def rand_bbox_minmax(img_shape: Sequence[int], minmax: Sequence[float], gen: np.random.Generator) -> Box:
    """timm's min-max CutMix box: sides uniform in [min, max) of the image sides, fully inside."""
    img_h, img_w = img_shape[-2:]
    cut_h = int(gen.integers(int(img_h * minmax[0]), int(img_h * minmax[1])))
    cut_w = int(gen.integers(int(img_w * minmax[0]), int(img_w * minmax[1])))
    yl = int(gen.integers(0, img_h - cut_h))
    xl = int(gen.integers(0, img_w - cut_w))
    return yl, yl + cut_h, xl, xl + cut_w


def cutmix_bbox_and_lam(img_shape: Sequence[int], lam: float, gen: np.random.Generator, *,
                        ratio_minmax: Optional[Sequence[float]] = None,
                        correct_lam: bool = True) -> Tuple[Box, float]:
    """A CutMix box and the lambda that matches it (corrected for clipping if asked)."""
    if ratio_minmax is not None:
        box = rand_bbox_minmax(img_shape, ratio_minmax, gen)
    else:
        box = rand_bbox(img_shape, lam, gen)
    if correct_lam or ratio_minmax is not None:
        yl, yh, xl, xh = box
        lam = 1.0 - (yh - yl) * (xh - xl) / float(img_shape[-2] * img_shape[-1])
    return box, float(lam)


class Mixup:
    """timm Mixup/CutMix for a float32 NCHW batch and int labels -> (images, soft targets)."""

    def __init__(self, *, mixup_alpha: float = 1.0, cutmix_alpha: float = 0.0,
                 cutmix_minmax: Optional[Sequence[float]] = None, prob: float = 1.0,
                 switch_prob: float = 0.5, mode: str = "batch", correct_lam: bool = True,
                 label_smoothing: float = 0.1, num_classes: int = 1000,
                 seed: Optional[int] = None) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2 or not 0.0 < cutmix_minmax[0] < cutmix_minmax[1] <= 1.0:
                raise ValueError(f"cutmix_minmax must be (min, max) with 0 < min < max <= 1, got {cutmix_minmax}")
            cutmix_alpha = 1.0  # as timm: minmax forces cutmix on with alpha 1
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError("Mixup needs mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax; with mixing "
                             "off, do not use Mixup (the pipeline yields int labels and the loss smooths them)")
        if not 0.0 <= prob <= 1.0 or not 0.0 <= switch_prob <= 1.0:
            raise ValueError(f"prob and switch_prob must be in [0, 1], got {prob}, {switch_prob}")
        if mode not in MIX_MODES:
            raise ValueError(f"unknown mixup mode {mode!r}; expected one of {MIX_MODES}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes}")
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.cutmix_minmax = None if cutmix_minmax is None else tuple(float(v) for v in cutmix_minmax)
        self.prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.mode = mode
        self.correct_lam = bool(correct_lam)
        self.label_smoothing = float(label_smoothing)
        self.num_classes = int(num_classes)
        self.rng = ProcessLocalRNG(seed, "mixup")

    # -- parameter draws (timm's _params_per_elem / _params_per_batch) --
    def _params_per_elem(self, n: int, gen: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        use_cutmix = np.zeros(n, dtype=bool)
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = gen.random(n) < self.switch_prob
            lam_mix = np.where(use_cutmix, gen.beta(self.cutmix_alpha, self.cutmix_alpha, size=n),
                               gen.beta(self.mixup_alpha, self.mixup_alpha, size=n))
        elif self.mixup_alpha > 0:
            lam_mix = gen.beta(self.mixup_alpha, self.mixup_alpha, size=n)
        else:
            use_cutmix = np.ones(n, dtype=bool)
            lam_mix = gen.beta(self.cutmix_alpha, self.cutmix_alpha, size=n)
        lam = np.where(gen.random(n) < self.prob, lam_mix.astype(np.float32), np.float32(1.0))
        return lam.astype(np.float32), use_cutmix

    def _params_per_batch(self, gen: np.random.Generator) -> Tuple[float, bool]:
        if gen.random() >= self.prob:
            return 1.0, False
        use_cutmix = False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(gen.random() < self.switch_prob)
            alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        elif self.mixup_alpha > 0:
            alpha = self.mixup_alpha
        else:
            use_cutmix, alpha = True, self.cutmix_alpha
        return float(gen.beta(alpha, alpha)), use_cutmix

    def _box(self, shape: Sequence[int], lam: float, gen: np.random.Generator) -> Tuple[Box, float]:
        return cutmix_bbox_and_lam(shape, lam, gen, ratio_minmax=self.cutmix_minmax,
                                   correct_lam=self.correct_lam)

    # -- mixing --
    def _mix_batch(self, x: np.ndarray, gen: np.random.Generator) -> float:
        lam, use_cutmix = self._params_per_batch(gen)
        if lam == 1.0:
            return 1.0
        if use_cutmix:
            (yl, yh, xl, xh), lam = self._box(x.shape, lam, gen)
            x[:, :, yl:yh, xl:xh] = x[::-1, :, yl:yh, xl:xh].copy()
        else:
            flipped = x[::-1].copy()
            flipped *= np.float32(1.0 - lam)
            x *= np.float32(lam)
            x += flipped
        return lam

    def _mix_per_sample(self, x: np.ndarray, gen: np.random.Generator, pairs: bool) -> np.ndarray:
        """``elem``: sample i takes in sample n-1-i with its own lam; ``pair``: samples i and n-1-i
        take in each other with one shared lam (and box). Returns the per-sample lam, (B, 1)."""
        n = len(x)
        count = n // 2 if pairs else n
        lam_batch, use_cutmix = self._params_per_elem(count, gen)
        x_orig = x.copy()
        for i in range(count):
            j = n - i - 1
            lam = float(lam_batch[i])
            if lam == 1.0:
                continue
            moves = ((i, j), (j, i)) if pairs else ((i, j),)
            if use_cutmix[i]:
                (yl, yh, xl, xh), lam = self._box(x[i].shape, lam, gen)
                for dst, src in moves:
                    x[dst][:, yl:yh, xl:xh] = x_orig[src][:, yl:yh, xl:xh]
                lam_batch[i] = lam
            else:
                for dst, src in moves:
                    x[dst] = x[dst] * np.float32(lam) + x_orig[src] * np.float32(1.0 - lam)
        return (np.concatenate((lam_batch, lam_batch[::-1])) if pairs else lam_batch)[:, None]

    def __call__(self, images: np.ndarray, labels: np.ndarray, *,
                 gen: Optional[np.random.Generator] = None,
                 copy: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """Mix a batch; returns (float32 images, float32 (B, num_classes) targets).

        ``gen`` overrides the module's own per-process generator (the data pipeline passes
        one seeded by (seed, epoch, batch number) so that mixing is exactly reproducible).
        ``copy=False`` lets a float32 input array be mixed in place.
        """
        images = np.asarray(images)
        labels = np.asarray(labels).reshape(-1)
        if images.ndim != 4:
            raise ValueError(f"Mixup expects an NCHW batch, got shape {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if len(images) == 0:
            raise ValueError("Mixup got an empty batch")
        if self.mode in ("pair", "elem") and len(images) % 2:
            raise ValueError(f"mixup mode {self.mode!r} needs an even batch size, got {len(images)}; "
                             "use an even batch_size with drop_remainder=True, or mode='batch'")
        x = np.array(images, dtype=np.float32, copy=copy)
        gen = self.rng.gen if gen is None else gen
        if self.mode == "elem":
            lam = self._mix_per_sample(x, gen, pairs=False)
        elif self.mode == "pair":
            lam = self._mix_per_sample(x, gen, pairs=True)
        else:
            lam = self._mix_batch(x, gen)
        targets = mixup_target(labels, self.num_classes, lam, self.label_smoothing)
        return x, targets

    def __repr__(self) -> str:
        return (f"Mixup(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
                f"cutmix_minmax={self.cutmix_minmax}, prob={self.prob}, switch_prob={self.switch_prob}, "
                f"mode={self.mode!r}, correct_lam={self.correct_lam}, "
                f"label_smoothing={self.label_smoothing}, num_classes={self.num_classes})")
