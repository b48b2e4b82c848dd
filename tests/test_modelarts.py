"""ModelArts jobs (run_modelarts) against the stand-in moxing of tests/stubs: data and weights in, outputs
out after every checkpoint, resume from the object store, and the errors at start."""
import json
import os
import shutil
import sys

import pytest
import yaml

import train as train_entry
from src.app.config import ConfigError, load_config

STUBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stubs")
TINY = {"arch": "vig_nano_gelu", "num_classes": 3, "image_size": 32, "batch_size": 6, "num_parallel_workers": 1,
        "warmup_length": 0, "auto_augment": None, "mix_up": 0.0, "cutmix": 0.0, "re_prob": 0.0,
        "amp_level": "O0", "save_every": 1, "keep_last": 1, "log_every": 100, "device_target": "CPU"}


@pytest.fixture
def obs(tmp_path, monkeypatch, image_folder):
    """An object store holding the data and a config, and the stand-in moxing on sys.path."""
    root = tmp_path / "obs"
    shutil.copytree(image_folder, root / "bucket" / "data")
    config = dict(TINY, data_url="obs://bucket/data", train_url="obs://bucket/out", epochs=2)
    (root / "bucket" / "vig.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("MOXING_STUB_ROOT", str(root))
    monkeypatch.syspath_prepend(STUBS)
    import moxing
    moxing.file.UPLOADS.clear()
    return root


def modelarts_args(cache, *extra):
    return ["--vig_config", "obs://bucket/vig.yaml", "--run_modelarts", "True", "--cache_dir", str(cache), *extra]


@pytest.mark.slow(reason="training jobs in two caches")
def test_job_copies_in_uploads_each_checkpoint_and_resumes_from_the_store(obs, tmp_path):
    import moxing

    train_entry.main(modelarts_args(tmp_path / "cache1"))
    assert sorted(os.listdir(tmp_path / "cache1" / "data")) == ["train", "val"]  # one copy per server
    assert (tmp_path / "cache1" / "data.done").read_text() == "obs://bucket/data"
    out = obs / "bucket" / "out"
    assert {"last.ckpt", "best.ckpt", "epoch_0002.ckpt", "train.log", "config.yaml"} <= set(os.listdir(out))
    # uploaded after each save, not only at the end: epoch 1's checkpoint went up before epoch 2's existed
    uploads = {url.rsplit("/", 1)[1]: names for url, names in reversed(moxing.file.UPLOADS)}
    assert "epoch_0002.ckpt" not in uploads["epoch_0001.ckpt"]
    assert "epoch_0001.ckpt" not in os.listdir(out)  # keep_last 1: pruned here and on the store alike
    segment = (out / "train.log").read_text()

    # a new job (new machine, empty cache) refuses to train over the stored run, and continues it when asked
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train_entry.main(modelarts_args(tmp_path / "cache2", "--epochs", "3"))
    train_entry.main(modelarts_args(tmp_path / "cache3", "--epochs", "3", "--resume", "auto"))
    log = (out / "train.log").read_text()
    assert log.startswith(segment) and "resumed from" in log and "epoch 3/3" in log  # the whole history
    assert log.rstrip().endswith("in obs://bucket/out (local copy %s)" % (tmp_path / "cache3" / "train"))
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["type"] == "epoch"]
    assert epochs == [1, 2, 3]
    internal = [name for name in os.listdir(out) if name.startswith(".") or name.endswith((".lock", ".done"))]
    assert not internal and "training_curves.png" in os.listdir(out)  # the run's lock and copy markers stay local


def test_pretrained_weights_come_from_the_store(obs, tmp_path):
    from src.app.modelarts import localise

    (obs / "bucket" / "weights").mkdir()
    (obs / "bucket" / "weights" / "w.ckpt").write_bytes(b"weights")
    cfg, remote_train_url = localise(load_config(modelarts_args(tmp_path / "cache", "--pretrained",
                                                                "obs://bucket/weights/w.ckpt")), training=False)
    assert open(cfg.pretrained, "rb").read() == b"weights" and remote_train_url is None
    assert cfg.pretrained == str(tmp_path / "cache" / "weight" / "w.ckpt")


def test_a_config_on_the_store_reads_its_bases_from_there(obs, tmp_path):
    (obs / "bucket" / "configs" / "_base_").mkdir(parents=True)
    (obs / "bucket" / "configs" / "_base_" / "recipe.yaml").write_text("epochs: 9\nbase_lr: 0.5\n")
    (obs / "bucket" / "configs" / "model.yaml").write_text("_base_: _base_/recipe.yaml\narch: vig_nano_gelu\n"
                                                           "base_lr: 0.25\n")
    cfg = load_config(["--vig_config", "obs://bucket/configs/model.yaml", "--run_modelarts", "True"])
    assert (cfg.epochs, cfg.base_lr) == (9, 0.25)
    assert cfg.files == ("obs://bucket/configs/_base_/recipe.yaml", "obs://bucket/configs/model.yaml")


def test_missing_moxing_stops_at_start(tmp_path, monkeypatch, image_folder):
    monkeypatch.setitem(sys.modules, "moxing", None)  # not importable
    with pytest.raises(ConfigError, match="moxing package, which ModelArts"):
        train_entry.main(["--arch", "vig_nano_gelu", "--run_modelarts", "True", "--data_url", image_folder,
                          "--train_url", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_object_store_paths_need_run_modelarts(tmp_path):
    with pytest.raises(ConfigError, match="train_url 'obs://b/out' is an object-store URL: add --run_modelarts"):
        load_config(["--arch", "vig_nano_gelu", "--train_url", "obs://b/out"])
    with pytest.raises(ConfigError, match="object-store URL: add --run_modelarts"):
        load_config(["--vig_config", "obs://b/vig.yaml"])
    path = tmp_path / "c.yaml"
    path.write_text("arch: vig_nano_gelu\ndata_url: s3://b/data\n")
    with pytest.raises(ConfigError, match="data_url 's3://b/data'"):
        load_config(["--config", str(path)])


@pytest.mark.slow(reason="a training job, then an evaluation job")
def test_an_evaluation_job_writes_its_results_to_the_output_location(obs, tmp_path, image_folder):
    """ModelArts passes --train_url to every job; an evaluation job's results go there as JSON, never replacing
    an earlier one."""
    import eval as eval_entry
    import moxing

    train_entry.main(modelarts_args(tmp_path / "cache1", "--epochs", "1"))
    args = modelarts_args(tmp_path / "cache2", "--pretrained", "obs://bucket/out/best.ckpt", "--train_url",
                          "obs://bucket/results")
    first = eval_entry.main(args)
    second = eval_entry.main(args)
    assert (first["results_file"], second["results_file"]) == ("obs://bucket/results/eval_results.json",
                                                               "obs://bucket/results/eval_results-2.json")
    record = json.loads((obs / "bucket" / "results" / "eval_results.json").read_text())
    assert record["checkpoint"] == "obs://bucket/out/best.ckpt" and record["top1"] == first["top1"]
    assert {"top5", "loss", "images", "weights", "transform"} <= set(record)
    assert moxing.file.UPLOADS[-1][0] == "obs://bucket/results/eval_results-2.json"
