"""ImageNet-layout dataset pipeline: ``root/{train,val}/<class>/<image>`` -> batched float32 NCHW + labels.

``create_dataset`` reads one split with ``ImageFolderDataset(decode=False)``, orders and shards
it with an epoch-seeded sampler (``samplers.py``), applies the timm transforms of
``transforms.py`` per image, batches, and, when mixup/cutmix is on, mixes each batch
(``mixup.py``).  Columns: ``image`` float32 (B, 3, S, S); ``label`` int32 (B,) without mixing,
float32 soft targets (B, C) with mixing.  Without mixing, label smoothing is left to the loss
(``label_smoothing`` is then ignored here).  Mixing applies to training only.

Randomness and reproducibility (measured on MindSpore 2.10, CPU, ``fork`` start method):

* MindSpore forks ``map`` workers and does not reseed them unless
  ``mindspore.dataset.config.set_seed`` was called; Python's ``random`` reseeds itself after a
  fork but ``numpy.random``'s global state does not, so workers share the numpy stream (and
  repeat it run after run).  With ``set_seed(s)`` worker ``k`` gets ``random``/``numpy`` seeded
  with ``s + k``.  This module never calls ``set_seed`` (global state) and no transform here
  uses the global generators: each owns a generator seeded from
  ``(seed, epoch, shard_id)``, the transform's name and the worker index (``rng.py``), so
  workers and ranks never share an augmentation stream.
* Sample order: a pure function of ``(seed, epoch, num_shards, shard_id)``; an iterator over
  several epochs advances the sampler's epoch itself, so a run resumed at epoch ``e`` (built
  with ``epoch=e``) sees the same orders as an uninterrupted run.
* Mixup/CutMix: drawn from a generator seeded by ``(seed, shard_id, epoch, batch number)``
  inside the batch op, so it is exactly reproducible, also across a resume.
* Per-image augmentation: in multiprocessing mode (the default with more than one worker)
  ``map`` hands the rows to its worker processes round-robin (row ``i`` to worker ``i % W``),
  and each worker's generator is seeded as above, so a pipeline built twice with the same
  arguments produces the same images (checked in the tests); with one worker it runs in one
  thread and is reproducible too.  What is *not* reproduced: the per-image stream of epoch
  ``e`` in a long-running iterator continues from epoch ``e-1``, so it differs from a
  pipeline freshly built with ``epoch=e``; it changes with ``num_parallel_workers``; and with
  several threads (``python_multiprocessing=False``) it depends on thread scheduling.
  ``ds.config.set_seed`` does not affect these transforms (it only reseeds the global
  ``random``/``numpy`` generators and MindSpore's C++ random ops, none of which are used).

Errors: a missing root or split folder, a split without class folders or images, class
folders that differ between ``train`` and ``val`` and a ``num_classes`` that does not match
raise ``FileNotFoundError``/``ValueError`` naming the path and the fix.  An undecodable image
stops the iteration with MindSpore's ``RuntimeError`` whose message names the file
(``map operation: [...] failed. The corresponding data file is: <path>``), followed by the
decoder's reason.  In evaluation (C++ ``Decode``) MindSpore also writes the offending bytes to
``./abnormal_image.jpg`` or ``./unsupported_image.<ext>`` in the working directory.
"""
from __future__ import annotations

import logging
import os
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np
import mindspore.dataset as ds

from .mixup import MIX_MODES, Mixup
from .rng import derive_seed
from .samplers import DistributedShuffleSampler, RepeatedAugSampler
from .transforms import create_transforms

__all__ = ["create_dataset", "class_names", "batches", "IMAGE_EXTENSIONS", "SPLITS"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")
# ImageFolderDataset matches extensions case-sensitively; these are what vision.Decode reads.
IMAGE_EXTENSIONS: Tuple[str, ...] = tuple(
    variant for ext in (".jpg", ".jpeg", ".png", ".bmp")
    for variant in (ext, ext.upper(), ext.capitalize()))

_LAYOUT = "expected the ImageNet layout <root>/train/<class>/<image> and <root>/val/<class>/<image>"


def _split_dir(root: str, split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root {root!r} does not exist or is not a directory; {_LAYOUT} "
                                "(for the demo, write one with src.data.digits.write_digits_dataset)")
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"split folder {path!r} does not exist; {_LAYOUT}")
    return path


def class_names(root: str, split: str) -> List[str]:
    """Sorted class folder names of a split (hidden folders ignored); index = label."""
    path = _split_dir(root, split)
    names = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise ValueError(f"split folder {path!r} has no class folders; {_LAYOUT}")
    return names


def _check_other_split(root: str, split: str, names: List[str]) -> None:
    """train and val must name the same classes, or labels would silently mean different things."""
    other = "val" if split == "train" else "train"
    if not os.path.isdir(os.path.join(root, other)):
        return
    other_names = class_names(root, other)
    if other_names != names:
        only_here = sorted(set(names) - set(other_names))
        only_there = sorted(set(other_names) - set(names))
        raise ValueError(
            f"class folders differ between {os.path.join(root, split)!r} ({len(names)} classes) and "
            f"{os.path.join(root, other)!r} ({len(other_names)} classes): only in {split}: {only_here[:10]}, "
            f"only in {other}: {only_there[:10]}; both splits need the same <class> folder names")


def _count_images(path: str, class_indexing: dict) -> int:
    """Number of images MindSpore's ImageFolderDataset will read (its own scan is authoritative)."""
    probe = ds.ImageFolderDataset(path, decode=False, shuffle=False, extensions=list(IMAGE_EXTENSIONS),
                                  class_indexing=class_indexing)
    return probe.get_dataset_size()


class _MixBatch:
    """``per_batch_map`` that stacks a batch and mixes it with a (seed, shard, epoch, batch)-seeded generator."""

    def __init__(self, mixup: Mixup, *, seed: int, shard_id: int, epoch: int) -> None:
        self.mixup = mixup
        self.key = (int(seed), int(shard_id), int(epoch))

    def __call__(self, images: list, labels: list, batch_info) -> Tuple[np.ndarray, np.ndarray]:
        seed, shard, epoch = self.key
        gen = np.random.default_rng([seed, shard, epoch + batch_info.get_epoch_num(),
                                     batch_info.get_batch_num(), 0x6D6978])
        batch = np.stack(images).astype(np.float32, copy=False)  # a fresh array: mix it in place
        return self.mixup(batch, np.asarray(labels).reshape(-1), gen=gen, copy=False)


def create_dataset(root: str, split: str, *, is_training: bool, image_size: int, batch_size: int,
                   num_parallel_workers: int = 2, num_shards: int = 1, shard_id: int = 0,
                   seed: int = 0, epoch: int = 0, repeated_aug: int = 0,
                   drop_remainder: Optional[bool] = None, num_classes: Optional[int] = None,
                   mix_up: float = 0.0, cutmix: float = 0.0,
                   cutmix_minmax: Optional[Sequence[float]] = None, mixup_prob: float = 1.0,
                   switch_prob: float = 0.5, mixup_mode: str = "batch", label_smoothing: float = 0.0,
                   interpolation: str = "bicubic",
                   auto_augment: Optional[str] = "rand-m9-mstd0.5-inc1", color_jitter: float = 0.4,
                   re_prob: float = 0.25, re_mode: str = "pixel", re_count: int = 1,
                   mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
                   crop_pct: float = 0.9, scale: Sequence[float] = (0.08, 1.0),
                   ratio: Sequence[float] = (3 / 4, 4 / 3), hflip: float = 0.5,
                   python_multiprocessing: Optional[bool] = None) -> ds.Dataset:
    """Build the batched pipeline of one split (see the module docstring for columns and RNG).

    ``repeated_aug``: 0 or 1 = plain shuffled sharding, k > 1 = repeated-augmentation sampler
    with k copies of each image (DeiT/ViG use 3).  ``drop_remainder`` defaults to ``is_training``.  ``num_classes`` defaults to the
    number of class folders and must match it when given.  ``python_multiprocessing`` defaults
    to worker processes when there is more than one worker (threads hold the GIL).
    ``num_parallel_workers`` above the CPU count is lowered to it (MindSpore refuses more).
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if int(repeated_aug) != repeated_aug or repeated_aug < 0:
        raise ValueError(f"repeated_aug must be 0/1 (off) or the number of repeats, got {repeated_aug!r}")
    if int(num_parallel_workers) != num_parallel_workers or num_parallel_workers < 1:
        raise ValueError(f"num_parallel_workers must be a positive int, got {num_parallel_workers!r}")
    workers = min(int(num_parallel_workers), os.cpu_count() or 1)
    if workers < num_parallel_workers:
        logger.warning("num_parallel_workers=%d lowered to the %d CPUs of this machine",
                       num_parallel_workers, workers)
    drop_remainder = is_training if drop_remainder is None else bool(drop_remainder)

    path = _split_dir(root, split)
    names = class_names(root, split)
    _check_other_split(root, split, names)
    if num_classes is not None and num_classes != len(names):
        raise ValueError(f"num_classes={num_classes} but {path!r} has {len(names)} class folders; "
                         "set num_classes to the folder count (or fix the folders)")
    num_classes = len(names)
    class_indexing = {name: i for i, name in enumerate(names)}
    size = _count_images(path, class_indexing)
    if size == 0:
        raise ValueError(f"split folder {path!r} has class folders but no images with extensions "
                         f"{sorted(set(e.lower() for e in IMAGE_EXTENSIONS))}; {_LAYOUT}")

    if is_training and repeated_aug > 1:
        sampler = RepeatedAugSampler(size, num_shards=num_shards, shard_id=shard_id,
                                     num_repeats=repeated_aug, seed=seed, epoch=epoch)
    else:
        sampler = DistributedShuffleSampler(size, num_shards=num_shards, shard_id=shard_id,
                                            shuffle=is_training, seed=seed, epoch=epoch,
                                            pad=is_training)

    mixing = is_training and (mix_up > 0 or cutmix > 0 or cutmix_minmax is not None)
    mixup = None
    if mixing:
        mixup = Mixup(mixup_alpha=mix_up, cutmix_alpha=cutmix, cutmix_minmax=cutmix_minmax,
                      prob=mixup_prob, switch_prob=switch_prob, mode=mixup_mode,
                      label_smoothing=label_smoothing, num_classes=num_classes)
        if mixup_mode in ("pair", "elem"):
            last = len(sampler) % batch_size
            if batch_size % 2 or (not drop_remainder and last % 2):
                raise ValueError(f"mixup_mode={mixup_mode!r} needs even batches: batch_size={batch_size}, "
                                 f"drop_remainder={drop_remainder}, last batch {last or batch_size}; use an "
                                 "even batch_size with drop_remainder=True, or mixup_mode='batch'")
    elif mixup_mode not in MIX_MODES:
        raise ValueError(f"unknown mixup mode {mixup_mode!r}; expected one of {MIX_MODES}")

    ops = create_transforms(
        is_training, image_size, interpolation=interpolation, auto_augment=auto_augment,
        color_jitter=color_jitter, re_prob=re_prob, re_mode=re_mode, re_count=re_count, mean=mean,
        std=std, crop_pct=crop_pct, scale=scale, ratio=ratio, hflip=hflip,
        seed=derive_seed(seed, epoch, shard_id, "transforms") if is_training else None)
    if python_multiprocessing is None:
        python_multiprocessing = workers > 1

    data = ds.ImageFolderDataset(path, decode=False, sampler=sampler, num_parallel_workers=workers,
                                 extensions=list(IMAGE_EXTENSIONS), class_indexing=class_indexing)
    data = data.map(operations=ops, input_columns="image", num_parallel_workers=workers,
                    python_multiprocessing=python_multiprocessing)
    if mixup is not None:
        data = data.batch(batch_size, drop_remainder=drop_remainder, input_columns=["image", "label"],
                          per_batch_map=_MixBatch(mixup, seed=seed, shard_id=shard_id, epoch=epoch),
                          num_parallel_workers=1)
    else:
        data = data.batch(batch_size, drop_remainder=drop_remainder, num_parallel_workers=workers)
    return data


def batches(dataset: ds.Dataset):
    """Iterate a pipeline's (image, label) batches once. An image that cannot be decoded stops the
    iteration with one error naming the file, instead of MindSpore's multi-page pipeline traceback."""
    try:
        yield from dataset.create_tuple_iterator(num_epochs=1)
    except RuntimeError as err:
        found = re.search(r"data file is: (\S+)", str(err))
        if found is None:
            raise
        raise ValueError(f"cannot read image {found.group(1).rstrip('.')!r}: it is not a decodable image file; "
                         f"remove or replace it") from None
