"""Per-image transforms: eval = PIL bicubic shorter-side resize + torchvision centre crop; train shapes/ranges/seeds."""
import io
import math

import numpy as np
import pytest
from PIL import Image

from src.data.params import EvalTransformParams, TrainTransformParams
from src.data.rand_augment import RAND_INCREASING_TRANSFORMS, RandAugment
from src.data.random_erasing import RandomErasing
from src.data.transforms import (CenterCrop, ColorJitter, DecodeImage, Normalize, PythonChain, UndecodableImage,
                                 RandomHorizontalFlip, RandomResizedCrop, center_crop_offsets,
                                 create_transforms, eval_resize_size)

HALF = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # the official ViG normalisation: inputs in [-1, 1]


def _train(size, seed=None, **augment):
    """The training transform at ``size`` (official normalisation), the recipe's steps changed by ``augment``."""
    return create_transforms(EvalTransformParams(image_size=size, **HALF), TrainTransformParams(**augment), seed=seed)


def _encoded(width, height, fmt="PNG", seed=0):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    noise = np.random.default_rng(seed).integers(0, 60, (height, width, 3))
    arr = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) % 256], -1) * 0.7 + noise
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, fmt)
    return np.frombuffer(buf.getvalue(), np.uint8)


def _apply(ops, data):
    for op in ops:  # MindSpore C++ ops run eagerly on numpy input
        data = op(data)
    return data


def _reference_eval(encoded, size, crop_pct):
    """timm 0.3.2 eval with PIL/torchvision semantics, written out."""
    img = Image.open(io.BytesIO(encoded.tobytes())).convert("RGB")
    short = int(math.floor(size / crop_pct))
    w, h = img.size
    new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    img = img.resize(new, Image.Resampling.BICUBIC)
    top = int(round((img.height - size) / 2.0))
    left = int(round((img.width - size) / 2.0))
    arr = np.asarray(img)[top:top + size, left:left + size].astype(np.float32) / 255.0
    return ((arr - 0.5) / 0.5).transpose(2, 0, 1)


@pytest.mark.parametrize("width, height, size, crop_pct, fmt", [
    (300, 200, 32, 0.9, "PNG"),    # resize 35: odd margin 3 -> torchvision offset 2, floor would give 1
    (120, 181, 32, 0.9, "JPEG"),
    (64, 64, 56, 0.875, "PNG"),
    (500, 375, 224, 0.9, "JPEG"),  # ImageNet-like: 248 x 330
    (20, 30, 24, 0.95, "PNG"),     # upscaling
])
def test_eval_transform_matches_pil_reference(width, height, size, crop_pct, fmt):
    data = _encoded(width, height, fmt)
    out = _apply(create_transforms(EvalTransformParams(image_size=size, crop_pct=crop_pct, **HALF)), data)
    assert out.shape == (3, size, size) and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    np.testing.assert_allclose(out, _reference_eval(data, size, crop_pct), atol=1e-6)


def test_eval_resize_size_and_offsets():
    assert eval_resize_size(224, 0.9) == 248 and eval_resize_size(224, 0.95) == 235
    assert eval_resize_size(224, 0.875) == 256
    assert center_crop_offsets(35, 52, 32) == (2, 10)  # round(1.5) = 2
    assert center_crop_offsets(249, 331, 224) == (12, 54)  # round(12.5) = 12, round(53.5) = 54
    with pytest.raises(ValueError):
        eval_resize_size(224, 1.5)
    with pytest.raises(ValueError):
        CenterCrop(10)(np.zeros((8, 20, 3), np.uint8))


def test_train_transform_shapes_ranges_and_determinism():
    data = _encoded(90, 70, "JPEG")
    ops = _train(32, seed=0)
    assert len(ops) == 1 and isinstance(ops[0], PythonChain)
    outs = [_apply(ops, data) for _ in range(4)]
    assert all(o.shape == (3, 32, 32) and o.dtype == np.float32 for o in outs)
    assert len({o.tobytes() for o in outs}) == 4  # random per call
    again = _train(32, seed=0)
    assert all(np.array_equal(o, _apply(again, data)) for o in outs)
    other = _train(32, seed=1)
    assert not np.array_equal(outs[0], _apply(other, data))
    clean = _train(32, re_prob=0.0, seed=0)
    for _ in range(10):
        x = _apply(clean, data)
        assert x.min() >= -1.0 and x.max() <= 1.0  # no erasing noise: inside the normalised range


def test_train_chain_contents():
    steps = _train(64, interpolation="random", seed=0)[0].steps
    kinds = [type(s) for s in steps]
    assert kinds == [DecodeImage, RandomResizedCrop, RandomHorizontalFlip, RandAugment, Normalize, RandomErasing]
    ra = steps[3]
    assert ra.ops == RAND_INCREASING_TRANSFORMS and ra.magnitude == 9 and ra.magnitude_std == 0.5
    assert ra.fill == (128, 128, 128) and ra.interpolation == "random" and ra.translate_pct == 0.45
    assert steps[1].interpolation == "random" and steps[5].mode == "pixel" and steps[5].max_count == 1
    jitter = _train(64, auto_augment=None, color_jitter=0.4, re_prob=0, hflip=0)[0].steps
    assert [type(s) for s in jitter] == [DecodeImage, RandomResizedCrop, ColorJitter, Normalize]
    plain = _train(64, auto_augment=None, color_jitter=0.0, re_prob=0)[0].steps
    assert [type(s) for s in plain] == [DecodeImage, RandomResizedCrop, RandomHorizontalFlip, Normalize]
    imagenet = create_transforms(EvalTransformParams(image_size=64), TrainTransformParams())[0].steps
    assert imagenet[3].fill == (124, 116, 104)


def test_transform_argument_errors():
    with pytest.raises(ValueError):
        _train(32, interpolation="nearest")
    with pytest.raises(ValueError, match="rand"):
        _train(32, auto_augment="augmix-m5")
    with pytest.raises(ValueError, match="mode"):
        _train(32, re_mode="noise")
    with pytest.raises(ValueError):
        _train(0)


def test_random_resized_crop_params_and_pixels():
    rrc = RandomResizedCrop(24, interpolation="bicubic", seed=0)
    gen = np.random.default_rng(0)
    for _ in range(300):
        top, left, h, w = rrc.get_params(100, 80, gen)
        assert 0 <= top and top + h <= 80 and 0 <= left and left + w <= 100
        assert 0.08 * 8000 * 0.9 <= h * w <= 8000
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # the output is PIL's crop + bicubic resize of the drawn box
    img = Image.open(io.BytesIO(_encoded(100, 80).tobytes())).convert("RGB")
    a = RandomResizedCrop(24, interpolation="bicubic", seed=5)
    box = RandomResizedCrop(24, seed=5).get_params(100, 80, RandomResizedCrop(24, seed=5).rng.gen)
    top, left, h, w = box
    expected = img.crop((left, top, left + w, top + h)).resize((24, 24), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(a(img)), np.asarray(expected))


def test_random_resized_crop_fallback_is_centre_crop():
    rrc = RandomResizedCrop(8, scale=(0.99, 1.0), ratio=(3 / 4, 4 / 3))
    gen = np.random.default_rng(0)
    assert rrc.get_params(1000, 10, gen) == (0, (1000 - 13) // 2, 10, 13)  # too wide: h = H, w = round(H * 4/3)
    assert rrc.get_params(10, 1000, gen) == ((1000 - 13) // 2, 0, 13, 10)


def test_random_interpolation_uses_both_filters():
    img = Image.open(io.BytesIO(_encoded(64, 64).tobytes())).convert("RGB")
    rrc = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), interpolation="random", seed=0)
    outs = {np.asarray(rrc(img)).tobytes() for _ in range(20)}
    bilinear = np.asarray(img.resize((16, 16), Image.Resampling.BILINEAR)).tobytes()
    bicubic = np.asarray(img.resize((16, 16), Image.Resampling.BICUBIC)).tobytes()
    assert outs == {bilinear, bicubic}


def test_flip_jitter_normalize():
    img = Image.fromarray(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))
    flips = [np.asarray(RandomHorizontalFlip(0.5, seed=s)(img)) for s in range(20)]
    assert any(np.array_equal(f, np.asarray(img)[:, ::-1]) for f in flips)
    assert any(np.array_equal(f, np.asarray(img)) for f in flips)
    assert np.array_equal(np.asarray(RandomHorizontalFlip(1.0)(img)), np.asarray(img)[:, ::-1])
    gray = Image.new("RGB", (8, 8), (100, 120, 140))
    jittered = [np.asarray(ColorJitter(0.4, 0.4, 0.4, seed=s)(gray)) for s in range(5)]
    assert len({j.tobytes() for j in jittered}) > 1
    out = Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(np.array([[[0, 255, 51]]], np.uint8))
    np.testing.assert_allclose(out.ravel(), [-1.0, 1.0, 51 / 127.5 - 1], atol=1e-6)
    assert out.shape == (3, 1, 1) and out.dtype == np.float32


def test_decode_matches_pil_and_reports_bad_bytes():
    data = _encoded(30, 20, "JPEG")
    expected = np.asarray(Image.open(io.BytesIO(data.tobytes())).convert("RGB"))
    assert np.array_equal(np.asarray(DecodeImage()(data)), expected)
    with pytest.raises(UndecodableImage, match="not a decodable image"):
        DecodeImage()(np.frombuffer(b"not an image", np.uint8))
