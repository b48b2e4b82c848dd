"""Configuration: YAML + command-line merging, errors, every config file, no dead keys."""
import glob
import os
import re

import pytest
import yaml

from src.app.config import COMMAND_LINE, OPTIONS, ConfigError, effective_recipe, load_config, save_config
from src.models import list_models
from support import ROOT



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
    assert dict(again) == dict(cfg) and set(cfg) == set(OPTIONS)
    assert sorted(cfg.origins) == ["arch", "beta", "crop_scale"] and set(cfg.origins.values()) == {COMMAND_LINE}
    assert again.origins == {key: str(out) for key in OPTIONS} and again.files == (str(out),)


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


def test_a_config_takes_its_bases_keys_and_overrides_them(tmp_path):
    """_base_ (a path or a list, relative to the file; bases of bases too): the file's own keys win, each value's
    file is recorded and logged, and the saved config.yaml is one flat file that reloads to the same values."""
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "root.yaml").write_text("epochs: 7\nbase_lr: 0.5\nwd: 0.2\n")  # an alias too
    (tmp_path / "base" / "family.yaml").write_text("_base_: root.yaml\nbase_lr: 0.25\nbatch_size: 8\n")
    (tmp_path / "base" / "data.yaml").write_text("data_url: ./d\n")
    (tmp_path / "model.yaml").write_text("_base_: [base/family.yaml, base/data.yaml]\narch: vig_nano_gelu\n"
                                         "batch_size: 4\n")
    model, family, root, data = (str(tmp_path / name) for name in ("model.yaml", "base/family.yaml",
                                                                   "base/root.yaml", "base/data.yaml"))
    cfg = load_config(["--config", model, "--seed", "3"])
    assert (cfg.epochs, cfg.base_lr, cfg.weight_decay, cfg.batch_size, cfg.data_url) == (7, 0.25, 0.2, 4, "./d")
    assert cfg.origins == {"epochs": root, "weight_decay": root, "base_lr": family, "data_url": data,
                           "batch_size": model, "arch": model, "seed": COMMAND_LINE}
    assert cfg.files == (root, family, data, model) and cfg.file == model
    recipe = effective_recipe(cfg)
    assert recipe[root] == ["epochs=7", "weight_decay=0.2"] and recipe[family] == ["base_lr=0.25"]
    assert recipe[COMMAND_LINE] == ["seed=3"] and model not in recipe
    saved = tmp_path / "config.yaml"
    save_config(cfg, str(saved))
    assert "_base_" not in yaml.safe_load(saved.read_text())
    assert dict(load_config(["--config", str(saved)])) == dict(cfg)


@pytest.mark.parametrize("files, problem", [
    ({"a.yaml": "_base_: b.yaml\narch: x\n", "b.yaml": "mixup_prop: 0.5\n"},
     r"unknown config key 'mixup_prop' in {tmp}/b.yaml. Close valid keys: mixup_prob"),
    ({"a.yaml": "_base_: b.yaml\n", "b.yaml": "epochs: 3\nepochs: 4\n"},
     r"config file '{tmp}/b.yaml' sets 'epochs' twice \(lines 1 and 2\); keep one"),
    ({"a.yaml": "_base_: b.yaml\n", "b.yaml": "keep_last: 2\nkeep_checkpoint_max: 3\n"},
     r"{tmp}/b.yaml sets 'keep_last' twice \(as 'keep_last' and as an alias\); keep one"),
    ({"a.yaml": "_base_: b.yaml\n", "b.yaml": "epochs: -1\n"}, r"config key 'epochs' in {tmp}/b.yaml: -1 must be in"),
    ({"a.yaml": "_base_: [b.yaml, c.yaml]\n", "b.yaml": "epochs: 3\n", "c.yaml": "epochs: 4\n"},
     r"{tmp}/b.yaml and {tmp}/c.yaml both set 'epochs', as bases of {tmp}/a.yaml: set it in one of them, or in "
     r"{tmp}/a.yaml itself"),
    ({"a.yaml": "_base_: no/such.yaml\n"},
     r"config file {tmp}/a.yaml names the base {tmp}/no/such.yaml, which does not exist; fix its _base_"),
    ({"a.yaml": "_base_: b.yaml\n", "b.yaml": "_base_: a.yaml\n"},
     r"config file {tmp}/a.yaml is its own base \({tmp}/a.yaml -> {tmp}/b.yaml -> {tmp}/a.yaml\); remove one _base_"),
    ({"a.yaml": "_base_: 3\n"}, r"_base_ in {tmp}/a.yaml must be a path or a list of paths"),
])
def test_a_mistake_in_a_chain_of_bases_is_one_line_naming_its_file(tmp_path, files, problem):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match="^" + problem.format(tmp=re.escape(str(tmp_path)))):
        load_config(["--config", str(tmp_path / "a.yaml"), "--arch", "x"])


def test_each_shipped_config_logs_its_base_file():
    path = os.path.join("configs", "pvig_b_224_gelu.yaml")
    cfg = load_config(["--config", path])
    base = os.path.join("configs", "_base_", "vig_imagenet.yaml")
    assert cfg.files == (base, path) and cfg.crop_pct == 0.95 and cfg.origins["crop_pct"] == path
    assert "ema_decay=0.99996" in effective_recipe(cfg)[base]
