"""timm RandomErasing: modes, box geometry, count rule, probability, determinism, errors."""
import numpy as np
import pytest

from src.data.random_erasing import RandomErasing


class _CountingErasing(RandomErasing):
    """Records the shape of every box it fills."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.boxes = []

    def _fill(self, shape, dtype, gen):
        self.boxes.append(shape)
        return super()._fill(shape, dtype, gen)


def _box_of(changed):
    """Bounding box (top, bottom, left, right) of a boolean HW mask, which must be a full rectangle."""
    rows, cols = np.where(changed)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    assert changed[top:bottom, left:right].all() and changed.sum() == (bottom - top) * (right - left)
    return top, bottom, left, right


def test_const_mode_zeroes_one_box_only():
    img = np.full((3, 40, 50), 7.0, np.float32)
    out = RandomErasing(probability=1.0, mode="const", seed=0)(img.copy())
    assert out.shape == (3, 40, 50) and out.dtype == np.float32
    changed = out[0] != 7.0
    top, bottom, left, right = _box_of(changed)
    assert np.all(out[:, top:bottom, left:right] == 0) and np.all(out[:, ~changed] == 7.0)
    area = (bottom - top) * (right - left)
    assert 0.01 * 2000 <= area <= 2000 / 3 * 1.1


def test_pixel_mode_is_per_pixel_normal_noise():
    gen_img = np.full((3, 64, 64), 100.0, np.float32)
    values = []
    for seed in range(20):
        out = RandomErasing(probability=1.0, mode="pixel", seed=seed)(gen_img.copy())
        changed = np.any(out != 100.0, axis=0)
        _box_of(changed)
        box = out[:, changed]
        assert len(np.unique(box[0])) == box.shape[1]  # a different value per pixel
        assert not np.array_equal(box[0], box[1])  # and per channel
        values.append(box.ravel())
    noise = np.concatenate(values)
    assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1) < 0.05


def test_rand_mode_is_one_value_per_channel():
    out = RandomErasing(probability=1.0, mode="rand", seed=1)(np.full((3, 32, 32), 5.0, np.float32))
    changed = np.any(out != 5.0, axis=0)
    _box_of(changed)
    per_channel = [np.unique(out[c][changed]) for c in range(3)]
    assert all(len(v) == 1 for v in per_channel) and len({float(v[0]) for v in per_channel}) == 3


def test_probability():
    img = np.zeros((3, 16, 16), np.float32) + 3
    assert np.all(RandomErasing(probability=0.0, mode="const", seed=0)(img.copy()) == 3)
    eraser = RandomErasing(probability=0.25, mode="const", seed=2)
    hits = sum(bool(np.any(eraser(img.copy()) != 3)) for _ in range(800))
    assert 150 < hits < 250


def test_count_rule_matches_timm():
    img = np.zeros((3, 48, 48), np.float32)
    single = _CountingErasing(probability=1.0, seed=0)  # max_count=None -> exactly min_count boxes
    for _ in range(50):
        n_before = len(single.boxes)
        single(img.copy())
        assert len(single.boxes) - n_before == 1
    multi = _CountingErasing(probability=1.0, max_count=3, seed=0)
    counts = set()
    for _ in range(200):
        n_before = len(multi.boxes)
        multi(img.copy())
        counts.add(len(multi.boxes) - n_before)
    assert counts == {1, 2, 3}  # uniform integer in [min_count=1, max_count]


def test_box_area_shrinks_with_count():
    img = np.zeros((3, 100, 100), np.float32)
    fixed3 = _CountingErasing(probability=1.0, min_count=3, max_count=3, seed=0)
    for _ in range(100):
        fixed3(img.copy())
    areas = np.array([h * w for _, h, w in fixed3.boxes])
    assert len(areas) == 300 and areas.max() <= 10000 / 3 / 3 * 1.15 and areas.min() >= 10000 * 0.02 / 3 * 0.8


def test_boxes_respect_aspect_range_and_strict_size_limit():
    eraser = _CountingErasing(probability=1.0, seed=3)
    for _ in range(300):
        eraser(np.zeros((3, 20, 30), np.float32))
    for _, h, w in eraser.boxes:
        assert h < 20 and w < 30  # timm accepts a box only if strictly smaller
        assert 0.3 / 1.5 <= h / w <= 1.5 / 0.3


def test_determinism_batch_and_readonly_input():
    img = np.random.default_rng(0).standard_normal((4, 3, 24, 24)).astype(np.float32)
    a = RandomErasing(probability=1.0, mode="pixel", seed=9)(img.copy())
    b = RandomErasing(probability=1.0, mode="pixel", seed=9)(img.copy())
    c = RandomErasing(probability=1.0, mode="pixel", seed=10)(img.copy())
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert all(np.any(a[i] != img[i]) for i in range(4))  # every image of the batch erased
    frozen = img[0].copy()
    frozen.flags.writeable = False
    out = RandomErasing(probability=1.0, seed=0)(frozen)
    assert out is not frozen and np.any(out != frozen)


def test_errors():
    with pytest.raises(ValueError, match="mode"):
        RandomErasing(mode="gaussian")
    with pytest.raises(ValueError):
        RandomErasing(probability=1.5)
    with pytest.raises(ValueError):
        RandomErasing(min_count=2, max_count=1)
    with pytest.raises(ValueError, match="float"):
        RandomErasing()(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="CHW"):
        RandomErasing()(np.zeros((8, 8), np.float32))
