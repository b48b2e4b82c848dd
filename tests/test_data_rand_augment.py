"""RandAugment: timm string grammar, level mappings, op sets, determinism, near-identity at magnitude 0."""
import math

import numpy as np
import pytest
from PIL import Image

from src.data.rand_augment import (RAND_INCREASING_TRANSFORMS, RAND_TRANSFORMS, RandAugment,
                                   apply_op, level_to_arg, parse_rand_augment)

GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def _image(seed=0, size=(48, 40)):
    """A smooth RGB test image (smooth, so sub-pixel resampling errors stay small)."""
    yy, xx = np.mgrid[0:size[1], 0:size[0]].astype(np.float32)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 6, 3)
    arr = np.stack([127 + 100 * np.sin(xx / 9 + phase[c]) * np.cos(yy / 11) for c in range(3)], -1)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


class _FixedGen:
    """A stand-in generator whose random() is fixed, to pin the random sign."""

    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


# ------------------------------------------------------------------ grammar
def test_parse_official_string():
    assert parse_rand_augment("rand-m9-mstd0.5-inc1") == {
        "magnitude": 9, "magnitude_std": 0.5, "increasing": True}


def test_parse_all_options():
    cfg = parse_rand_augment("rand-n3-m5-mmax8.5-mstd1-inc0-w0")
    assert cfg == {"num_ops": 3, "magnitude": 5, "magnitude_max": 8.5, "magnitude_std": 1.0,
                   "increasing": False, "weight_index": 0}
    assert parse_rand_augment("rand") == {}
    assert parse_rand_augment("rand-mstdinf")["magnitude_std"] == math.inf


@pytest.mark.parametrize("bad, fragment", [
    ("augmix-m9", "augmix"), ("rand-x9", "x9"), ("rand-m", "'m'"), ("rand-m9.5", "m9.5"),
    ("rand-m9-m8", "twice"), ("rand-inc2", "inc2"), ("rand-w1", "w1"), ("rand--m9", "''"),
    ("rand-n0", "n0"), ("rand-mstd", "mstd"), ("rand-mmax0", "mmax0"), ("rand-M9", "M9"),
    ("", "non-empty"),
])
def test_parse_errors_name_option_and_grammar(bad, fragment):
    with pytest.raises(ValueError) as info:
        parse_rand_augment(bad)
    assert fragment in str(info.value)
    assert "rand-m9-mstd0.5-inc1" in str(info.value)  # the grammar example is shown


def test_inc_selects_op_set():
    assert RandAugment.from_string("rand-m9-inc1").ops == RAND_INCREASING_TRANSFORMS
    assert RandAugment.from_string("rand-m9-inc0").ops == RAND_TRANSFORMS
    assert RandAugment.from_string("rand-m9").ops == RAND_TRANSFORMS
    assert len(RAND_TRANSFORMS) == len(RAND_INCREASING_TRANSFORMS) == 15
    assert "PosterizeIncreasing" in RAND_INCREASING_TRANSFORMS and "Posterize" not in RAND_INCREASING_TRANSFORMS


def test_from_string_sets_fields():
    ra = RandAugment.from_string("rand-m7-n3-mstd0.5-mmax9", fill=(1, 2, 3), seed=1)
    assert (ra.magnitude, ra.num_ops, ra.magnitude_std, ra.magnitude_max) == (7, 3, 0.5, 9)
    assert ra.fill == (1, 2, 3) and ra.choice_weights is None


# ------------------------------------------------------------------ level -> argument (timm 0.3.2)
@pytest.mark.parametrize("name, level, expected", [
    ("Rotate", 10, 30.0), ("Rotate", 9, 27.0), ("ShearX", 9, 0.27), ("TranslateYRel", 9, 0.405),
    ("Posterize", 9, 3), ("PosterizeIncreasing", 9, 1), ("PosterizeIncreasing", 10, 0),
    ("Solarize", 9, 230), ("SolarizeIncreasing", 9, 26), ("SolarizeAdd", 9, 99),
    ("Color", 9, 1.72), ("Sharpness", 0, 0.1), ("ContrastIncreasing", 9, 1.81),
    ("BrightnessIncreasing", 0, 1.0),
])
def test_level_to_arg(name, level, expected):
    positive = level_to_arg(name, level, _FixedGen(0.0))[0]  # random() <= 0.5: sign kept
    assert positive == pytest.approx(expected)


def test_signed_ops_flip_sign():
    assert level_to_arg("Rotate", 9, _FixedGen(0.9))[0] == pytest.approx(-27.0)
    assert level_to_arg("ColorIncreasing", 9, _FixedGen(0.9))[0] == pytest.approx(1 - 0.81)
    assert level_to_arg("TranslateXRel", 10, _FixedGen(0.9), translate_pct=0.3)[0] == pytest.approx(-0.3)
    assert level_to_arg("Color", 9, _FixedGen(0.9))[0] == pytest.approx(1.72)  # unsigned


def test_magnitude_noise_and_clipping():
    gen = np.random.default_rng(0)
    noisy = np.array([RandAugment(magnitude=5, magnitude_std=0.5).sample_magnitude(gen) for _ in range(4000)])
    assert abs(noisy.mean() - 5) < 0.05 and abs(noisy.std() - 0.5) < 0.05
    clipped = np.array([RandAugment(magnitude=9, magnitude_std=2, magnitude_max=9.5).sample_magnitude(gen)
                        for _ in range(2000)])
    assert clipped.max() == 9.5 and clipped.min() >= 0 and (clipped == 9.5).mean() > 0.3
    uniform = np.array([RandAugment(magnitude=8, magnitude_std=math.inf).sample_magnitude(gen) for _ in range(4000)])
    assert uniform.min() >= 0 and uniform.max() <= 8 and abs(uniform.mean() - 4) < 0.15
    assert RandAugment(magnitude=9).sample_magnitude(gen) == 9  # no noise without mstd


# ------------------------------------------------------------------ ops
@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometric_ops_identity_at_magnitude_zero(name):
    img = _image()
    args = level_to_arg(name, 0.0, np.random.default_rng(0))
    for resample in (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC):
        out = apply_op(img, name, args, fill=(128, 128, 128), resample=resample)
        diff = np.abs(np.asarray(out, np.int16) - np.asarray(img, np.int16))
        assert out.size == img.size and diff.max() <= 1


def test_full_transform_geometric_only_at_magnitude_zero_is_near_identity():
    ra = RandAugment(magnitude=0, magnitude_std=0, prob=1.0, num_ops=3, seed=0)
    ra.ops = GEOMETRIC
    img = _image(1)
    for _ in range(5):
        out = ra(img)
        assert np.abs(np.asarray(out, np.int16) - np.asarray(img, np.int16)).max() <= 1


def test_geometric_ops_change_image_at_magnitude_nine_and_fill_with_mean():
    img = Image.new("RGB", (40, 40), (255, 255, 255))
    out = np.asarray(apply_op(img, "Rotate", (30.0,), fill=(128, 128, 128), resample=Image.Resampling.BICUBIC))
    assert tuple(out[0, 0]) == (128, 128, 128) and tuple(out[20, 20]) == (255, 255, 255)
    shifted = np.asarray(apply_op(img, "TranslateXRel", (0.45,), fill=(1, 2, 3), resample=Image.Resampling.BILINEAR))
    assert tuple(shifted[20, -1]) == (1, 2, 3) and tuple(shifted[20, 0]) == (255, 255, 255)


def test_posterize_zero_bits_gives_black():
    # timm's levels produce 0 bits; Pillow >= 11's ImageOps.posterize would raise here
    out = apply_op(_image(), "PosterizeIncreasing", (0,), fill=(0, 0, 0), resample=Image.Resampling.NEAREST)
    assert np.asarray(out).max() == 0
    out4 = np.asarray(apply_op(_image(), "Posterize", (4,), fill=(0, 0, 0), resample=0))
    assert np.all(out4 % 16 == 0)


def test_solarize_add_and_solarize():
    img = Image.fromarray(np.array([[[10, 127, 128]]], np.uint8))
    assert np.asarray(apply_op(img, "SolarizeAdd", (99,), fill=(0, 0, 0), resample=0)).tolist() == [[[109, 226, 128]]]
    solarized = apply_op(img, "SolarizeIncreasing", (26,), fill=(0, 0, 0), resample=0)
    assert np.asarray(solarized).tolist() == [[[10, 128, 127]]]


@pytest.mark.parametrize("name", RAND_TRANSFORMS + RAND_INCREASING_TRANSFORMS)
def test_every_op_runs_at_every_level(name):
    gen = np.random.default_rng(0)
    for level in (0, 5, 10):
        out = apply_op(_image(), name, level_to_arg(name, level, gen), fill=(128, 128, 128),
                       resample=Image.Resampling.BICUBIC)
        assert out.mode == "RGB" and out.size == (48, 40)


# ------------------------------------------------------------------ transform
def test_output_types_and_determinism():
    img = _image(2)
    a = RandAugment.from_string("rand-m9-mstd0.5-inc1", seed=3)
    b = RandAugment.from_string("rand-m9-mstd0.5-inc1", seed=3)
    outs_a = [np.asarray(a(img)) for _ in range(6)]
    outs_b = [np.asarray(b(img)) for _ in range(6)]
    assert all(np.array_equal(x, y) for x, y in zip(outs_a, outs_b))
    assert all(o.dtype == np.uint8 and o.shape == (40, 48, 3) for o in outs_a)
    c = RandAugment.from_string("rand-m9-mstd0.5-inc1", seed=4)
    assert any(not np.array_equal(x, np.asarray(c(img))) for x in outs_a)
    arr_out = a(np.asarray(img))
    assert isinstance(arr_out, np.ndarray) and arr_out.shape == (40, 48, 3) and arr_out.dtype == np.uint8


def test_prob_zero_is_identity_and_gray_input_refused():
    img = _image()
    assert np.array_equal(np.asarray(RandAugment(prob=0.0, seed=0)(img)), np.asarray(img))
    with pytest.raises(ValueError, match="RGB"):
        RandAugment(seed=0)(img.convert("L"))


def test_choice_uniform_with_replacement_and_weighted_without():
    gen = np.random.default_rng(0)
    ra = RandAugment(num_ops=2)
    picks = [ra.choose_ops(gen) for _ in range(3000)]
    counts = {name: sum(p.count(name) for p in picks) for name in RAND_TRANSFORMS}
    assert min(counts.values()) > 300  # uniform: ~400 each
    assert any(p[0] == p[1] for p in picks)  # with replacement
    weighted = RandAugment(num_ops=3, weight_index=0, increasing=True)
    for _ in range(500):
        chosen = weighted.choose_ops(gen)
        assert len(set(chosen)) == 3
        assert "PosterizeIncreasing" not in chosen and "Invert" not in chosen  # weight 0


def test_constructor_errors():
    with pytest.raises(ValueError):
        RandAugment(weight_index=1)
    with pytest.raises(ValueError):
        RandAugment(interpolation="nearest")
    with pytest.raises(ValueError):
        RandAugment(num_ops=0)
