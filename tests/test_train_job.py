"""train.py end to end on a tiny image folder: logs, checkpoints, curves, exact resume, no overwrite."""
import json
import os

import pytest

import train as train_entry
from support import TRANSFORM, WORKERS, job_args
from src.models import model_cfg
from src.weights.checkpoint import read_checkpoint


@pytest.fixture(scope="module")
def first_run(trained_run):
    return trained_run


@pytest.mark.slow(reason="trains the shared demo run (about 40 s)")
def test_job_writes_logs_checkpoints_and_curves(first_run):
    names = set(os.listdir(first_run))
    assert {"config.yaml", "train.log", "metrics.jsonl", "training_curves.png", "best.ckpt", "last.ckpt",
            "epoch_0002.ckpt"} <= names
    assert "epoch_0001.ckpt" not in names  # keep_last 1 pruned it
    records = [json.loads(line) for line in open(first_run / "metrics.jsonl")]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all({"top1", "top5", "loss", "ema_top1", "ema_top5"} <= set(r) for r in epochs)
    steps = [r for r in records if r["type"] == "step"]
    assert steps and all(r["images_per_s"] >= 0 and r["lr"] > 0 for r in steps)
    log = open(first_run / "train.log").read()
    assert "loss" in log and "img/s" in log and "eta" in log and "val top1" in log and "ema top1" in log
    assert f"num_parallel_workers={WORKERS} lowered" in log  # a library warning reaches the run's log
    # best.ckpt records whether its top-1 was the model's or the EMA's, as validation measured them
    best_epoch = max(epochs, key=lambda r: max(r["top1"], r["ema_top1"]))
    best = read_checkpoint(str(first_run / "best.ckpt"))
    assert int(best["meta.best_is_ema"].asnumpy()) == int(best_epoch["ema_top1"] > best_epoch["top1"])
    assert ("EMA weights" if best_epoch["ema_top1"] > best_epoch["top1"] else "model weights") in log
    ckpt = read_checkpoint(str(first_run / "last.ckpt"))
    assert int(ckpt["meta.epoch"].asnumpy()) == 2
    # the run's classes and evaluation transform travel with its weights; the lock is gone with the run
    defaults = model_cfg("vig_nano_gelu")
    assert json.loads(ckpt["meta.data"]) == {"classes": ["class_0", "class_1", "class_2"], "image_size": 32,
                                             "mean": list(defaults["mean"]), "std": list(defaults["std"]),
                                             "crop_pct": defaults["crop_pct"]}
    assert ".run.lock" not in names
    skipped = sum(r["overflow_steps"] for r in epochs)
    assert f"{skipped} of 12 updates skipped for overflow" in log
    assert int(ckpt["meta.overflow_steps"].asnumpy()) == skipped
    assert "pos_embed" in ckpt and "ema.pos_embed" in ckpt
    assert any(k.startswith("train_state.exp_avg.") for k in ckpt) and "train_state.scale_sense" in ckpt
    assert "train_state.global_step" in ckpt


@pytest.mark.slow(reason="a second training run")
def test_resume_from_a_named_checkpoint_continues_after_its_epoch(first_run, image_folder, tmp_path):
    """--resume PATH (the ModelZoo's way) into a new folder continues after that checkpoint's epoch and
    step, with its best top-1. That a resumed run is bit-exact is the fault chain's test (test_run_faults)."""
    resumed = tmp_path / "c"
    train_entry.main(job_args(image_folder, resumed, "--epochs", "3", "--resume", str(first_run / "epoch_0002.ckpt")))
    log = open(resumed / "train.log").read()
    assert f"resumed from {first_run / 'epoch_0002.ckpt'} after epoch 2 (step 12)" in log
    assert "epoch 3/3" in log and "epoch 1/3" not in log and "epoch 2/3" not in log
    last, first = read_checkpoint(str(resumed / "last.ckpt")), read_checkpoint(str(first_run / "last.ckpt"))
    assert [int(last[f"meta.{k}"].asnumpy()) for k in ("epoch", "step")] == [3, 18]
    assert float(last["meta.best_top1"].asnumpy()) >= float(first["meta.best_top1"].asnumpy())


@pytest.mark.slow(reason="needs the shared trained run")
def test_existing_run_is_not_overwritten(first_run, image_folder):
    before = os.path.getmtime(first_run / "last.ckpt")
    with pytest.raises(ValueError, match="already holds checkpoints.*--resume auto"):
        train_entry.main(job_args(image_folder, first_run))
    assert os.path.getmtime(first_run / "last.ckpt") == before


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_data"):
        train_entry.main(job_args(str(tmp_path / "no_such_data"), tmp_path / "out"))


@pytest.mark.slow(reason="needs the shared trained run")
def test_resume_auto_of_a_finished_run_trains_nothing(first_run, image_folder):
    before = os.path.getmtime(first_run / "last.ckpt")
    result = train_entry.main(job_args(image_folder, first_run, "--resume", "auto"))
    assert result["best_epoch"] >= 1 and os.path.getmtime(first_run / "last.ckpt") == before
    assert "already finished its 2 epochs" in open(first_run / "train.log").read()


@pytest.mark.slow(reason="a training run")
def test_resume_auto_without_a_run_starts_one_with_the_scaled_lr(image_folder, tmp_path):
    """--resume auto in an empty folder starts a new run (logged); lr_batch_size scales the schedule by the total
    batch."""
    out = tmp_path / "new"
    train_entry.main(job_args(image_folder, out, "--resume", "auto", "--epochs", "1", "--warmup_length", "0",
                              "--lr_scheduler", "constant_lr", "--lr_batch_size", "24", "--ema_decay", "0"))
    log = open(out / "train.log").read()
    assert "--resume auto: no checkpoint in" in log and "starting a new run" in log
    assert "learning rates x 0.25: total batch 6 (1 ranks x batch 6 x accumulation 1) / lr_batch_size 24" in log
    lrs = [json.loads(line)["lr"] for line in open(out / "metrics.jsonl") if '"step"' in line]
    assert lrs and all(abs(lr - 0.0005) < 1e-9 for lr in lrs)



@pytest.fixture
def pico(monkeypatch):
    """A two-block ViG of 32 channels registered for this test only: train.py's whole path at a third of vig_nano's
    compile time."""
    from functools import partial
    from src.models import VisionGNN, registry
    from src.models.layers import knn_specs
    monkeypatch.setitem(registry._BUILDERS, "vig_pico", partial(VisionGNN, 32, knn_specs([4, 4], [1, 1])))
    monkeypatch.setitem(registry._DEFAULT_CFGS, "vig_pico", registry.default_cfg(input_size=32))
    return "vig_pico"


def o2_pair_args(arch, folder, out, amp_level):
    """train.py's command line of the O2-against-O0 pair: the demo's recipe (no mixup, label smoothing, dynamic loss
    scale, clipping) in the native form (the one Ascend runs) on two classes of stripes at 32 px, validated once at
    the end; the loss scale starts high enough for float16 gradients to overflow at first."""
    return ["--arch", arch, "--data_url", str(folder), "--train_url", str(out), "--num_classes", "2",
            "--image_size", "32", "--batch_size", "16", "--num_parallel_workers", "2", "--epochs", "8",
            "--eval_every", "8", "--cooldown_epochs", "0", "--warmup_length", "0", "--base_lr", "0.004",
            "--lr_batch_size", "null", "--drop_path_rate", "0.0", "--repeated_aug", "0", "--mix_up", "0", "--cutmix",
            "0", "--auto_augment", "null", "--re_prob", "0", "--label_smoothing", "0.1", "--kernel_impl", "native",
            "--amp_level", amp_level, "--is_dynamic_loss_scale", "true", "--loss_scale", str(2.0 ** 17),
            "--clip_global_norm_value", "5", "--ema_decay", "0", "--log_every", "1", "--save_every", "8",
            "--keep_last", "1", *TRANSFORM]


@pytest.mark.slow(reason="two training runs, O2 and O0")
def test_o2_trains_as_o0_and_logs_its_skipped_steps(pico, tmp_path):
    """The native form at O2 (float16; graphs, BatchNorm and loss in float32) with a dynamic loss scale reaches the
    top-1 of the same run at O0 within one point (100 validation images); the scale comes down from float16
    overflows, and the skipped steps are counted in the epoch records, the log and the result."""
    from support import write_image_folder
    folder = write_image_folder(tmp_path / "stripes", classes=2, train_per_class=32, val_per_class=50)
    o0 = train_entry.main(o2_pair_args(pico, folder, tmp_path / "o0", "O0"))
    o2 = train_entry.main(o2_pair_args(pico, folder, tmp_path / "o2", "O2"))
    assert o0["best_top1"] >= 90 and o2["best_top1"] >= 90  # chance is 50
    assert abs(o2["best_top1"] - o0["best_top1"]) <= 1.0
    records = [json.loads(line) for line in open(tmp_path / "o2" / "metrics.jsonl")]
    scales = [r["loss_scale"] for r in records if r["type"] == "step"]
    skipped = sum(r["overflow_steps"] for r in records if r["type"] == "epoch")
    assert 0 < skipped == o2["overflow_steps"] and scales[-1] < 2.0 ** 17
    assert f"{skipped} of {len(scales)} updates skipped for overflow" in open(tmp_path / "o2" / "train.log").read()
    assert o0["overflow_steps"] == 0
