"""What each entry point accepts on its command line (``ENTRY_KEYS``) is exactly what it reads: each entry point's
``main`` runs on a tiny setup through a Config that records every key read, with the branches that read more
keys taken (weights given, a run_modelarts job on local paths, the digits set), and the recorded keys must equal
its ENTRY_KEYS, in both directions. The heavy steps that receive plain values and no configuration (the training
loop, evaluation, export, inference, drawing) are replaced by stand-ins: they cannot read a key."""
import json
import os

import numpy as np
import pytest
import mindspore as ms
from PIL import Image

import eval as eval_entry
import export as export_entry
import infer as infer_entry
import postprocess as postprocess_entry
import predict as predict_entry
import preprocess as preprocess_entry
import train as train_entry
import visualize as visualize_entry
from support import execution_mode
from src.app import builders, jobs
from src.app.config import ENTRY_KEYS, Config
from src.data import EvalTransformParams

STUBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stubs")
TRANSFORM = EvalTransformParams(image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=0.9)
MODEL = ["--arch", "vig_nano_gelu", "--num_classes", "3", "--image_size", "32", "--mean", "0.5,0.5,0.5", "--std",
         "0.5,0.5,0.5", "--crop_pct", "0.9"]


class Recording(Config):
    """A Config that records the keys read (every read goes through ``__getitem__``)."""
    read = set()

    def __getitem__(self, key):
        Recording.read.add(key)
        return super().__getitem__(key)


# Stand-ins for the steps that take plain values: (module attribute, what it returns)
STAND_INS = {
    "fit": {}, "evaluate": {"top1": 0.0, "top5": 0.0, "loss": 0.0, "count": 0}, "export_network": "model.mindir",
    "preprocess": {"images": 0, "classes": 0, "reused": False}, "infer_files": 0,
    "postprocess": {"top1": 0.0, "top5": 0.0, "count": 0}, "classify_files": [],
    "visualize": {"target": 0, "target_name": "a", "probability": 1.0, "blocks": []},
    # reporting, which shows every key by design: the merged config.yaml and the logged recipe
    "save_config": None, "log_recipe": None,
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, image_folder):
    """Weights of vig_nano_gelu (3 classes, 32 px) recording the evaluation transform, and an image."""
    from src.models import create_model
    from src.weights.checkpoint import DATA_KEY, save_checkpoint

    folder = tmp_path_factory.mktemp("entry_keys")
    net = create_model("vig_nano_gelu", num_classes=3, img_size=32)
    weights = {p.name: p for p in net.get_parameters()}
    weights[DATA_KEY] = json.dumps(TRANSFORM.record())
    save_checkpoint(weights, str(folder / "nano.ckpt"))
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(folder / "x.png")
    return {"tmp": folder, "images": image_folder, "ckpt": str(folder / "nano.ckpt")}


# entry point: (main, command line); {tmp}, {images}, {ckpt} from the setup
ENTRIES = {
    "train": (train_entry.main, MODEL + ["--data_url", "{images}", "--set", "digits", "--train_url", "{tmp}/run",
                                         "--pretrained", "{ckpt}", "--run_modelarts", "true", "--batch_size", "6",
                                         "--num_parallel_workers", "1", "--epochs", "1", "--graph_mode", "1"]),
    "eval": (eval_entry.main, MODEL + ["--data_url", "{images}", "--set", "digits", "--pretrained", "{ckpt}",
                                       "--run_modelarts", "true", "--train_url", "{tmp}/results", "--graph_mode", "1"]),
    "export": (export_entry.main, MODEL + ["--pretrained", "{ckpt}", "--file_name", "{tmp}/model"]),
    "preprocess": (preprocess_entry.main, ["--arch", "vig_nano_gelu", "--image_size", "32", "--data_url", "{images}",
                                           "--set", "digits", "--preprocess_path", "{tmp}/pre"]),
    "infer": (infer_entry.main, ["--arch", "vig_nano_gelu", "--preprocess_path", "{tmp}/pre", "--result_path",
                                 "{tmp}/res"]),
    "postprocess": (postprocess_entry.main, ["--preprocess_path", "{tmp}/pre", "--result_path", "{tmp}/res"]),
    "predict": (predict_entry.main, MODEL + ["--pretrained", "{ckpt}", "{tmp}/x.png", "--graph_mode", "1"]),
    "visualize": (visualize_entry.main, MODEL + ["--pretrained", "{ckpt}", "--image", "{tmp}/x.png", "--out",
                                                 "{tmp}/drawings"]),
}


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_each_entry_point_accepts_exactly_the_keys_it_reads(entry, setup, monkeypatch):
    main, argv = ENTRIES[entry]
    module = __import__(main.__module__)
    load = module.load_config
    monkeypatch.setattr(module, "load_config",
                        lambda *args, **kwargs: Recording(*_parts(load(*args, **kwargs))))
    for name, value in STAND_INS.items():
        monkeypatch.setattr(jobs, name, lambda *args, _value=value, **kwargs: _value)
    monkeypatch.setattr(builders, "write_digits_dataset", lambda *args, **kwargs: None)  # the image folder stands in
    monkeypatch.syspath_prepend(STUBS)  # moxing, for run_modelarts on local paths
    Recording.read = set()
    with execution_mode(ms.get_context("mode")):  # the entry points set their own
        main([arg.format(**setup) for arg in argv])
    accepted = set(ENTRY_KEYS[entry])
    drift = {"read but not accepted": sorted(Recording.read - accepted),
             "accepted but never read": sorted(accepted - Recording.read)}
    assert drift == {"read but not accepted": [], "accepted but never read": []}, f"{entry}.py: {drift}"


def _parts(cfg: Config):
    return cfg, cfg.origins, cfg.files, cfg.arguments
