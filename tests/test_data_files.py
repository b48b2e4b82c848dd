"""Bad input in a dataset: hidden entries, empty classes, unreadable images, 16-bit PNGs, huge images."""
import io
import logging
import os
import struct
import zlib

import numpy as np
import pytest
from mindspore import nn
from PIL import Image, ImageFile

import mindspore.dataset.vision as vision
from support import write_image_folder
from src.data import DatasetError
from src.data.dataset import batches, class_names, create_dataset
from src.data.files import BadImagesError, ImageFiles
from src.data.params import DatasetParams, EvalTransformParams, TrainTransformParams
from src.data.transforms import DecodeImage, UndecodableImage, create_transforms
from src.engine.evaluate import evaluate

SIZE = 16
IMAGE = EvalTransformParams(image_size=SIZE)


def _read(**policy):
    """One worker, and the unreadable-image ``policy`` (max_bad_image_fraction, max_image_pixels) when given."""
    return DatasetParams(num_parallel_workers=1, **policy)


def _augment(is_training):
    return TrainTransformParams() if is_training else None


def _png16(samples):
    """A 16-bit grey (H, W) or RGB (H, W, 3) PNG, written by hand (Pillow cannot write them)."""
    arr = np.asarray(samples, ">u2")
    height, width = arr.shape[:2]
    colour = 0 if arr.ndim == 2 else 2
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _jpeg(seed=0, size=40):
    arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, "JPEG")
    return buffer.getvalue()


def _truncated_jpeg():
    """A JPEG cut inside its scan data (MindSpore's C++ Decode returned an image for it, without an error)."""
    data = _jpeg()
    return data[:len(data) * 2 // 3]


def _rows(data):
    """All (image, label, bad) rows of a pipeline."""
    images, labels, bad = [], [], []
    for x, y, b in data.create_tuple_iterator(num_epochs=1, output_numpy=True):
        images.append(x)
        labels.append(y)
        bad.append(b)
    return np.concatenate(images), np.concatenate(labels), np.concatenate(bad)


# ------------------------------------------------------------------ hidden entries, empty classes
def _add_hidden_entries(root):
    for split in ("train", "val"):
        checkpoints = os.path.join(root, split, ".ipynb_checkpoints")
        os.makedirs(checkpoints)
        Image.new("RGB", (20, 20)).save(os.path.join(checkpoints, "copy.png"))
        with open(os.path.join(root, split, ".DS_Store"), "wb") as handle:
            handle.write(b"\x00\x00\x00\x01Bud1")
        for cls in ("class_0", "class_1"):
            with open(os.path.join(root, split, cls, ".DS_Store"), "wb") as handle:
                handle.write(b"\x00\x00\x00\x01Bud1")
            with open(os.path.join(root, split, cls, "._0.png"), "wb") as handle:  # macOS resource fork
                handle.write(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")


def test_hidden_entries_are_ignored_in_counting_and_reading(tmp_path, caplog):
    root = write_image_folder(tmp_path / "data", classes=2, train_per_class=5, val_per_class=3, size=20)
    _add_hidden_entries(root)
    assert class_names(root, "train") == class_names(root, "val") == ["class_0", "class_1"]
    files = ImageFiles(root, "train")
    assert len(files) == 10 and all(not os.path.basename(files.path(i)).startswith(".") for i in range(10))
    with caplog.at_level(logging.WARNING):
        train = create_dataset(root, "train", IMAGE, batch_size=2, augment=_augment(True), options=_read())
        assert train.get_dataset_size() == 5
        _, labels, bad = _rows(train)
        val = create_dataset(root, "val", IMAGE, batch_size=4, options=_read())
        _, val_labels, val_bad = _rows(val)
    assert sorted(labels.tolist()) == [0] * 5 + [1] * 5 and np.all(bad == -1)
    assert val_labels.tolist() == [0, 0, 0, 1, 1, 1] and np.all(val_bad == -1)
    assert not caplog.records


def test_an_empty_class_folder_is_named(tmp_path, caplog):
    root = write_image_folder(tmp_path / "data", classes=2, train_per_class=3, val_per_class=1, size=20)
    for split in ("train", "val"):
        os.makedirs(os.path.join(root, split, "class_9"))
    with open(os.path.join(root, "train", "class_9", "notes.txt"), "w") as handle:
        handle.write("not an image")
    with caplog.at_level(logging.WARNING, logger="src.data.files"):
        data = create_dataset(root, "train", IMAGE, batch_size=2, augment=_augment(True), options=_read())
    named = [r.getMessage() for r in caplog.records if r.name == "src.data.files"]
    assert len(named) == 1 and os.path.join(root, "train", "class_9") in named[0] and "no images" in named[0]
    assert data.get_dataset_size() == 3


# ------------------------------------------------------------------ unreadable images
def _tree_with_bad_files(tmp_path, per_class=6):
    root = write_image_folder(tmp_path / "data", classes=2, train_per_class=per_class, val_per_class=per_class,
                              size=20)
    bad = {}
    for split in ("train", "val"):
        truncated = os.path.join(root, split, "class_0", "3_truncated.jpg")
        with open(truncated, "wb") as handle:
            handle.write(_truncated_jpeg())
        junk = os.path.join(root, split, "class_1", "3_junk.png")
        with open(junk, "wb") as handle:
            handle.write(b"this is not a png")
        bad[split] = [truncated, junk]
    return root, bad


def test_truncated_images_are_not_decoded_grey_filled():
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    data = np.frombuffer(_truncated_jpeg(), np.uint8)
    for is_training in (True, False):
        with pytest.raises(UndecodableImage, match="truncated"):
            create_transforms(IMAGE, _augment(is_training))[0](data)


@pytest.mark.parametrize("is_training", [True, False])
def test_unreadable_images_are_skipped_named_and_counted(tmp_path, caplog, is_training):
    root, bad = _tree_with_bad_files(tmp_path)
    split = "train" if is_training else "val"
    data = create_dataset(root, split, IMAGE, batch_size=2, augment=_augment(is_training), drop_remainder=False,
                          options=_read(max_bad_image_fraction=0.2))
    with caplog.at_level(logging.WARNING, logger="src.data.files"):
        seen = [labels.asnumpy() for _, labels in batches(data)]
    labels = np.concatenate(seen)
    assert len(labels) == 14  # batches keep their size: ranks and the sampler stay in step
    if is_training:
        assert labels.min() >= 0  # the slots got the next readable images
    else:
        assert sorted(labels.tolist()).count(-1) == 2  # left out of the metrics
    messages = [r.getMessage() for r in caplog.records]
    for path in bad[split]:
        assert sum(path in m for m in messages) == 1
    assert any("truncated" in m for m in messages) and any("not a decodable image" in m for m in messages)
    assert messages[-1] == f"skipped 2 unreadable images of 14 in {os.path.join(root, split)} (named above)"


def test_evaluation_leaves_unreadable_images_out(tmp_path, pynative):
    root, _ = _tree_with_bad_files(tmp_path)

    class ChannelMeans(nn.Cell):  # 3 "logits" from the image itself: deterministic, no weights
        def construct(self, x):
            return x.mean((2, 3))
    data = create_dataset(root, "val", IMAGE, batch_size=4, options=_read(max_bad_image_fraction=0.2))
    result = evaluate(ChannelMeans(), data)
    assert result["count"] == 12


@pytest.mark.parametrize("is_training", [True, False])
def test_too_many_unreadable_images_stop_the_run(tmp_path, is_training):
    root, bad = _tree_with_bad_files(tmp_path)
    split = "train" if is_training else "val"
    data = create_dataset(root, split, IMAGE, batch_size=2, augment=_augment(is_training),
                          options=_read())  # default: 0.1%
    with pytest.raises(BadImagesError) as info:
        for _ in batches(data):
            pass
    message = str(info.value)
    assert message.startswith(f"1 of 14 images in '{os.path.join(root, split)}' cannot be read")
    assert "max_bad_image_fraction 0.001" in message and "raise max_bad_image_fraction" in message
    assert bad[split][0] in message or bad[split][1] in message


def test_a_dataset_of_unreadable_files_is_one_error(tmp_path):
    root = write_image_folder(tmp_path / "data", classes=2, train_per_class=10, val_per_class=1, size=12)
    for cls in ("class_0", "class_1"):
        for name in os.listdir(os.path.join(root, "train", cls)):
            with open(os.path.join(root, "train", cls, name), "wb") as handle:
                handle.write(b"not an image")
    data = create_dataset(root, "train", IMAGE, batch_size=4, augment=_augment(True),
                          options=_read(max_bad_image_fraction=1.0))
    with pytest.raises(DatasetError, match=r"^16 images in a row from '.*/train/class_0/\d.png' on cannot be read"):
        for _ in batches(data):
            pass


# ------------------------------------------------------------------ decoding
@pytest.mark.parametrize("kind", ["grey16", "rgb16"])
def test_16_bit_pngs_keep_their_high_byte_in_training_and_evaluation(kind):
    rng = np.random.default_rng(0)
    shape = (24, 24) if kind == "grey16" else (24, 24, 3)
    samples = rng.integers(0, 65536, shape).astype(np.uint16)
    data = np.frombuffer(_png16(samples), np.uint8)
    high = (samples >> 8).astype(np.uint8)
    expected = np.repeat(high[..., None], 3, 2) if kind == "grey16" else high
    decoded = np.asarray(DecodeImage()(data))
    assert np.array_equal(decoded, expected)
    assert np.array_equal(decoded, vision.Decode()(data))  # what evaluation decoded before: unchanged
    whole = EvalTransformParams(image_size=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0)
    still = TrainTransformParams(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0, auto_augment=None,
                                 color_jitter=0.0, re_prob=0.0)
    train = create_transforms(whole, still)[0](data)
    evaluation = create_transforms(whole)[0](data)
    assert np.array_equal(train, evaluation)
    np.testing.assert_allclose(evaluation, expected.transpose(2, 0, 1) / 127.5 - 1, atol=1e-6)


@pytest.mark.parametrize("mode, fmt", [("L", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"),
                                       ("CMYK", "JPEG"), ("L", "JPEG"), ("RGB", "BMP")])
def test_other_modes_decode_as_before(mode, fmt):
    arr = np.random.default_rng(1).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    img = img.quantize(32) if mode == "P" else img.convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    data = np.frombuffer(buffer.getvalue(), np.uint8)
    decoded = np.asarray(DecodeImage()(data))
    assert decoded.shape == (12, 10, 3) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, vision.Decode()(data))


def _header_only_png(width, height):
    """A PNG that claims a size but holds no pixel data: enough for the size check, which comes before decoding."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_huge_images_are_named_with_the_way_to_allow_them(tmp_path, caplog):
    with pytest.raises(UndecodableImage) as info:
        DecodeImage()(_header_only_png(20000, 10000))
    assert str(info.value) == ("a 20000x10000 PNG image of 200,000,000 pixels, more than the limit of 178,956,970 "
                               "(Pillow's guard against decompression bombs); if it is genuine, allow it with "
                               "max_image_pixels 200000000 or more")
    small = io.BytesIO()
    Image.new("RGB", (30, 20), (1, 2, 3)).save(small, "PNG")
    with pytest.raises(UndecodableImage, match="600 pixels, more than the limit of 599"):
        DecodeImage(599)(small.getvalue())
    assert DecodeImage(600)(small.getvalue()).size == (30, 20)
    # the setting reaches the data workers
    root = write_image_folder(tmp_path / "data", classes=2, train_per_class=2, val_per_class=2, size=20)
    data = create_dataset(root, "val", IMAGE, batch_size=4,
                          options=_read(max_image_pixels=399, max_bad_image_fraction=1.0))
    with caplog.at_level(logging.WARNING, logger="src.data.files"):
        labels = np.concatenate([y.asnumpy() for _, y in batches(data)])
    assert labels.tolist() == [-1] * 4
    assert "allow it with max_image_pixels 400 or more" in caplog.records[0].getMessage()
