"""Samplers: repeated-augmentation counts and striding, sharding, (seed, epoch) determinism, ImageFolderDataset use."""
import collections
import hashlib
import os

import numpy as np
import pytest
import mindspore.dataset as ds
from PIL import Image

from src.data.errors import DatasetError
from src.data.samplers import DistributedShuffleSampler, RepeatedAugSampler


# ------------------------------------------------------------------ repeated augmentation
def test_ra_single_shard_length_and_repeats():
    sampler = RepeatedAugSampler(1000, num_repeats=3, seed=0)
    idx = sampler.indices()
    assert len(sampler) == len(idx) == 1000 // 256 * 256  # 768
    counts = collections.Counter(idx)
    assert set(counts.values()) == {3} and len(counts) == 256
    assert all(idx[k] == idx[k + 1] == idx[k + 2] for k in range(0, 768, 3))  # copies in a row


@pytest.mark.parametrize("n, shards", [(1000, 2), (1000, 4), (777, 3), (2049, 8)])
def test_ra_per_rank_lengths_and_union(n, shards):
    per_rank = [RepeatedAugSampler(n, num_shards=shards, shard_id=r, seed=5, epoch=2) for r in range(shards)]
    expected = int(np.floor(n // 256 * 256 / shards))
    assert all(len(s) == len(s.indices()) == expected for s in per_rank)
    # before truncation the ranks split the repeated, head-padded list exactly
    full = [s.indices() for s in (RepeatedAugSampler(n, num_shards=shards, shard_id=r, seed=5, epoch=2,
                                                     selected_round=0) for r in range(shards))]
    interleaved = []
    untruncated = [np.repeat(np.random.default_rng([5, 2]).permutation(n), 3)]
    total = int(np.ceil(n * 3 / shards)) * shards
    padded = np.concatenate(untruncated + [untruncated[0][:total - 3 * n]])
    for r in range(shards):
        rank_list = padded[r::shards]
        assert full[r] == rank_list[:len(full[r])].tolist()
        interleaved.append(rank_list)
    counts = collections.Counter(np.concatenate(interleaved).tolist())
    assert all(c >= 3 for c in counts.values()) and len(counts) == n


def test_ra_copies_go_to_different_ranks():
    ranks = [RepeatedAugSampler(768, num_shards=3, shard_id=r, seed=1).indices() for r in range(3)]
    assert ranks[0] == ranks[1] == ranks[2]  # 3 repeats over 3 ranks: every rank sees each image once
    assert len(set(ranks[0])) == len(ranks[0])
    two = [RepeatedAugSampler(768, num_shards=2, shard_id=r, seed=1).indices() for r in range(2)]
    both = collections.Counter(two[0] + two[1])
    assert set(both.values()) == {3}


def test_ra_epoch_determinism_and_reset():
    a = RepeatedAugSampler(600, seed=3, epoch=4)
    b = RepeatedAugSampler(600, seed=3, epoch=4)
    assert a.indices() == b.indices()
    c = RepeatedAugSampler(600, seed=3, epoch=5)
    assert a.indices() != c.indices()
    a.reset()  # what MindSpore calls between epochs
    assert a.epoch == 5 and a.indices() == c.indices()
    a.set_epoch(4)
    assert a.indices() == b.indices()
    assert RepeatedAugSampler(600, seed=4, epoch=4).indices() != b.indices()


def test_ra_small_dataset_and_errors():
    # under 256 images per device nothing is left for an epoch: the error names the key to change
    with pytest.raises(DatasetError, match=r"repeated_aug: 3\).* 200 training images.*set repeated_aug: 0"):
        RepeatedAugSampler(200)
    small = RepeatedAugSampler(200, num_shards=2, shard_id=1, selected_round=0)
    assert len(small) == 100 == len(small.indices())
    with pytest.raises(ValueError, match="shard_id"):
        RepeatedAugSampler(1000, num_shards=2, shard_id=2)
    with pytest.raises(ValueError):
        RepeatedAugSampler(1000, num_repeats=0)
    with pytest.raises(ValueError):
        RepeatedAugSampler(0)


# ------------------------------------------------------------------ distributed shuffle
def test_distributed_disjoint_and_complete():
    ranks = [DistributedShuffleSampler(100, num_shards=4, shard_id=r, seed=0, epoch=1).indices() for r in range(4)]
    assert all(len(r) == 25 for r in ranks)
    assert sorted(sum(ranks, [])) == list(range(100))


def test_distributed_padding_and_no_padding():
    padded = [DistributedShuffleSampler(10, num_shards=4, shard_id=r, seed=0) for r in range(4)]
    assert [len(s) for s in padded] == [3] * 4
    everything = sum((s.indices() for s in padded), [])
    assert set(everything) == set(range(10)) and len(everything) == 12
    unpadded = [DistributedShuffleSampler(10, num_shards=4, shard_id=r, shuffle=False, pad=False) for r in range(4)]
    assert [s.indices() for s in unpadded] == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]
    assert [len(s) for s in unpadded] == [3, 3, 2, 2]
    tiny = DistributedShuffleSampler(2, num_shards=8, shard_id=7, shuffle=False)
    assert tiny.indices() == [1]
    with pytest.raises(ValueError, match="no sample"):
        DistributedShuffleSampler(2, num_shards=4, shard_id=3, pad=False)


def test_distributed_epoch_determinism():
    s = DistributedShuffleSampler(50, seed=7, epoch=0)
    e0 = s.indices()
    assert e0 == DistributedShuffleSampler(50, seed=7, epoch=0).indices()
    assert sorted(e0) == list(range(50)) and e0 != list(range(50))
    s.reset()
    assert s.indices() == DistributedShuffleSampler(50, seed=7, epoch=1).indices() != e0
    assert DistributedShuffleSampler(50, shuffle=False).indices() == list(range(50))


# ------------------------------------------------------------------ with ImageFolderDataset
@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory):
    """3 classes x 4 distinct PNGs; returns (train dir, md5 -> dataset index)."""
    root = tmp_path_factory.mktemp("sampler_tree")
    rng = np.random.default_rng(0)
    for c in "abc":
        os.makedirs(root / c)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (6, 7, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    index = {}
    for k, path in enumerate(sorted(str(p) for p in root.glob("*/*.png"))):  # class, then file name
        with open(path, "rb") as fh:
            index[hashlib.md5(fh.read()).hexdigest()] = k
    return str(root), index


def _yielded(dataset, index, num_epochs=1):
    it = dataset.create_tuple_iterator(num_epochs=num_epochs, output_numpy=True)
    epochs = []
    for _ in range(num_epochs):
        epochs.append([index[hashlib.md5(row[0].tobytes()).hexdigest()] for row in it])
    return epochs


def test_image_folder_dataset_follows_python_sampler(tiny_tree):
    root, index = tiny_tree
    sampler = DistributedShuffleSampler(12, num_shards=2, shard_id=1, seed=3, epoch=2)
    data = ds.ImageFolderDataset(root, decode=False, sampler=sampler)
    assert data.get_dataset_size() == 6
    (got,) = _yielded(data, index)
    assert got == sampler.indices()


def test_image_folder_dataset_advances_epochs_like_fresh_builds(tiny_tree):
    root, index = tiny_tree
    sampler = RepeatedAugSampler(12, num_repeats=3, seed=1, epoch=4, selected_round=0)
    data = ds.ImageFolderDataset(root, decode=False, sampler=sampler)
    epochs = _yielded(data, index, num_epochs=3)
    fresh = [RepeatedAugSampler(12, num_repeats=3, seed=1, epoch=e, selected_round=0).indices() for e in (4, 5, 6)]
    assert epochs == fresh
    assert sampler.epoch == 4  # MindSpore iterated a deep copy


def test_size_mismatch_is_reported(tiny_tree):
    root, _ = tiny_tree
    data = ds.ImageFolderDataset(root, decode=False, sampler=DistributedShuffleSampler(13))
    with pytest.raises(RuntimeError, match="13 samples"):
        next(data.create_tuple_iterator(num_epochs=1, output_numpy=True))

