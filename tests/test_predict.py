"""predict.py: top-k classes per image for a folder of odd image modes with one corrupt file, names from
the training run's class folders, ImageNet-1k names for 1000 classes, machine-readable output."""
import json
import os

import numpy as np
import pytest
import yaml
from mindspore import Tensor
from PIL import Image

from support import TRANSFORM

import predict
from src.app.builders import prediction_class_names
from src.app.config import load_config
from src.data.files import find_images, imagenet_class_names
from src.data.params import EvalTransformParams
from src.data.transforms import create_transforms
from src.models import create_model
from src.weights.checkpoint import DATA_KEY, save_checkpoint
from tools.calibrate import calibrate, structured_images

SIZE = 32


def write_images(folder):
    """One image per mode PIL offers, a damaged file, a hidden file and a nested folder."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:50]
    rgb = np.stack([(xx * 5) % 256, (yy * 6) % 256, rng.integers(0, 256, (40, 50))], -1).astype(np.uint8)
    os.makedirs(folder / "nested")
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb).convert("L").save(folder / "grey.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.gif")
    Image.fromarray(rgb).convert("RGBA").save(folder / "nested" / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((xx * 1300).astype(np.uint16)).save(folder / "sixteen.png")
    (folder / "damaged.jpg").write_bytes((folder / "rgb.png").read_bytes()[:120])
    (folder / ".hidden.png").write_bytes(b"not looked at")
    return sorted(["rgb.png", "grey.png", "palette.gif", "nested/rgba.png", "cmyk.jpg", "sixteen.png"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A training run's folder: a checkpoint of a calibrated 3-class model and its config.yaml, whose
    data_url holds the class folders."""
    root = tmp_path_factory.mktemp("predict")
    for name in ("cat", "dog", "eel"):
        os.makedirs(root / "data" / "train" / name)
    net = create_model("vig_nano_gelu", num_classes=3, img_size=SIZE)
    calibrate(net, structured_images(8, SIZE))
    os.makedirs(root / "run")
    save_checkpoint({p.name: p for p in net.get_parameters()}, str(root / "run" / "best.ckpt"))
    with open(root / "run" / "config.yaml", "w") as handle:
        yaml.safe_dump({"arch": "vig_nano_gelu", "num_classes": 3, "data_url": str(root / "data")}, handle)
    return {"root": root, "net": net, "ckpt": str(root / "run" / "best.ckpt")}


def args(run, *extra):
    return ["--arch", "vig_nano_gelu", "--num_classes", "3", "--image_size", str(SIZE), "--graph_mode", "1",
            *TRANSFORM, "--pretrained", run["ckpt"], *extra]


def test_folder_with_odd_modes_and_a_damaged_file(run, tmp_path, capsys):
    readable = write_images(tmp_path / "images")
    with pytest.raises(SystemExit) as stop:
        predict.main(args(run, str(tmp_path / "images"), "--topk", "2", "--json"))
    assert stop.value.code == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["classes_from"].startswith("the class folders of")
    results = {os.path.relpath(r["file"], tmp_path / "images"): r for r in out["results"]}
    assert sorted(results) == sorted(readable + ["damaged.jpg"])
    assert "not a decodable image" in results["damaged.jpg"]["error"]
    assert "damaged.jpg" in captured.err and "1 of 7 images could not be classified" in captured.err
    params = EvalTransformParams(image_size=SIZE, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=0.9)
    (transform,) = create_transforms(params)
    for name in readable:
        top = results[name]["top"]
        assert len(top) == 2 and {t["name"] for t in top} <= {"cat", "dog", "eel"}
        with open(tmp_path / "images" / name, "rb") as handle:  # the model's own probabilities
            logits = run["net"](Tensor(transform(handle.read())[None])).asnumpy()[0].astype(np.float64)
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert [t["class"] for t in top] == list(np.argsort(-probs)[:2])
        np.testing.assert_allclose([t["probability"] for t in top], np.sort(probs)[::-1][:2], rtol=1e-4)


def test_text_output_files_and_globs(run, tmp_path, capsys):
    write_images(tmp_path / "images")
    out = predict.main(args(run, str(tmp_path / "images" / "rgb.png"), str(tmp_path / "images" / "*.gif")))
    text = capsys.readouterr().out.splitlines()
    assert [line for line in text if not line.startswith(" ")][1:] == [str(tmp_path / "images" / "rgb.png"),
                                                                       str(tmp_path / "images" / "palette.gif")]
    assert len(out["results"][0]["top"]) == 3  # --topk 5 on a 3-class model gives its 3 classes
    with pytest.raises(SystemExit):
        predict.main(args(run, str(tmp_path / "no_such.png"), str(tmp_path / "images" / "*.tif")))
    err = capsys.readouterr().err
    assert "no_such.png: no such file or folder" in err and "*.tif: the pattern matches no file" in err


def test_class_names_sources(run, tmp_path):
    plain = save_checkpoint({"x": np.zeros(1)}, str(tmp_path / "converted.ckpt"))
    cfg = load_config(["--arch", "vig_ti_224_gelu"], entry="predict")
    assert prediction_class_names(cfg, plain) == (imagenet_class_names(), "ImageNet-1k")
    names = imagenet_class_names()
    assert len(set(names)) == 1000 and names[0] == "tench" and names[207] == "golden retriever"
    cfg = load_config(["--arch", "vig_nano_gelu", "--num_classes", "3"], entry="predict")
    assert prediction_class_names(cfg, run["ckpt"])[0] == ["cat", "dog", "eel"]  # the run's config.yaml
    assert prediction_class_names(cfg, plain)[0] == ["class 0", "class 1", "class 2"]
    recorded = tmp_path / "run"  # the class list a checkpoint records wins over its folder's config.yaml
    os.makedirs(recorded)
    (recorded / "config.yaml").write_text((run["root"] / "run" / "config.yaml").read_text())
    ckpt = save_checkpoint({"x": np.zeros(1), DATA_KEY: json.dumps({"classes": ["ant", "bee", "cow"]})},
                           str(recorded / "last.ckpt"))
    assert prediction_class_names(cfg, ckpt) == (["ant", "bee", "cow"], f"the class list recorded in {ckpt}")


def test_find_images_skips_hidden_entries(tmp_path):
    write_images(tmp_path)
    found, problems = find_images([str(tmp_path), str(tmp_path / "rgb.png")])
    assert problems == [] and len(found) == 7 and not any(".hidden" in f for f in found)
