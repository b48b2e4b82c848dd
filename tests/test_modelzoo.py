"""A MindSpore ModelZoo ViG user's files and commands: their YAML, their src/args.py flags, their scripts."""
import glob
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from src.app.builders import eval_transform, kernel_impl, learning_rates, model_from_config
from src.app.config import RECIPE_KEYS, ConfigError, effective_recipe, load_config
from src.app.device import DeviceError, data_parallel
from support import ROOT

# research/cv/ViG/src/configs/vig_s_patch16_224.yaml of the ModelZoo, key for key
MODELZOO_YAML = """\
# Architecture
arch: vig_s_patch16_224

# ===== Dataset ===== #
data_url: ../data/imagenet
set: ImageNet
num_classes: 1000
mix_up: 0.8
cutmix: 1.0
auto_augment: rand-m9-mstd0.5-inc1
interpolation: bicubic
re_prob: 0.25
re_mode: pixel
re_count: 1
mixup_prob: 1.
switch_prob: 0.5
mixup_mode: batch
image_size: 224


# ===== Learning Rate Policy ======== #
optimizer: adamw
base_lr: 0.002
drop_path_rate: 0.1
warmup_lr: 0.00000007
min_lr: 0.000006
lr_scheduler: cosine_lr
warmup_length: 20


# ===== Network training config ===== #
amp_level: O2
keep_bn_fp32: True
beta: [ 0.9, 0.999 ]
clip_global_norm_value: 5.
is_dynamic_loss_scale: True
epochs: 300
label_smoothing: 0.1
weight_decay: 0.05
momentum: 0.9
batch_size: 16

# ===== Hardware setup ===== #
num_parallel_workers: 8
device_target: Ascend"""
# What makes the ModelZoo recipe small enough for a CPU test (command-line overrides, as a user would add).
TINY = ["-a", "vig_nano_gelu", "--image_size", "32", "--num_classes", "3", "--epochs", "1", "--warmup_length", "0",
        "--batch_size", "6", "-j", "1", "--auto_augment", "none", "--mix_up", "0", "--cutmix", "0", "--re_prob", "0",
        "--amp_level", "O0", "--device_target", "CPU"]


@pytest.fixture
def modelzoo_yaml(tmp_path):
    path = tmp_path / "vig_s_patch16_224.yaml"
    path.write_text(MODELZOO_YAML)
    return str(path)


def test_their_yaml_trains_their_recipe(modelzoo_yaml):
    cfg = load_config(["--device_id", "0", "--device_target", "Ascend", "--vig_config", modelzoo_yaml])
    assert cfg.arch == "vig_s_patch16_224" and cfg.keep_bn_fp32 is True and cfg.graph_mode == 0
    assert (cfg.repeated_aug, cfg.cooldown_epochs, cfg.ema_decay) == (0, 0, 0.0)  # steps the ModelZoo has not
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225) and cfg.crop_pct == 0.875
    # the whole schedule is scaled by the total batch / 512: 8 devices x 16 -> x 0.25
    lrs = learning_rates(cfg, updates_per_epoch=10, world=8)
    assert lrs.max() == pytest.approx(0.002 * 0.25, rel=1e-6)
    # their warm-up from warmup_lr, but floored at min_lr as the rest (np.clip of the whole array)
    assert lrs[0] == pytest.approx(6e-6 * 0.25) and lrs[100] == pytest.approx((7e-8 + (0.002 - 7e-8) / 2) * 0.25)
    assert lrs[-1] == pytest.approx(6e-6 * 0.25) and len(lrs) == 300 * 10
    # their cosine: from base_lr after the warm-up, floored at min_lr
    assert lrs[200] == pytest.approx(0.0005, rel=1e-6) and lrs[1600] == pytest.approx(0.00025, rel=1e-5)
    recipe = effective_recipe(cfg)
    assert "ema_decay=0.0" in recipe["ModelZoo: no such step (off)"]
    assert "lr_batch_size=512" in recipe["ModelZoo src/tools/optimizer.py, schedulers.py"]
    assert not any("base_lr=" in value for values in recipe.values() for value in values)  # written in the file


def test_every_args_flag_keeps_its_meaning(modelzoo_yaml):
    cfg = load_config(["--vig_config", modelzoo_yaml, "-a", "vig_ti_patch16_224", "--lr", "0.001", "--wd", "0.01",
                       "-j", "4", "--keep_checkpoint_max", "3", "--device_num", "1", "--start_epoch", "2",
                       "--accumulation_step", "4", "--in_channel", "3", "--run_modelarts", "False", "--eps", "1e-6",
                       "--loss_scale", "1024", "--lr_adjust", "10", "--lr_gamma", "0.9", "--graph_mode", "1",
                       "--mlp_ratio", "4", "--is_dynamic_loss_scale", "0", "--save_every", "3", "--seed", "5",
                       "--beta", "0.8,0.9", "--enable_modelarts", "false"])
    assert (cfg.arch, cfg.base_lr, cfg.weight_decay, cfg.num_parallel_workers, cfg.keep_last) == \
        ("vig_ti_patch16_224", 0.001, 0.01, 4, 3)
    assert (cfg.start_epoch, cfg.accumulation_step, cfg.eps, cfg.loss_scale, cfg.lr_adjust, cfg.lr_gamma) == \
        (2, 4, 1e-6, 1024.0, 10.0, 0.9)
    assert cfg.graph_mode == 1 and cfg.is_dynamic_loss_scale is False and cfg.beta == (0.8, 0.9)
    assert load_config(["--learning_rate", "0.003", "--arch", "x"]).base_lr == 0.003
    assert load_config(["--pretrained", "w.ckpt", "--vig_config", modelzoo_yaml, "--file_format", "AIR"],
                       entry="export").file_format == "AIR"
    # an alias exists only where its key does
    with pytest.raises(ConfigError, match=r"'base_lr' \(--lr\) is not read by eval.py"):
        load_config(["--vig_config", modelzoo_yaml, "--lr", "0.1"], entry="eval")


def test_flags_that_cannot_be_honoured_say_why(modelzoo_yaml, tmp_path):
    with pytest.raises(ConfigError, match="0 = GRAPH_MODE or 1 = PYNATIVE_MODE"):
        load_config(["--arch", "x", "--graph_mode", "true"])
    with pytest.raises(ConfigError, match="not one of"):
        load_config(["--arch", "x", "--graph_mode", "2"])
    with pytest.raises(ConfigError, match="keep_bn_fp32 false cannot be honoured with amp_level O2"):
        load_config(["--vig_config", modelzoo_yaml, "--keep_bn_fp32", "False"])
    with pytest.raises(ConfigError, match="start_epoch and resume"):
        load_config(["--arch", "x", "--start_epoch", "3", "--resume", "auto"])
    cfg = load_config(["--vig_config", modelzoo_yaml, *TINY, "--mlp_ratio", "2"])
    with pytest.raises(ConfigError, match="mlp_ratio 2.0 cannot be honoured"):
        model_from_config(cfg)
    with pytest.raises(ConfigError, match="in_channel 1: the image pipeline decodes RGB"):
        model_from_config(load_config(["--arch", "vig_nano_gelu", "--in_channel", "1"]))
    assert eval_transform(load_config(["--arch", "vig_nano_gelu", "--in_channel", "1"])).image_size == 224
    with pytest.raises(ConfigError, match="compiled CPU kernels, which cannot run on Ascend"):
        kernel_impl(load_config(["--vig_config", modelzoo_yaml, "--kernel_impl", "cpu"]))
    assert kernel_impl(load_config(["--vig_config", modelzoo_yaml])) == "native"
    both = tmp_path / "both.yaml"
    both.write_text("arch: x\nkeep_last: 2\nkeep_checkpoint_max: 3\n")
    with pytest.raises(ConfigError, match="sets 'keep_last' twice"):
        load_config(["--config", str(both)])


def test_our_configs_write_out_the_whole_recipe():
    """... each in itself or in its bases (configs/_base_/)."""
    for path in glob.glob(os.path.join(ROOT, "configs", "*.yaml")):
        cfg = load_config(["--config", path])
        missing = [key for key in RECIPE_KEYS if key not in cfg.origins]
        assert not missing, f"{path} and its bases {cfg.files[:-1]} leave {missing} to the ModelZoo defaults"


@pytest.mark.parametrize("env", [{"RANK_SIZE": "8"}, {"RANK_TABLE_FILE": "/t.json", "RANK_SIZE": "1"},
                                 {"MS_WORKER_NUM": "2", "MS_ROLE": "MS_WORKER"}])
def test_a_launched_rank_without_distribute_refuses(env):
    with pytest.raises(DeviceError, match=r"one rank of a multi-device launch .* pass --distribute true"):
        data_parallel(False, 1, env)


def test_multi_device_is_decided_as_the_modelzoo_does():
    table = {"RANK_TABLE_FILE": "/t.json", "RANK_SIZE": "8"}
    assert data_parallel(False, 1, dict(table, DEVICE_NUM="8"))  # DEVICE_NUM > 1: join the group
    assert data_parallel(False, 8, table) and data_parallel(True, 1, table)
    assert not data_parallel(False, 1, {"DEVICE_NUM": "1", "RANK_SIZE": "1"})
    with pytest.raises(DeviceError, match="device_num 8 needs a launcher"):
        data_parallel(False, 8, {})


def test_device_id_from_the_environment_wins(monkeypatch):
    """... and Ascend gets its operator precision mode (float32 matrix operators stay float32 on 910A); the CPU none."""
    import mindspore as ms
    from src.app import device
    calls = []
    monkeypatch.setattr(ms.hal, "is_available", lambda target: True)
    monkeypatch.setattr(ms, "set_device", lambda *args: calls.append(args))
    monkeypatch.setattr(ms, "set_context", lambda **kwargs: None)
    monkeypatch.setattr(ms.device_context.ascend.op_precision, "precision_mode", calls.append)
    monkeypatch.setenv("DEVICE_ID", "5")
    for name in ("RANK_TABLE_FILE", "RANK_SIZE", "DEVICE_NUM", "MS_WORKER_NUM", "MS_ROLE"):
        monkeypatch.delenv(name, raising=False)
    assert device.init_device("Ascend", 0, 0) == (0, 1)
    assert calls == [("Ascend", 5), "must_keep_origin_dtype"]
    device.init_device("CPU", 0, 0)
    assert calls[2:] == [("CPU",)]


def _script(name, *args, cwd, **env):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("RANK_TABLE_FILE", "RANK_ID", "RANK_SIZE", "DEVICE_ID", "DEVICE_NUM")}
    environment.update(PYTHON=sys.executable, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
                       **env)
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", name), *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=900)


def test_their_scripts_check_arguments_and_print_usage(tmp_path, modelzoo_yaml):
    for name, args in (("run_standalone_train_ascend.sh", 2), ("run_distribute_train_ascend.sh", 2),
                       ("run_eval_ascend.sh", 3)):
        short = _script(name, *["x"] * (args - 1), cwd=tmp_path)
        assert short.returncode == 1 and f"Usage: bash scripts/{name}" in short.stderr, short.stderr
        assert "Usage:" in _script(name, "--help", cwd=tmp_path).stdout
    cases = [
        (("run_standalone_train_ascend.sh", "zero", modelzoo_yaml), "DEVICE_ID must be an integer"),
        (("run_standalone_train_ascend.sh", "0", "nope.yaml"), "config file 'nope.yaml' not found"),
        (("run_standalone_train_ascend.sh", "0", modelzoo_yaml, "--epoch", "1"), "unknown config key 'epoch'"),
        (("run_standalone_train_ascend.sh", "0", modelzoo_yaml), "has no train/ folder"),  # ../data/imagenet
        (("run_distribute_train_ascend.sh", "missing.json", modelzoo_yaml),
         f"rank table 'missing.json' not found (looked in {tmp_path})\n"),
        (("run_eval_ascend.sh", "0", modelzoo_yaml, "missing.ckpt"),  # their scripts read it from their job folder
         f"checkpoint 'missing.ckpt' not found (looked in {tmp_path}, {tmp_path / 'evaluation_ascend'})\n"),
        (("run_standalone_train_ascend.sh", "0", "src/configs/vig_s_patch16_224.yaml"),
         f"not found (looked in {tmp_path}, {tmp_path / 'train_standalone'}, {ROOT}). Did you mean "
         f"configs/modelzoo/vig_s_patch16_224.yaml? This repository ships configs/<model>.yaml (the official recipe"),
        (("run_distribute_train.sh", modelzoo_yaml, "d", "2", "1", "127.0.0.1"), "several msrun nodes need"),
        (("run_distribute_train.sh", modelzoo_yaml, "d", "2", "2", "127.0.0.1", "8000", "1"), "does not fit"),
    ]
    for args, message in cases:
        done = _script(*args, cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)


def _rank_table(path, servers, devices):
    server_list = [{"server_id": f"10.0.0.{s}", "host_nic_ip": "reserve",
                    "device": [{"device_id": str(d), "device_ip": f"192.98.{s}.{d}", "rank_id": str(s * devices + d)}
                               for d in range(devices)]} for s in range(servers)]
    path.write_text(json.dumps({"version": "1.0", "server_count": str(servers), "server_list": server_list,
                                "status": "completed"}))
    return str(path)


def test_rank_table_plan_of_the_second_of_two_servers(tmp_path, modelzoo_yaml, image_folder):
    table = _rank_table(tmp_path / "hccl_16p.json", 2, 8)
    done = _script("run_distribute_train_ascend.sh", table, modelzoo_yaml, "16", "8", "--data_url", image_folder,
                   cwd=tmp_path, DRY_RUN="1")
    assert done.returncode == 0, done.stderr
    plans = [line for line in done.stdout.splitlines() if line.startswith("plan: rank")]
    assert [line.split()[2] for line in plans] == [str(r) for r in range(8, 16)]
    assert [line.split()[4] for line in plans] == [str(d) for d in range(8)]
    for rank, line in zip(range(8, 16), plans):
        assert f"cwd {tmp_path}/train_parallel{rank} " in line and f"RANK_ID={rank} " in line
        assert "RANK_SIZE=16" in line and "DEVICE_NUM=16" in line and "--distribute true" in line
        assert f"--train_url {tmp_path}/train_parallel8/outputs" in line  # one output folder for the ranks
        assert ("taskset -c" in line) == (subprocess.run(["which", "taskset"], capture_output=True).returncode == 0)
    assert not list(tmp_path.glob("train_parallel*"))  # nothing launched, nothing created
    for args, message in ((("15",), "has ranks 0..15 on 2 server(s), RANK_SIZE is 15"),
                          (("16", "4"), "RANK_START must be its first, 0")):
        bad = _script("run_distribute_train_ascend.sh", table, modelzoo_yaml, *args, "--data_url", image_folder,
                      cwd=tmp_path, DRY_RUN="1")
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


@pytest.mark.slow(reason="two script launches that train and evaluate")
def test_their_commands_train_and_evaluate_end_to_end(tmp_path, modelzoo_yaml, image_folder):
    """bash scripts/run_standalone_train_ascend.sh [DEVICE_ID] [CONFIG_PATH], then run_eval_ascend.sh, with
    data_url, CONFIG_PATH and CHECKPOINT_PATH relative to the job folders as their users write them;
    accumulation of 2 micro-batches per update."""
    os.symlink(image_folder, tmp_path / "data")  # their data_url ../data/imagenet, seen from ./train_standalone
    (tmp_path / "vig.yaml").write_text(MODELZOO_YAML.replace("../data/imagenet", "../data"))
    trained = _script("run_standalone_train_ascend.sh", "0", "../vig.yaml", *TINY, "--accumulation_step", "2",
                      cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    out = tmp_path / "train_standalone" / "outputs"
    log = (out / "train.log").read_text()
    assert "batch 6 x accumulation 2, 6 steps/epoch" in log  # 36 images: 3 updates of 2 x 6
    assert "learning rates x 0.02344: total batch 12" in log  # 12 / 512
    assert "ModelZoo src/data/imagenet.py: crop_pct=0.875, mean=[0.485, 0.456, 0.406]" in log
    steps = [json.loads(line) for line in open(out / "metrics.jsonl") if '"step"' in line]
    assert steps and steps[-1]["lr"] > 0
    evaluated = _script("run_eval_ascend.sh", "0", "vig.yaml", "../train_standalone/outputs/best.ckpt", "-a",
                        "vig_nano_gelu", "--image_size", "32", "--num_classes", "3", "--batch_size", "6", "-j", "1",
                        "--device_target", "CPU", cwd=tmp_path)  # model and data keys: eval.py takes no training keys
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "=> eval results:{'Loss': " in (tmp_path / "evaluation_ascend" / "eval.log").read_text()
    assert np.isfinite(float(evaluated.stdout.split("loss ")[-1].split()[0]))


def test_their_checkpoints_are_refused_with_the_reason(tmp_path):
    import mindspore as ms
    from src.models import create_model
    from src.weights.checkpoint import CheckpointError, load_model_weights

    path = str(tmp_path / "vig_s_patch16_224.ckpt")
    ms.save_checkpoint([{"name": "patch_embed.conv1.weight", "data": ms.Tensor(np.zeros((3, 3, 1, 1), np.float32))},
                        {"name": "blocks.0.grapher.fc1.0.weight", "data": ms.Tensor(np.zeros((2, 2), np.float32))}],
                       path)
    with pytest.raises(CheckpointError, match="MindSpore ModelZoo ViG checkpoint .* computes another function"):
        load_model_weights(create_model("vig_nano_gelu", num_classes=3, img_size=32), path)


@pytest.mark.slow(reason="a training run")
def test_start_epoch_begins_a_new_run_there(tmp_path, modelzoo_yaml, image_folder):
    import train as train_entry
    out = tmp_path / "out"
    train_entry.main(["--vig_config", modelzoo_yaml, *TINY, "--epochs", "3", "--start_epoch", "2", "--data_url",
                      image_folder, "--train_url", str(out), "--lr_scheduler", "constant_lr", "--warmup_length", "2",
                      "--warmup_lr", "0", "--loss_scale", "1024", "--log_every", "1"])
    log = (out / "train.log").read_text()
    assert "start_epoch 2: a new run starting at epoch 3" in log and "epoch 3/3 step 1/6" in log
    assert "epoch 1/3" not in log and "epoch 2/3" not in log
    steps = [json.loads(line) for line in open(out / "metrics.jsonl") if '"step"' in line]
    # the schedule continues after its warm-up: the constant base_lr x 6 / 512, not a warm-up value
    assert steps[0]["lr"] == pytest.approx(0.002 * 6 / 512, rel=1e-5)


def test_launches_that_cannot_work_here_say_so_and_plans_still_print(tmp_path, modelzoo_yaml, image_folder):
    """A rank table with device_target CPU is refused before any rank starts; run_infer_310.sh without an Ascend
    environment refuses a run in one line but prints its plan under DRY_RUN=1, writing nothing."""
    from src.app.device import DeviceError, init_device

    table = _rank_table(tmp_path / "hccl_2p.json", 1, 2)
    refused = _script("run_distribute_train_ascend.sh", table, modelzoo_yaml, "--data_url", image_folder,
                      "--device_target", "CPU", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.startswith("error: an HCCL rank table starts Ascend ranks, but "
                                                                 "device_target is CPU"), refused.stderr
    assert not (tmp_path / "train_parallel0").exists()
    with mock.patch.dict(os.environ, {"RANK_TABLE_FILE": table, "RANK_SIZE": "2"}):
        with pytest.raises(DeviceError, match="an HCCL rank table .* but device_target is CPU: train on Ascend"):
            init_device("CPU", distribute=True)

    (tmp_path / "m.mindir").write_bytes(b"exported")
    nowhere = str(tmp_path / "no_ascend")
    args = ("run_infer_310.sh", "m.mindir", image_folder, modelzoo_yaml)
    run = _script(*args, cwd=tmp_path, ASCEND_HOME=nowhere)
    assert run.returncode == 2 and run.stderr.startswith(f"error: no Ascend environment ({nowhere} missing")
    plan = _script(*args, cwd=tmp_path, ASCEND_HOME=nowhere, DRY_RUN="1")
    assert plan.returncode == 0, plan.stderr
    assert [line.split(" ")[1] for line in plan.stdout.splitlines() if line.startswith("plan:")] == \
        ["build", "preprocess", "inference", "accuracy"]
    assert f"note: no Ascend environment here ({nowhere} missing" in plan.stdout
    assert f"--preprocess_path {tmp_path}/infer_310_" in plan.stdout
    assert sorted(os.listdir(tmp_path)) == ["hccl_2p.json", "m.mindir", "vig_s_patch16_224.yaml"]


def test_their_310_flags_and_a_failing_group_init(tmp_path):
    """preprocess.py --dataset_name imagenet2012 --data_path, postprocess.py --result_dir; a data-parallel group
    that cannot be joined is one line with MindSpore's reason, not its traceback."""
    import preprocess as preprocess_entry
    from src.app.device import DeviceError, init_device

    assert load_config(["--result_dir", "r", "--preprocess_path", "p"], entry="postprocess").result_path == "r"
    cfg = load_config(["--arch", "vig_nano_gelu", "--data_path", "d", "--dataset_name", "imagenet2012"],
                      entry="preprocess", arguments=[preprocess_entry.DATASET_NAME])
    assert (cfg.data_url, cfg.arguments.dataset_name) == ("d", "imagenet2012")
    with pytest.raises(ConfigError, match="invalid choice"):
        load_config(["--arch", "x", "--dataset_name", "cifar10"], entry="preprocess",
                    arguments=[preprocess_entry.DATASET_NAME])

    def refused(*_):
        raise RuntimeError("Failed to init the communication: the scheduler at 10.0.0.1:8118 did not answer.\n"
                           "----- C++ Call Stack -----\nframe 0 ...")

    with mock.patch.dict(os.environ, {"MS_WORKER_NUM": "2", "MS_ROLE": "MS_WORKER"}), \
            mock.patch("mindspore.communication.init", refused):
        with pytest.raises(DeviceError) as info:
            init_device("CPU", distribute=True)
    assert str(info.value) == ("cannot join the data-parallel group started by msrun (MindSpore: Failed to init the "
                               "communication: the scheduler at 10.0.0.1:8118 did not answer.); check the launcher's "
                               "settings and that every rank can reach the others")
