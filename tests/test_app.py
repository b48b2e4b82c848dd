"""The application layer and its shared plumbing: one-line user errors, data preparation, checkpoint
reading, library warnings in the run log, the plot's backend, EMA-or-model weights."""
import importlib
import logging

import numpy as np
import pytest
from mindspore import Tensor

from src.app.cli import TRACEBACK_HINT, run_cli
from src.app.config import ConfigError, load_config
from src.weights.checkpoint import CheckpointError, load_model_weights, read_checkpoint, save_checkpoint


def test_user_errors_are_one_line_with_the_traceback_hint(capsys, monkeypatch):
    monkeypatch.delenv("VIG_TRACEBACK", raising=False)

    def bad_config():
        raise ConfigError("config key 'x' is wrong")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(bad_config)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: config key 'x' is wrong {TRACEBACK_HINT}" and "VIG_TRACEBACK=1" in err
    monkeypatch.setenv("VIG_TRACEBACK", "1")
    with pytest.raises(ConfigError):
        run_cli(bad_config)


def test_a_fault_keeps_its_traceback(capsys):
    """A ValueError that is not one of the project's user errors is a bug: it is not turned into one line."""
    def bug():
        return int("not a number")

    with pytest.raises(ValueError, match="invalid literal"):
        run_cli(bug)
    assert "error:" not in capsys.readouterr().err


def test_other_ranks_say_when_the_digits_never_come(tmp_path):
    from src.app.builders import prepare_data
    from src.data import DatasetError

    cfg = load_config(["--arch", "vig_nano_gelu", "--set", "digits", "--data_url", str(tmp_path / "digits")])
    with pytest.raises(DatasetError, match=r"rank 1 waited 0 s for rank 0 .*digits.json never appeared"):
        prepare_data(cfg, rank=1, wait_seconds=0.2)


def test_an_unreadable_checkpoint_names_mindspores_reason_and_an_empty_one_says_so(tmp_path):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"\x00\x01 not a checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot read .*broken.ckpt.*\(MindSpore: .+\)"):
        read_checkpoint(str(path))
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    for meta_only in (False, True):
        with pytest.raises(CheckpointError) as refused:
            read_checkpoint(str(empty), meta_only=meta_only)
        assert str(refused.value) == (f"cannot read {str(empty)!r} as a MindSpore checkpoint: the file is empty or "
                                      f"truncated (0 bytes, no complete entry); write or copy it again")


def test_library_warnings_reach_the_run_log(tmp_path):
    from src.engine.logger import get_logger

    log = get_logger("train", str(tmp_path), rank=0)
    logging.getLogger("src.data.dataset").warning("num_parallel_workers=8 lowered to the 2 CPUs")
    log.info("a run line")
    get_logger("train", str(tmp_path / "other"), rank=0)  # a second run replaces the first run's handlers
    logging.getLogger("src.models.layers.kernels").warning("second run only")
    text = (tmp_path / "train.log").read_text()
    assert "lowered to the 2 CPUs" in text and "a run line" in text and "second run only" not in text
    assert "second run only" in (tmp_path / "other" / "train.log").read_text()


def test_plotting_leaves_the_pyplot_backend_alone(tmp_path):
    import matplotlib
    import src.engine.plot as plot

    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        importlib.reload(plot)
        metrics = tmp_path / "m.jsonl"
        metrics.write_text('{"type": "step", "step": 1, "loss": 2.0, "lr": 0.1}\n'
                           '{"type": "epoch", "epoch": 1, "top1": 50.0, "top5": 90.0}\n')
        plot.plot_training_curves(str(metrics), str(tmp_path / "curves.png"))
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        matplotlib.use(previous)


@pytest.mark.parametrize("recorded", [0, 1])
def test_best_weights_are_the_recorded_ones(tmp_path, recorded):
    """Without --use_ema, a checkpoint's recorded best (model or EMA) is loaded; an explicit choice wins."""
    from src.models import create_model

    net = create_model("vig_nano_gelu", num_classes=3, img_size=32)
    entries = {p.name: p for p in net.get_parameters()}
    entries.update({f"ema.{p.name}": Tensor(p.asnumpy() + 1.0) for p in net.trainable_params()})
    entries["meta.best_is_ema"] = recorded
    save_checkpoint(entries, str(tmp_path / "best.ckpt"))
    target = create_model("vig_nano_gelu", num_classes=3, img_size=32)
    stem = lambda: target.parameters_dict()["stem.convs.0.weight"].asnumpy()  # noqa: E731
    plain = net.parameters_dict()["stem.convs.0.weight"].asnumpy()
    assert load_model_weights(target, str(tmp_path / "best.ckpt"), use_ema=None).ema == bool(recorded)
    np.testing.assert_array_equal(stem(), plain + 1.0 if recorded else plain)
    assert not load_model_weights(target, str(tmp_path / "best.ckpt"), use_ema=False).ema
    np.testing.assert_array_equal(stem(), plain)


def _record_only_checkpoint(path, **record):
    """A checkpoint holding only a ``meta.data`` record (what resolution reads)."""
    import json
    from src.weights.checkpoint import DATA_KEY

    save_checkpoint({DATA_KEY: json.dumps(record), "meta.epoch": 0}, str(path))
    return str(path)


def test_the_evaluation_transform_is_resolved_key_by_key(tmp_path):
    """Command line, then config file, then the checkpoint's record, then the ModelZoo value (with a file) or the
    model's default cfg (without one)."""
    from src.app.builders import resolve_transform

    ckpt = _record_only_checkpoint(tmp_path / "w.ckpt", image_size=64, mean=[0.1, 0.2, 0.3], std=[0.4, 0.5, 0.6],
                                   crop_pct=0.8)
    # no file, no checkpoint: the model's own default cfg (vig_ti: mean = std = 0.5, crop 0.9, 224)
    cfg, sources = resolve_transform(load_config(["--arch", "vig_ti_224_gelu"], entry="eval"))
    assert (cfg.image_size, cfg.mean, cfg.std, cfg.crop_pct) == (224, (0.5,) * 3, (0.5,) * 3, 0.9)
    assert sources["mean"] == "vig_ti_224_gelu default cfg"
    assert resolve_transform(load_config(["--arch", "graphconvnet_ti"], entry="eval"))[0].mean == (0.485, 0.456, 0.406)
    assert resolve_transform(load_config(["--arch", "pvig_b_224_gelu"], entry="eval"))[0].crop_pct == 0.95
    # the checkpoint's record wins over both defaults, the command line over the record
    cfg, sources = resolve_transform(load_config(["--arch", "vig_ti_224_gelu", "--crop_pct", "0.7"], entry="eval"),
                                     ckpt)
    assert (cfg.image_size, cfg.mean, cfg.std, cfg.crop_pct) == (64, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), 0.7)
    assert sources == {"image_size": ckpt, "mean": ckpt, "std": ckpt, "crop_pct": "command line"}
    # a config file: what it writes wins over the record; what it leaves out takes the record, else the ModelZoo's
    config = tmp_path / "modelzoo.yaml"
    config.write_text("arch: vig_ti_224_gelu\nmean: [0.3, 0.3, 0.3]\ncrop_pct: null\n")
    cfg, sources = resolve_transform(load_config(["--config", str(config)], entry="eval"), ckpt)
    assert (cfg.mean, cfg.std, cfg.crop_pct, sources["mean"]) == ((0.3,) * 3, (0.4, 0.5, 0.6), 0.8, str(config))
    cfg, sources = resolve_transform(load_config(["--config", str(config)], entry="eval"))
    assert (cfg.std, cfg.crop_pct, cfg.image_size) == ((0.229, 0.224, 0.225), 0.9, 224)  # ModelZoo; null: the model's
    assert sources["std"] == "ModelZoo src/data/imagenet.py" and sources["crop_pct"] == "vig_ti_224_gelu default cfg"


def test_eval_without_a_config_uses_what_the_converted_checkpoint_records(tmp_path, image_folder, capsys):
    """A converted checkpoint of a model whose official transform is not the ModelZoo's (mean = std = 0.5):
    eval.py with neither --config nor --mean evaluates it that way, the same as spelling it out."""
    torch = pytest.importorskip("torch")
    import eval as eval_entry
    from src.models import create_model
    from src.weights.convert import convert_official_checkpoint, to_official_names

    net = create_model("vig_nano_gelu", num_classes=3)
    official = to_official_names({p.name: p.asnumpy() for p in net.get_parameters()})
    torch.save({name: torch.from_numpy(value) for name, value in official.items()}, tmp_path / "w.pth")
    ckpt = str(tmp_path / "w.ckpt")
    convert_official_checkpoint(str(tmp_path / "w.pth"), ckpt, "vig_nano_gelu")
    common = ["--arch", "vig_nano_gelu", "--num_classes", "3", "--pretrained", ckpt, "--data_url", image_folder,
              "--batch_size", "6", "--num_parallel_workers", "1", "--graph_mode", "1"]
    implicit = eval_entry.main(common)
    printed = capsys.readouterr().out
    assert f"mean 0.5,0.5,0.5 ({ckpt})" in printed and f"image_size 64 ({ckpt})" in printed
    assert "=> eval results:{'Loss': " in printed
    explicit = eval_entry.main(common + ["--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--crop_pct", "0.9",
                                         "--image_size", "64"])
    assert (implicit["top1"], implicit["loss"]) == (explicit["top1"], explicit["loss"])
    with pytest.raises(CheckpointError, match=r"mean \[0.5, 0.5, 0.5\] \(here \[0.485, 0.456, 0.406\]\)"):
        eval_entry.main(common + ["--mean", "0.485,0.456,0.406"])
