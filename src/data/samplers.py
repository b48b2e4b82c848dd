"""Epoch-seeded samplers for the image pipeline (``create_dataset``): repeated augmentation and distributed shuffle.

Why these exist: MindSpore's built-in ``DistributedSampler`` reshuffles from its own seed
state, so a run restarted at epoch ``e`` cannot reproduce the order an uninterrupted run saw
at epoch ``e``; and there is no repeated-augmentation sampler.  Both samplers here compute
their order from ``(seed, epoch)`` alone.

How MindSpore drives a Python sampler (checked on 2.10): the dataset deep-copies the sampler
when an iterator is created (calling ``set_epoch`` on the original afterwards has no effect
on that iterator); the copy's ``__iter__`` is called once per epoch and ``reset()`` between
epochs.  ``reset()`` therefore advances the epoch, so an iterator created with
``num_epochs=k`` from a sampler at epoch ``e`` visits the orders of epochs ``e .. e+k-1``,
exactly what ``k`` separately built pipelines with ``epoch=e, e+1, ...`` would see.  The
indices address the dataset's files sorted by class folder, then by file name.

* :class:`RepeatedAugSampler` - DeiT/timm ``RASampler``: a seeded permutation, every index
  repeated ``num_repeats`` times in a row, padded with its own head to a multiple of
  ``num_shards``, rank ``r`` takes positions ``r, r + num_shards, ...`` (so the copies of one
  image land on consecutive ranks) and yields only its first
  ``floor(N // 256 * 256 / num_shards)`` indices, so one epoch has about ``N`` samples in total.
* :class:`DistributedShuffleSampler` - ``torch.utils.data.DistributedSampler`` semantics: a
  seeded permutation (or identity), padded with its head to a multiple of ``num_shards``
  (unless ``pad=False``), rank ``r`` takes positions ``r::num_shards``.
"""
from __future__ import annotations

import math
from typing import Iterator, List

import numpy as np

from .errors import DatasetError
import mindspore.dataset as ds

__all__ = ["RepeatedAugSampler", "DistributedShuffleSampler"]


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class _EpochSampler(ds.Sampler):
    """Common part: size/shard validation, (seed, epoch) permutation, epoch bookkeeping."""

    def __init__(self, dataset_size: int, *, num_shards: int, shard_id: int, shuffle: bool,
                 seed: int, epoch: int) -> None:
        self.size = _check_int("dataset_size", dataset_size, 1)
        self.num_shards = _check_int("num_shards", num_shards, 1)
        self.shard_id = _check_int("shard_id", shard_id, 0)
        if self.shard_id >= self.num_shards:
            raise ValueError(f"shard_id must be < num_shards ({self.num_shards}), got {shard_id}")
        self.shuffle = bool(shuffle)
        self.seed = _check_int("seed", seed, 0)
        self.epoch = _check_int("epoch", epoch, 0)
        self._setup()
        super().__init__()  # sets num_samples = len(self)

    def _setup(self) -> None:
        """Compute the per-shard sizes (subclasses)."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = _check_int("epoch", epoch, 0)

    def reset(self) -> None:
        """Called by MindSpore between the epochs of one iterator: move to the next epoch."""
        self.epoch += 1

    def _base_order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size, dtype=np.int64)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.size)

    @staticmethod
    def _pad_with_head(order: np.ndarray, total: int) -> np.ndarray:
        while len(order) < total:  # tiny datasets may need the head more than once
            order = np.concatenate([order, order[:total - len(order)]])
        return order

    def _check_handshake(self) -> None:
        # MindSpore tells the sampler the real dataset size before iterating.
        if self.dataset_size and self.dataset_size != self.size:
            raise RuntimeError(f"{type(self).__name__} was built for {self.size} samples but the "
                               f"dataset has {self.dataset_size}; rebuild the sampler")

    def indices(self) -> List[int]:
        """The indices of the current epoch for this shard (without advancing the epoch)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        self._check_handshake()
        return iter(self.indices())


class RepeatedAugSampler(_EpochSampler):
    """Repeated-augmentation sampler (DeiT ``RASampler``), deterministic in (seed, epoch)."""

    def __init__(self, dataset_size: int, *, num_shards: int = 1, shard_id: int = 0,
                 num_repeats: int = 3, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                 selected_round: int = 256) -> None:
        self.num_repeats = _check_int("num_repeats", num_repeats, 1)
        self.selected_round = _check_int("selected_round", selected_round, 0)
        super().__init__(dataset_size, num_shards=num_shards, shard_id=shard_id, shuffle=shuffle,
                         seed=seed, epoch=epoch)

    def _setup(self) -> None:
        n, shards = self.size, self.num_shards
        self.num_per_shard = math.ceil(n * self.num_repeats / shards)
        self.total_size = self.num_per_shard * shards
        if self.selected_round:
            self.num_selected = int(math.floor(n // self.selected_round * self.selected_round / shards))
        else:
            self.num_selected = int(math.ceil(n / shards))
        if self.num_selected == 0:
            raise DatasetError(
                f"repeated augmentation (repeated_aug: {self.num_repeats}) takes each epoch a multiple of "
                f"{self.selected_round} of the {n} training images, as DeiT's sampler does, which leaves none for "
                f"{shards} device(s); set repeated_aug: 0 for a training split this small")

    def __len__(self) -> int:
        return self.num_selected

    def indices(self) -> List[int]:
        order = self._pad_with_head(np.repeat(self._base_order(), self.num_repeats), self.total_size)
        mine = order[self.shard_id:self.total_size:self.num_shards]
        return mine[:self.num_selected].tolist()


class DistributedShuffleSampler(_EpochSampler):
    """Sharded (optionally shuffled) sampler, deterministic in (seed, epoch)."""

    def __init__(self, dataset_size: int, *, num_shards: int = 1, shard_id: int = 0,
                 shuffle: bool = True, seed: int = 0, epoch: int = 0, pad: bool = True) -> None:
        self.pad = bool(pad)
        super().__init__(dataset_size, num_shards=num_shards, shard_id=shard_id, shuffle=shuffle,
                         seed=seed, epoch=epoch)

    def _setup(self) -> None:
        if self.pad:
            self.num_per_shard = math.ceil(self.size / self.num_shards)
            self.total_size = self.num_per_shard * self.num_shards
        else:
            self.num_per_shard = len(range(self.shard_id, self.size, self.num_shards))
            self.total_size = self.size
        if self.num_per_shard == 0:
            raise ValueError(f"shard {self.shard_id} of {self.num_shards} gets no sample of a "
                             f"{self.size}-sample dataset without padding; use pad=True or fewer shards")

    def __len__(self) -> int:
        return self.num_per_shard

    def indices(self) -> List[int]:
        order = self._base_order()
        if self.pad:
            order = self._pad_with_head(order, self.total_size)
        return order[self.shard_id:self.total_size:self.num_shards].tolist()
