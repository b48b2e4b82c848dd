"""timm Mixup/CutMix: soft targets, lam recovery from the images, cutmix lam correction, modes, errors."""
import numpy as np
import pytest

from src.data.mixup import Mixup, cutmix_bbox_and_lam, mixup_target, one_hot_smoothed

C = 5


def _batch(n=8, size=16):
    """Image i is constant (i + 1): any pixel tells which sample it came from."""
    images = np.stack([np.full((3, size, size), i + 1.0, np.float32) for i in range(n)])
    labels = np.arange(n) % C
    return images, labels


def _expected(labels, lam, smoothing):
    off = smoothing / C
    y1 = np.full((len(labels), C), off)
    y1[np.arange(len(labels)), labels] = 1 - smoothing + off
    y2 = y1[::-1]
    lam = np.asarray(lam).reshape(-1, 1)
    return lam * y1 + (1 - lam) * y2


def test_one_hot_smoothed_matches_timm():
    out = one_hot_smoothed(np.array([0, 3]), 4, 0.1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0.925, 0.025, 0.025, 0.025])
    np.testing.assert_allclose(out.sum(1), 1, atol=1e-6)
    with pytest.raises(ValueError):
        one_hot_smoothed(np.array([4]), 4)


def test_mixup_batch_targets_are_the_lam_mixture():
    images, labels = _batch()
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=C)
    for seed in range(5):
        x, t = mix(images, labels, gen=np.random.default_rng(seed))
        assert x.dtype == np.float32 and t.dtype == np.float32 and t.shape == (8, C)
        # pixel of sample 0 = lam * 1 + (1 - lam) * 8
        lam = (x[0, 0, 0, 0] - 8.0) / (1.0 - 8.0)
        np.testing.assert_allclose(x[3], lam * images[3] + (1 - lam) * images[4], rtol=1e-5)
        np.testing.assert_allclose(t, _expected(labels, lam, 0.1), atol=1e-5)
        np.testing.assert_allclose(t.sum(1), 1, atol=1e-5)
    assert np.array_equal(images[:, 0, 0, 0], np.arange(1, 9))  # input untouched


def test_cutmix_lam_is_corrected_to_the_actual_box_area():
    images, labels = _batch(n=6, size=20)
    mix = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=C)
    clipped_seen = False
    for seed in range(30):
        x, t = mix(images, labels, gen=np.random.default_rng(seed))
        pasted = x[0, 0] == 6.0  # pixels of sample 0 that now come from sample 5
        area = pasted.sum()
        assert np.all(x[0, :, ~pasted] == 1.0)
        lam = 1.0 - area / 400.0
        np.testing.assert_allclose(t, _expected(labels, lam, 0.0), atol=1e-6)
        # the same box in every image (batch mode)
        assert np.array_equal(x[2, 0] == 4.0, pasted)
        if area and (pasted[0].any() or pasted[-1].any() or pasted[:, 0].any() or pasted[:, -1].any()):
            clipped_seen = True
    assert clipped_seen


def test_cutmix_without_correction_keeps_beta_lam():
    gen = np.random.default_rng(0)
    box, lam = cutmix_bbox_and_lam((3, 20, 20), 0.3, gen, correct_lam=False)
    assert lam == 0.3
    box, lam = cutmix_bbox_and_lam((3, 20, 20), 0.3, np.random.default_rng(0), correct_lam=True)
    yl, yh, xl, xh = box
    assert lam == pytest.approx(1 - (yh - yl) * (xh - xl) / 400)


def test_cutmix_minmax_box_inside_and_lam():
    images, labels = _batch(n=4, size=40)
    mix = Mixup(mixup_alpha=0.0, cutmix_alpha=0.0, cutmix_minmax=(0.2, 0.8), label_smoothing=0.0, num_classes=C)
    for seed in range(10):
        x, t = mix(images, labels, gen=np.random.default_rng(seed))
        pasted = x[0, 0] == 4.0
        rows, cols = np.where(pasted)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert 8 <= h < 32 and 8 <= w < 32
        np.testing.assert_allclose(t[0, labels[0]], 1 - pasted.sum() / 1600, atol=1e-6)


def test_pair_mode_mixes_pairs_symmetrically():
    images, _ = _batch(n=8)
    labels = np.arange(8)
    mixup = Mixup(mixup_alpha=1.0, mode="pair", label_smoothing=0.0, num_classes=8)
    x, t = mixup(images, labels, gen=np.random.default_rng(0))
    for i in range(4):
        j = 7 - i
        vi, vj = i + 1.0, j + 1.0
        lam_i = (x[i, 0, 0, 0] - vj) / (vi - vj)
        lam_j = (x[j, 0, 0, 0] - vi) / (vj - vi)
        assert lam_i == pytest.approx(lam_j, abs=1e-5)  # one lam per pair
        assert t[i, i] == pytest.approx(lam_i, abs=1e-5) and t[j, j] == pytest.approx(lam_i, abs=1e-5)
    cutmix = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, mode="pair", label_smoothing=0.0, num_classes=8)
    x, t = cutmix(images, labels, gen=np.random.default_rng(1))
    for i in range(4):
        j = 7 - i
        box_i = x[i, 0] == j + 1.0
        assert np.array_equal(box_i, x[j, 0] == i + 1.0)  # the two members swapped the same box
        assert t[i, i] == pytest.approx(1 - box_i.mean(), abs=1e-6)
        assert t[j, j] == pytest.approx(t[i, i], abs=1e-6)
    np.testing.assert_allclose(t.sum(1), 1, atol=1e-5)


def test_elem_mode_uses_independent_lams_from_unmixed_sources():
    images, labels = _batch(n=8)
    mix = Mixup(mixup_alpha=1.0, mode="elem", label_smoothing=0.0, num_classes=8)
    x, t = mix(images, np.arange(8), gen=np.random.default_rng(1))
    lams = [(x[i, 0, 0, 0] - (8 - i)) / ((i + 1) - (8 - i)) for i in range(8)]
    np.testing.assert_allclose(np.diag(t), lams, atol=1e-5)
    assert len(set(np.round(lams, 4))) > 4  # per element, not shared
    np.testing.assert_allclose(t.sum(1), 1, atol=1e-5)


def test_prob_zero_gives_smoothed_one_hot_and_unchanged_images():
    images, labels = _batch()
    x, t = Mixup(mixup_alpha=1.0, prob=0.0, label_smoothing=0.1, num_classes=C)(images, labels)
    assert np.array_equal(x, images)
    np.testing.assert_allclose(t, one_hot_smoothed(labels, C, 0.1), atol=1e-6)


def test_switch_prob_selects_cutmix_or_mixup():
    images, labels = _batch(n=4)
    mix = Mixup(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5, label_smoothing=0.0, num_classes=C)
    kinds = set()
    for seed in range(40):
        x, _ = mix(images, labels, gen=np.random.default_rng(seed))
        is_cut = np.all(np.isin(x[0, 0], [1.0, 4.0]))
        kinds.add(bool(is_cut))
    assert kinds == {True, False}


def test_determinism_and_mixup_target():
    images, labels = _batch()
    a = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, seed=3, num_classes=C)(images, labels)
    b = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, seed=3, num_classes=C)(images, labels)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    np.testing.assert_allclose(mixup_target(labels, C, 0.3, 0.2), _expected(labels, 0.3, 0.2), atol=1e-6)


def test_odd_batches_and_bad_arguments():
    images, labels = _batch(n=7)
    for mode in ("pair", "elem"):
        with pytest.raises(ValueError, match="even batch"):
            Mixup(mixup_alpha=1.0, mode=mode, num_classes=C)(images, labels)
    x, t = Mixup(mixup_alpha=1.0, mode="batch", num_classes=C)(images, labels)  # allowed
    assert t.shape == (7, C)
    bad = [dict(mixup_alpha=0.0, cutmix_alpha=0.0), dict(mode="row"), dict(prob=1.5),
           dict(switch_prob=-0.1), dict(label_smoothing=1.0), dict(num_classes=1),
           dict(cutmix_minmax=(0.8, 0.2)), dict(mixup_alpha=-1.0)]
    for kwargs in bad:
        with pytest.raises(ValueError):
            Mixup(**{"mixup_alpha": 1.0, "num_classes": C, **kwargs})
    with pytest.raises(ValueError, match="labels"):
        Mixup(mixup_alpha=1.0, num_classes=C)(images, labels[:5])
    with pytest.raises(ValueError, match="NCHW"):
        Mixup(mixup_alpha=1.0, num_classes=C)(images[0], labels)
