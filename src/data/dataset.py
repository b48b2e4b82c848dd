"""ImageNet-layout dataset pipeline: ``root/{train,val}/<class>/<image>`` -> batched float32 NCHW + labels.

``create_dataset`` lists one split (``files.py``: visible class folders and images, sorted),
orders and shards the file indices with an epoch-seeded sampler (``samplers.py``), reads and
transforms each image in the ``map`` workers (``transforms.py``), batches, and, when
``MixParams.soft_labels`` (``params.py``), mixes each batch (``mixup.py``).  Iterate it with
``batches``, which yields ``(image, label)``: ``image`` float32 (B, 3, S, S); ``label`` int32 (B,)
without mixing, float32 soft targets (B, C) with mixing.  Without mixing, label smoothing is left
to the loss (``label_smoothing`` is then ignored here).  Mixing applies to training only.  The pipeline
itself has a third column, ``bad`` (int64 (B,)): the index of an unreadable file met for that
row, else -1; ``batches`` consumes it.

Unreadable images (``files.py`` has the policy): the worker that meets one does not fail.  In
training it fills the row with the next readable image of the split (and its label), so
batch counts, the sampler's arithmetic and the ranks of a distributed run stay in step; in
evaluation the row gets label -1, which ``evaluate`` leaves out.  ``batches`` names each bad
file once, counts them and stops with one error when there are more than
``max_bad_image_fraction`` of the files read.

Randomness: the sample order, mixing and per-image augmentation are pure functions of the seed, epoch, shard
and worker (``rng.py``), so a pipeline built twice, or a resumed run, sees the same data; what MindSpore
does with worker seeds and what is not reproduced: docs/data_pipeline.md.

Errors: a missing root or split folder, a split without class folders or images, class
folders that differ between ``train`` and ``val`` and a ``num_classes`` that does not match
raise ``FileNotFoundError``/``DatasetError`` naming the path and the fix.
"""
from __future__ import annotations

import logging
import math
import os
import re
from typing import List, Optional, Tuple

import numpy as np
import mindspore.dataset as ds

from .errors import DatasetError
from .files import IMAGE_EXTENSIONS, LAYOUT, SPLITS, BadImagePolicy, ImageFiles, class_names
from .mixup import Mixup
from .params import DatasetParams, EvalTransformParams, MixParams, TrainTransformParams
from .rng import derive_seed
from .samplers import DistributedShuffleSampler, RepeatedAugSampler
from .transforms import DecodeImage, UndecodableImage, create_transforms

__all__ = ["create_dataset", "class_names", "batches", "IMAGE_EXTENSIONS", "SPLITS"]

logger = logging.getLogger(__name__)

# Training replaces an unreadable image by the next of the split; this many failing in a row is a broken dataset.
_MAX_TRIES = 16


def _check_other_split(root: str, split: str, names: List[str]) -> None:
    """train and val must name the same classes, or labels would silently mean different things."""
    other = "val" if split == "train" else "train"
    if not os.path.isdir(os.path.join(root, other)):
        return
    other_names = class_names(root, other)
    if other_names != names:
        only_here = sorted(set(names) - set(other_names))
        only_there = sorted(set(other_names) - set(names))
        raise DatasetError(
            f"class folders differ between {os.path.join(root, split)!r} ({len(names)} classes) and "
            f"{os.path.join(root, other)!r} ({len(other_names)} classes): only in {split}: {only_here[:10]}, "
            f"only in {other}: {only_there[:10]}; both splits need the same <class> folder names")


class _LoadImage:
    """``map`` op (file index, label) -> (image, label, bad): read, decode and transform one image.

    An unreadable file does not stop the pipeline: training moves on to the next file of the
    split, evaluation returns a blank image with label -1; ``bad`` is the file's index (else -1).
    """

    def __init__(self, files: ImageFiles, transform, substitute: bool, image_size: int) -> None:
        self.files = files
        self.transform = transform
        self.substitute = substitute
        self.blank = np.zeros((3, image_size, image_size), np.float32)

    def _load(self, index: int):
        try:
            return self.transform(self.files.read(index))
        except (OSError, UndecodableImage):
            return None

    def __call__(self, index, label):
        index = int(index)
        image = self._load(index)
        if image is not None:
            return image, label, np.int64(-1)
        if not self.substitute:
            return self.blank, np.int32(-1), np.int64(index)
        for step in range(1, _MAX_TRIES):
            other = (index + step) % len(self.files)
            image = self._load(other)
            if image is not None:
                return image, self.files.labels[other], np.int64(index)
        raise DatasetError(f"{_MAX_TRIES} images in a row from {self.files.path(index)!r} on cannot be read; "
                           "is the dataset damaged?")


def _explain(files: ImageFiles, decode: DecodeImage):
    """Why file ``i`` cannot be used (read and decoded again in the main process, once per bad file)."""
    def explain(index: int) -> str:
        try:
            decode(files.read(index))
        except OSError as err:
            return f"cannot be read ({err.strerror or err})"
        except UndecodableImage as err:
            return str(err)
        return "it failed in a data worker but decodes here"
    return explain


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


def create_dataset(root: str, split: str, transform: EvalTransformParams, *, batch_size: int,
                   augment: Optional[TrainTransformParams] = None, mix: Optional[MixParams] = None,
                   options: DatasetParams = DatasetParams(), num_classes: Optional[int] = None,
                   num_shards: int = 1, shard_id: int = 0, seed: int = 0, epoch: int = 0,
                   drop_remainder: Optional[bool] = None,
                   python_multiprocessing: Optional[bool] = None) -> ds.Dataset:
    """Build the batched pipeline of one split (see the module docstring for columns and RNG).

    ``transform``: the evaluation transform; with ``augment`` the pipeline is a training one (the
    random steps of ``augment`` at ``transform``'s size and normalisation, shuffled and padded
    shards, an unreadable image replaced by the next one) and ``mix`` mixes its batches when
    ``mix.soft_labels``.  ``options``: workers, repeated augmentation (0 or 1 = plain shuffled
    sharding, k > 1 = k copies of each image, DeiT/ViG use 3) and the unreadable-image policy
    (``max_bad_image_fraction``, see ``batches``; ``max_image_pixels``, the decompression-bomb
    guard).  ``drop_remainder`` defaults to training.  ``num_classes`` defaults to the number of
    class folders and must match it when given.  ``python_multiprocessing`` defaults to worker
    processes when there is more than one worker (threads hold the GIL).  ``num_parallel_workers``
    above the CPU count is lowered to it (MindSpore refuses more).
    """
    is_training = augment is not None
    if mix is not None and not is_training:
        raise ValueError("mixing applies to training batches only: pass augment too, or no mix")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    workers = _worker_count(options.num_parallel_workers)
    drop_remainder = is_training if drop_remainder is None else bool(drop_remainder)
    files = _split_files(root, split, num_classes)
    size = len(files)
    sampler = _sampler(size, options.repeated_aug, training=is_training, num_shards=num_shards, shard_id=shard_id,
                       seed=seed, epoch=epoch)
    mixup = _mixer(mix, len(files.classes), len(sampler), batch_size, drop_remainder)

    steps_seed = derive_seed(seed, epoch, shard_id, "transforms") if is_training else None
    (steps,) = create_transforms(transform, augment, seed=steps_seed, max_image_pixels=options.max_image_pixels)
    if python_multiprocessing is None:
        python_multiprocessing = workers > 1

    data = ds.NumpySlicesDataset((np.arange(size, dtype=np.int64), files.labels), column_names=["file", "label"],
                                 sampler=sampler)
    data = data.map(operations=_LoadImage(files, steps, is_training, transform.image_size),
                    input_columns=["file", "label"], output_columns=["image", "label", "bad"],
                    num_parallel_workers=workers, python_multiprocessing=python_multiprocessing)
    if mixup is not None:
        data = data.batch(batch_size, drop_remainder=drop_remainder, input_columns=["image", "label"],
                          per_batch_map=_MixBatch(mixup, seed=seed, shard_id=shard_id, epoch=epoch),
                          num_parallel_workers=1)
    else:
        data = data.batch(batch_size, drop_remainder=drop_remainder, num_parallel_workers=workers)
    # distinct files this pass reads: the shard's share (the sampler pads or repeats some)
    explain = _explain(files, DecodeImage(options.max_image_pixels))
    data.bad_image_policy = BadImagePolicy(files, options.max_bad_image_fraction, explain,
                                           expected=min(size, math.ceil(size / num_shards)))
    return data


def _worker_count(num_parallel_workers: int) -> int:
    """The pipeline's workers: ``num_parallel_workers`` lowered to the CPU count (MindSpore refuses more)."""
    if int(num_parallel_workers) != num_parallel_workers or num_parallel_workers < 1:
        raise ValueError(f"num_parallel_workers must be a positive int, got {num_parallel_workers!r}")
    workers = min(int(num_parallel_workers), os.cpu_count() or 1)
    if workers < num_parallel_workers:
        logger.warning("num_parallel_workers=%d lowered to the %d CPUs of this machine",
                       num_parallel_workers, workers)
    return workers


def _split_files(root: str, split: str, num_classes: Optional[int]) -> ImageFiles:
    """The images of ``root/split``, checked against the other split's classes and ``num_classes``."""
    names = class_names(root, split)
    _check_other_split(root, split, names)
    path = os.path.join(root, split)
    if num_classes is not None and num_classes != len(names):
        raise DatasetError(f"num_classes={num_classes} but {path!r} has {len(names)} class folders; "
                           "set num_classes to the folder count (or fix the folders)")
    files = ImageFiles(root, split, names)
    if len(files) == 0:
        raise DatasetError(f"split folder {path!r} has class folders but no images with extensions "
                           f"{list(IMAGE_EXTENSIONS)} (any case); {LAYOUT}")
    return files


def _sampler(size: int, repeated_aug: int, *, training: bool, num_shards: int, shard_id: int, seed: int, epoch: int):
    """For training, repeated augmentation (``repeated_aug`` > 1 copies of each image, DeiT's sampler) or shuffled
    and padded shards; for evaluation, shards in order without padding."""
    if int(repeated_aug) != repeated_aug or repeated_aug < 0:
        raise ValueError(f"repeated_aug must be 0/1 (off) or the number of repeats, got {repeated_aug!r}")
    if training and repeated_aug > 1:
        return RepeatedAugSampler(size, num_shards=num_shards, shard_id=shard_id, num_repeats=repeated_aug,
                                  seed=seed, epoch=epoch)
    return DistributedShuffleSampler(size, num_shards=num_shards, shard_id=shard_id, shuffle=training, seed=seed,
                                     epoch=epoch, pad=training)


def _mixer(mix: Optional[MixParams], num_classes: int, samples: int, batch_size: int,
           drop_remainder: bool) -> Optional[Mixup]:
    """The batches' mixup/cutmix (None without soft labels); pair and element modes need even batches."""
    if mix is None or not mix.soft_labels:
        return None
    if mix.mixup_mode in ("pair", "elem"):
        last = samples % batch_size
        if batch_size % 2 or (not drop_remainder and last % 2):
            raise DatasetError(f"mixup_mode={mix.mixup_mode!r} needs even batches: batch_size={batch_size}, "
                               f"drop_remainder={drop_remainder}, last batch {last or batch_size}; use an "
                               "even batch_size with drop_remainder=True, or mixup_mode='batch'")
    return Mixup(mixup_alpha=mix.mix_up, cutmix_alpha=mix.cutmix, prob=mix.mixup_prob, switch_prob=mix.switch_prob,
                 mode=mix.mixup_mode, label_smoothing=mix.label_smoothing, num_classes=num_classes)


def batches(dataset: ds.Dataset):
    """Iterate a pipeline of ``create_dataset`` once as (image, label) batches.

    Unreadable images met on the way are named (once per file and process), counted, and
    summarised at the end; more than ``max_bad_image_fraction`` of them stops the iteration
    with one ``BadImagesError``.  A ``DatasetError`` raised inside the pipeline's workers comes out as
    that one error instead of MindSpore's multi-page report.
    """
    policy: BadImagePolicy = dataset.bad_image_policy
    try:
        for images, labels, bad in dataset.create_tuple_iterator(num_epochs=1):
            found = bad.asnumpy()
            if found.max() >= 0:
                policy.add(found)
            yield images, labels
    except RuntimeError as err:
        found = re.findall(r"^(?:[\w.]+\.)?DatasetError: (.+)$", str(err), re.MULTILINE)
        if not found:
            raise
        raise DatasetError(found[-1]) from None  # the last: MindSpore may quote the traceback's header first
    policy.summary()
