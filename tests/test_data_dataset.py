"""End to end: digits tree -> create_dataset batches, soft labels, determinism, worker streams, errors."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from src.data.dataset import class_names, create_dataset
from src.data.digits import write_digits_dataset
from src.data.params import DatasetParams, EvalTransformParams, MixParams, TrainTransformParams

SIZE = 16
IMAGE = EvalTransformParams(image_size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # inputs in [-1, 1]
FAST = dict(options=DatasetParams(num_parallel_workers=1))
TRAIN = dict(augment=TrainTransformParams(), **FAST)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data") / "digits")
    info = write_digits_dataset(root, image_size=SIZE)
    return root, info


def _batches(data, n=None, num_epochs=1):
    """(image, label) of the first n batches; the pipeline's third column (unreadable files) is checked empty."""
    it = data.create_tuple_iterator(num_epochs=num_epochs, output_numpy=True)
    out = []
    for k, (images, labels, bad) in enumerate(it):
        if n is not None and k >= n:
            break
        assert np.all(bad == -1)
        out.append((images, labels))
    return out


# ------------------------------------------------------------------ digits writer
def test_digits_tree(digits, tmp_path):
    root, info = digits
    assert info == {"train": 1437, "val": 360, "num_classes": 10, "written": True}
    assert class_names(root, "train") == class_names(root, "val") == [str(d) for d in range(10)]
    val_counts = [len(os.listdir(os.path.join(root, "val", str(d)))) for d in range(10)]
    assert sum(val_counts) == 360 and min(val_counts) >= 35  # stratified: ~36 per digit
    img = Image.open(os.path.join(root, "train", "3", sorted(os.listdir(os.path.join(root, "train", "3")))[0]))
    assert img.mode == "RGB" and img.size == (SIZE, SIZE)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(root).st_mode & 0o777 == 0o777 & ~umask  # the renamed temporary dir keeps normal permissions
    again = write_digits_dataset(root, image_size=SIZE)
    assert again == {**info, "written": False}
    with pytest.raises(ValueError, match="already holds"):
        write_digits_dataset(root, image_size=SIZE + 1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="only into a new or empty folder"):
        write_digits_dataset(str(tmp_path / "other"))


# ------------------------------------------------------------------ batches
def test_train_batches_int_labels(digits):
    root, _ = digits
    data = create_dataset(root, "train", IMAGE, batch_size=32, **TRAIN)
    assert data.get_dataset_size() == 1437 // 32
    images, labels = _batches(data, n=3)[0]
    assert images.shape == (32, 3, SIZE, SIZE) and images.dtype == np.float32
    assert labels.shape == (32,) and labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() < 10 and len(set(labels.tolist())) > 3


def test_train_batches_soft_labels_with_mixup(digits):
    root, _ = digits
    mix = MixParams(mix_up=0.8, cutmix=1.0, label_smoothing=0.1)
    data = create_dataset(root, "train", IMAGE, batch_size=16, mix=mix, num_classes=10, **TRAIN)
    for images, targets in _batches(data, n=4):
        assert images.shape == (16, 3, SIZE, SIZE) and images.dtype == np.float32
        assert targets.shape == (16, 10) and targets.dtype == np.float32
        np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-5)
        assert targets.min() >= 0.01 - 1e-6 and targets.max() <= 0.91 + 1e-6


def test_eval_batches_in_folder_order(digits):
    root, _ = digits
    data = create_dataset(root, "val", IMAGE, batch_size=50, **FAST)
    batches = _batches(data)
    assert [len(b[1]) for b in batches] == [50] * 7 + [10]
    labels = np.concatenate([b[1] for b in batches])
    assert np.all(np.diff(labels) >= 0)  # not shuffled: class by class
    images = batches[0][0]
    assert images.shape == (50, 3, SIZE, SIZE) and images.min() >= -1 and images.max() <= 1


def test_sharding_and_repeated_aug_sizes(digits):
    root, _ = digits
    shards = [create_dataset(root, "val", IMAGE, batch_size=10, num_shards=3, shard_id=r, **FAST) for r in range(3)]
    assert [d.get_dataset_size() for d in shards] == [12, 12, 12]
    ra = create_dataset(root, "train", IMAGE, batch_size=8, augment=TrainTransformParams(),
                        options=DatasetParams(num_parallel_workers=1, repeated_aug=3), num_shards=2, shard_id=1)
    assert ra.get_dataset_size() == (1437 // 256 * 256 // 2) // 8
    off = create_dataset(root, "train", IMAGE, batch_size=8, augment=TrainTransformParams(),
                         options=DatasetParams(num_parallel_workers=1, repeated_aug=1))
    assert off.get_dataset_size() == 1437 // 8  # one copy = no repeated augmentation


# ------------------------------------------------------------------ determinism
def test_same_seed_and_epoch_same_batches(digits):
    root, _ = digits
    kw = dict(batch_size=16, mix=MixParams(mix_up=0.8, cutmix=1.0, label_smoothing=0.1), **TRAIN)
    a = _batches(create_dataset(root, "train", IMAGE, seed=1, epoch=3, **kw), n=3)
    b = _batches(create_dataset(root, "train", IMAGE, seed=1, epoch=3, **kw), n=3)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    c = _batches(create_dataset(root, "train", IMAGE, seed=1, epoch=4, **kw), n=3)
    assert not np.array_equal(a[0][1], c[0][1])


def test_resumed_epoch_has_the_same_order(digits):
    root, _ = digits
    kw = dict(batch_size=64, augment=TrainTransformParams(auto_augment=None, re_prob=0.0), **FAST)
    data = create_dataset(root, "train", IMAGE, seed=2, epoch=0, **kw)
    it = data.create_tuple_iterator(num_epochs=2, output_numpy=True)
    epochs = [np.concatenate([b[1] for b in it]) for _ in range(2)]
    resumed = np.concatenate([b[1] for b in _batches(create_dataset(root, "train", IMAGE, seed=2, epoch=1, **kw))])
    assert np.array_equal(epochs[1], resumed) and not np.array_equal(epochs[0], epochs[1])


def test_worker_processes_draw_different_augmentations(tmp_path):
    # every file is the same image, so equal outputs would mean equal random streams
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8))
    for split in ("train", "val"):
        for cls in ("a", "b"):
            os.makedirs(tmp_path / split / cls)
            for i in range(8):
                img.save(tmp_path / split / cls / f"{i}.png")
    kw = dict(augment=TrainTransformParams(), batch_size=8, options=DatasetParams(num_parallel_workers=2),
              python_multiprocessing=True)
    first = _batches(create_dataset(str(tmp_path), "train", IMAGE, **kw), n=2)
    images = np.concatenate([b[0] for b in first])
    digests = {x.tobytes() for x in images}
    assert len(digests) == len(images)  # rows 2k (worker 0) and 2k+1 (worker 1) all differ
    second = _batches(create_dataset(str(tmp_path), "train", IMAGE, **kw), n=2)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(first, second))  # reproducible build


# ------------------------------------------------------------------ errors
def test_missing_paths_and_bad_splits(digits, tmp_path):
    root, _ = digits
    with pytest.raises(FileNotFoundError, match="nowhere"):
        create_dataset(str(tmp_path / "nowhere"), "train", IMAGE, batch_size=4, **TRAIN)
    (tmp_path / "only_train" / "train" / "x").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="val"):
        create_dataset(str(tmp_path / "only_train"), "val", IMAGE, batch_size=4, **FAST)
    with pytest.raises(ValueError, match="no images"):
        create_dataset(str(tmp_path / "only_train"), "train", IMAGE, batch_size=4, **TRAIN)
    (tmp_path / "no_classes" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="no class folders"):
        class_names(str(tmp_path / "no_classes"), "train")
    with pytest.raises(ValueError, match="split"):
        create_dataset(root, "test", IMAGE, batch_size=4, **FAST)
    with pytest.raises(ValueError, match="num_classes"):
        create_dataset(root, "train", IMAGE, batch_size=4, num_classes=1000, **TRAIN)


def test_class_mismatch_between_splits(digits, tmp_path):
    root, _ = digits
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    os.rename(copy / "val" / "9", copy / "val" / "nine")
    for split in ("train", "val"):
        with pytest.raises(ValueError, match="only in") as info:
            augment = TrainTransformParams() if split == "train" else None
            create_dataset(str(copy), split, IMAGE, batch_size=4, augment=augment, **FAST)
        assert "nine" in str(info.value) and "'9'" in str(info.value)


def test_odd_batches_refused_for_pair_mode(digits):
    root, _ = digits
    with pytest.raises(ValueError, match="even"):
        create_dataset(root, "train", IMAGE, batch_size=15, mix=MixParams(cutmix=0.0, mixup_mode="pair"), **TRAIN)
    with pytest.raises(ValueError, match="even"):  # 1437 samples: last batch of 13
        create_dataset(root, "train", IMAGE, batch_size=16, mix=MixParams(cutmix=0.0, mixup_mode="elem"),
                       drop_remainder=False, **TRAIN)
    with pytest.raises(ValueError, match="training batches only"):
        create_dataset(root, "val", IMAGE, batch_size=16, mix=MixParams(), **FAST)
    with pytest.raises(ValueError, match="unknown mixup mode"):
        MixParams(mixup_mode="pairs")
