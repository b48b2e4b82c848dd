"""Configuration: YAML + command-line merging, errors, every config file, no dead keys."""
import glob
import os
import re

import pytest
import yaml

from src.app.config import OPTIONS, ConfigError, load_config, save_config
from src.models import list_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, data):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_defaults_then_file_then_command_line(tmp_path):
    path = write(tmp_path, {"arch": "vig_ti_224_gelu", "base_lr": "2e-3", "batch_size": 64, "beta": [0.9, 0.98]})
    cfg = load_config(["--config", path, "--batch_size", "16", "--resume", "null"])
    assert cfg.arch == "vig_ti_224_gelu"
    assert cfg.base_lr == 2e-3 and isinstance(cfg.base_lr, float)  # YAML 1.1 reads 2e-3 as a string
    assert cfg.batch_size == 16
    assert cfg.beta == (0.9, 0.98)
    assert cfg.resume is None
    assert cfg.weight_decay == OPTIONS["weight_decay"].default
    assert load_config(["--vig_config", path]).batch_size == 64  # the ModelZoo flag name


def test_unknown_keys_are_named_with_suggestions(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'base_lrr' on the command line.*base_lr"):
        load_config(["--arch", "x", "--base_lrr", "1"])
    path = write(tmp_path, {"arch": "x", "mixup_prop": 0.5})
    with pytest.raises(ConfigError, match=r"'mixup_prop' in .*cfg.yaml.*mixup_prob"):
        load_config(["--config", path])
    with pytest.raises(ConfigError, match="unexpected command-line argument 'stray'"):
        load_config(["--arch", "x", "stray"])


def test_bad_values_are_refused():
    with pytest.raises(ConfigError, match="'amp_level'.*'O1' is not one of"):
        load_config(["--arch", "x", "--amp_level", "O1"])
    with pytest.raises(ConfigError, match="'epochs'.*cannot use 'ten'"):
        load_config(["--arch", "x", "--epochs", "ten"])
    with pytest.raises(ConfigError, match="'is_dynamic_loss_scale'.*maybe"):
        load_config(["--arch", "x", "--is_dynamic_loss_scale", "maybe"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(["--config", "no/such.yaml"])
    with pytest.raises(ConfigError, match="no model given"):
        load_config([])


def test_a_key_written_twice_in_a_file_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("arch: vig_nano_gelu\nbase_lr: 0.1\nepochs: 3\nbase_lr: 0.2\n")
    with pytest.raises(ConfigError) as twice:
        load_config(["--config", str(path)])
    assert str(twice.value) == f"config file {str(path)!r} sets 'base_lr' twice (lines 2 and 4); keep one"


def test_a_schedule_too_long_to_hold_is_refused_before_it_is_made():
    from src.app.builders import learning_rates

    cfg = load_config(["--arch", "vig_nano_gelu", "--epochs", "10000", "--cooldown_epochs", "10"])
    with pytest.raises(ConfigError, match=r"^10010 epochs \(epochs \+ cooldown_epochs\) of 1000000 updates make "
                                          r"10,010,000,000 optimizer updates, more than the 100,000,000 a "
                                          r"learning-rate schedule may hold; lower epochs"):
        learning_rates(cfg, updates_per_epoch=10 ** 6, world=1)
    assert len(learning_rates(cfg, updates_per_epoch=1, world=1)) == 10010


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(["--arch", "pvig_s_224_gelu", "--beta", "0.8,0.9", "--crop_scale", "[0.3, 1.0]"])
    out = tmp_path / "saved.yaml"
    save_config(cfg, str(out))
    again = load_config(["--config", str(out)])
    assert {k: v for k, v in again.items() if k in OPTIONS} == {k: v for k, v in cfg.items() if k in OPTIONS}
    assert cfg.command_line_keys == ["arch", "beta", "crop_scale"] and again.command_line_keys == []


def test_every_config_file_loads_and_every_model_has_one():
    files = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
    archs = {load_config(["--config", path]).arch for path in files}
    assert set(list_models()) <= archs
    assert archs <= set(list_models())


def test_no_dead_keys():
    """Every schema key is read by the code (cfg.<key> or cfg["<key>"])."""
    sources = []
    for pattern in ("*.py", "src/**/*.py"):
        for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            with open(path, encoding="utf-8") as handle:
                sources.append(handle.read())
    code = "\n".join(sources)
    unread = [k for k in OPTIONS if not re.search(rf"cfg\.{k}\b|cfg\[\"{k}\"\]", code)]
    assert not unread, f"config keys nobody reads: {unread}"


@pytest.mark.parametrize("key, value, problem", [
    ("log_every", 0, "0 must be >= 1"), ("save_every", 0, "0 must be >= 1"), ("eval_every", 0, "0 must be >= 1"),
    ("image_size", 0, "0 must be in [16, 4096]"), ("crop_pct", 0, "0 must be in (0.0, 1.0]"),
    ("base_lr", -0.1, "-0.1 must be in (0.0, inf]"), ("ema_decay", 1, "1 must be in [0.0, 1.0)"),
    ("ema_decay", -0.5, "-0.5 must be in [0.0, 1.0)"), ("re_prob", 1.5, "1.5 must be in [0.0, 1.0]"),
    ("max_overflow_fraction", 1.5, "1.5 must be in [0.0, 1.0]"), ("overflow_window", 0, "0 must be >= 1"),
    ("batch_size", 8.9, "cannot use 8.9 as int (expected an integer, got 8.9)"),
])
def test_out_of_range_values_are_refused_in_the_file_and_on_the_command_line(tmp_path, key, value, problem):
    path = write(tmp_path, {"arch": "vig_ti_224_gelu", key: value})
    with pytest.raises(ConfigError) as in_file:
        load_config(["--config", path])
    assert str(in_file.value) == f"config key {key!r} in {path}: {problem}"
    with pytest.raises(ConfigError) as on_line:
        load_config(["--arch", "vig_ti_224_gelu", f"--{key}", str(value)])
    assert str(on_line.value).startswith(f"config key {key!r} on the command line: ")


def test_a_bad_value_stops_train_py_with_one_line(tmp_path):
    """Before any output: status 2, one line on stderr, no traceback."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "train.py", "--arch", "vig_nano_gelu", "--log_every", "0", "--train_url",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: config key 'log_every' on the command line: '0' must be >= 1 "
                                                "(set VIG_TRACEBACK=1 to see the traceback)"]
    assert not (tmp_path / "out").exists()


def test_bad_image_limits_are_checked():
    cfg = load_config(["--arch", "x"])
    assert cfg.max_bad_image_fraction == 0.001 and cfg.max_image_pixels == 178_956_970  # Pillow's own limit
    assert load_config(["--arch", "x", "--max_bad_image_fraction", "0"]).max_bad_image_fraction == 0.0
    for entry in ("train", "eval", "preprocess"):
        assert load_config(["--arch", "x", "--max_image_pixels", "5"], entry=entry).max_image_pixels == 5
    with pytest.raises(ConfigError, match=r"'max_bad_image_fraction' on the command line: '1.5' must be in "
                                          r"\[0.0, 1.0\]"):
        load_config(["--arch", "x", "--max_bad_image_fraction", "1.5"])
    with pytest.raises(ConfigError, match=r"'max_image_pixels' on the command line: '0' must be >= 1"):
        load_config(["--arch", "x", "--max_image_pixels", "0"])
    with pytest.raises(ConfigError, match=r"'max_image_pixels' on the command line: cannot use '1.5' as int"):
        load_config(["--arch", "x", "--max_image_pixels", "1.5"])
