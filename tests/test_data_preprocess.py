"""preprocess.py: the file scan and bad-image policy of evaluation; an output is reused only for the same images."""
import json
import logging
import os

import pytest
from PIL import Image

import preprocess as preprocess_entry
from support import snapshot, write_image_folder
from src.data.files import BadImagesError
from src.deploy.errors import DeployError
from test_data_files import _add_hidden_entries


def args(data, out, *extra):
    return ["--arch", "vig_nano_gelu", "--image_size", "16", "--data_url", str(data),
            "--preprocess_path", str(out), *extra]


@pytest.fixture
def data(tmp_path):
    return write_image_folder(tmp_path / "data", classes=2, train_per_class=1, val_per_class=3, size=20)


def test_another_file_list_is_refused(data, tmp_path):
    out = tmp_path / "pre"
    assert preprocess_entry.main(args(data, out)) == {"images": 6, "classes": 2, "reused": False}
    assert preprocess_entry.main(args(data, out))["reused"]
    before = snapshot(str(out))
    Image.new("RGB", (20, 20)).save(os.path.join(data, "val", "class_1", "new.png"))
    with pytest.raises(DeployError) as info:
        preprocess_entry.main(args(data, out))
    assert str(info.value) == (
        f"{str(out)!r} holds inputs preprocessed from other images than {os.path.join(data, 'val')!r} now has "
        "(6 files then, 7 now; 0 gone, e.g. [], 1 new, e.g. ['class_1/new.png']); choose another --preprocess_path "
        "or move the old one away")
    assert snapshot(str(out)) == before


def test_hidden_entries_and_unreadable_images(data, tmp_path, caplog):
    _add_hidden_entries(data)
    broken = os.path.join(data, "val", "class_0", "broken.jpg")
    with open(broken, "wb") as handle:
        handle.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "pre"
    with caplog.at_level(logging.WARNING, logger="src.data.files"):
        with pytest.raises(BadImagesError, match=r"1 of 7 images .* more than max_bad_image_fraction 0.001"):
            preprocess_entry.main(args(data, out))
        assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"skipping image {broken}"]
        assert not out.exists() and os.listdir(tmp_path) == ["data"]  # nothing half-written left
        caplog.clear()
        counts = preprocess_entry.main(args(data, out, "--max_bad_image_fraction", "0.2"))
    assert counts == {"images": 6, "classes": 2, "reused": False}
    labels = json.loads((out / "labels.json").read_text())
    assert labels["skipped"] == ["class_0/broken.jpg"]
    assert sorted(item["file"] for item in labels["images"].values()) == [
        f"class_{c}/{i}.png" for c in range(2) for i in range(3)]
    assert len([f for f in os.listdir(out) if f.endswith(".bin")]) == 6
    # named once per process; counted in every pass
    assert [r.getMessage() for r in caplog.records] == [
        f"skipped 1 unreadable image of 7 in {os.path.join(data, 'val')} (named above)"]
    assert preprocess_entry.main(args(data, out, "--max_bad_image_fraction", "0.2"))["reused"]


def test_a_folder_of_other_files_is_refused_untouched(data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "img_000000.bin").write_bytes(b"someone else's")
    with pytest.raises(DeployError, match="is not empty and holds no labels.json written by preprocess.py"):
        preprocess_entry.main(args(data, out))
    assert snapshot(str(out)) == {"img_000000.bin": snapshot(str(out / "img_000000.bin"))}
