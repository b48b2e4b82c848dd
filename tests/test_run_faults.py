"""A training run's faults: killed, stopped by a signal, sharing its folder, diverging, out of room,
a damaged or foreign file; every one leaves the user's files intact and says so in one line.

The chain (module fixture ``chain``) runs real train.py processes, one after another, on one output
folder with the job of ``conftest.job_args`` and checks that the last one ends with exactly the
checkpoint of an uninterrupted train.py process (trained first, in a folder of its own; a run inside the
test process, like ``trained_run``, can differ in the last bits after other tests ran in that process,
e.g. after tests/test_kernels.py):

1. killed (SIGKILL) in epoch 1, before any checkpoint: its lock file stays behind;
2. ``--resume auto`` starts anew (the dead run's lock does not hold it back) and is killed (SIGKILL)
   in the middle of its first write of last.ckpt, by a shim that wraps MindSpore's writer;
3. ``--resume auto`` removes the dead write's temporary, resumes from the newest complete
   checkpoint (epoch_0001.ckpt; there is no last.ckpt); a second start into the folder is refused
   while it runs; SIGTERM stops it mid-epoch 2;
4. ``--resume auto`` resumes in the middle of epoch 2; SIGINT to its process group (Ctrl-C) stops it;
   no data worker process outlives it;
5. ``--resume auto`` finishes the run.

The processes share MindSpore's compile cache, so only the first compiles the graphs.
"""
import ctypes
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import eval as eval_entry
import export as export_entry
import infer as infer_entry
import predict as predict_entry
import train as train_entry
from support import ROOT, TRANSFORM, NoBadImages, assert_same_checkpoints, in_process, job_args, write_image_folder
from src.app.cli import TRACEBACK_HINT, run_cli
from src.weights.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from src.utils.files import FolderLock, OutputFolderError, remove_stale_temporaries

TRAIN = os.path.join(ROOT, "train.py")
STEPS = 6  # per epoch: 36 training images, batch 6
TIMEOUT = 600

SHIM = '''"""Test shim: the real train.py, killed (SIGKILL) in the middle of its first write of last.ckpt."""
import os
import runpy
import signal
import sys

sys.path.insert(0, {root!r})
sys.argv[0] = os.path.join({root!r}, "train.py")  # before MindSpore reads it: train.py's compile cache applies
import mindspore.train.serialization as serialization  # noqa: E402


def dies_writing_last(write):
    written = []

    def wrapped(name, value, handle, *args, **kwargs):
        result = write(name, value, handle, *args, **kwargs)
        if os.path.basename(getattr(handle, "name", "")).startswith(".last.tmp"):
            written.append(name)
            if len(written) == 5:
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapped


serialization._write_parameter_bytes_data = dies_writing_last(serialization._write_parameter_bytes_data)
serialization._write_parameter_data = dies_writing_last(serialization._write_parameter_data)
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def default_sigint():
    """SIGINT as a terminal delivers it, even where the tests run as a background job (SIGINT ignored, which
    train.py keeps)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Run:
    """A train.py process in a session of its own; its stdout and stderr collected line by line."""

    def __init__(self, script, args, env):
        self.process = subprocess.Popen([sys.executable, script, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True,
                                        preexec_fn=default_sigint)
        self.pid = self.process.pid
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=lambda s=s, d=d: d.extend(s), daemon=True)
                        for s, d in ((self.process.stdout, self.out), (self.process.stderr, self.err))]
        for reader in self.readers:
            reader.start()

    def wait_for(self, text, timeout=TIMEOUT):
        deadline = time.time() + timeout
        while not any(text in line for line in list(self.out)):
            if self.process.poll() is not None or time.time() > deadline:
                self.kill()
                pytest.fail(f"train.py never logged {text!r}:\n{self.text()}")
            time.sleep(0.05)

    def finish(self, timeout=TIMEOUT):
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"train.py did not end within {timeout} s:\n{self.text()}")
        for reader in self.readers:
            reader.join(10)
        return self

    def kill(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    @property
    def returncode(self):
        return self.process.returncode

    def text(self):
        return "".join(self.out)[-4000:] + "\n--- stderr\n" + "".join(self.err)[-4000:]


def group_members(pgid):
    """Processes still in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def metas(folder):
    """Stored (epoch, batch, step) of every checkpoint in ``folder``."""
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".ckpt") and not name.startswith("."):
            meta = read_checkpoint(os.path.join(folder, name), meta_only=True)
            out[name] = tuple(int(meta[f"meta.{k}"].asnumpy()) for k in ("epoch", "batch", "step"))
    return out


@pytest.fixture(scope="module")
def chain(image_folder, tmp_path_factory):
    work = tmp_path_factory.mktemp("chain")
    out = work / "out"
    shim = work / "train_killed_writing_last.py"
    shim.write_text(SHIM.format(root=ROOT))
    env = {k: v for k, v in os.environ.items() if k != "VIG_TRACEBACK"}
    env.update(MS_COMPILER_CACHE_ENABLE="1", MS_COMPILER_CACHE_PATH=str(tmp_path_factory.getbasetemp() / "ms_cache"))
    args = job_args(image_folder, out, "--log_every", "1")
    resume = args + ["--resume", "auto"]
    stages = {"out": out, "uninterrupted": work / "uninterrupted"}
    done = Run(TRAIN, job_args(image_folder, stages["uninterrupted"]), env).finish()
    assert done.returncode == 0, done.text()

    run = Run(TRAIN, args, env)
    run.wait_for(f"epoch 1/2 step 2/{STEPS} loss")
    os.killpg(run.pid, signal.SIGKILL)
    stages["killed_early"] = (run.finish(), sorted(os.listdir(out)))

    run = Run(str(shim), resume, env).finish()
    stages["killed_writing"] = (run, sorted(os.listdir(out)), metas(out))

    run = Run(TRAIN, resume, env)
    run.wait_for("resumed from")
    stages["second_start"] = (in_process(train_entry.main, resume), run.process.poll(), run.pid)
    run.wait_for(f"epoch 2/2 step 1/{STEPS} loss")
    os.kill(run.pid, signal.SIGTERM)
    stages["sigterm"] = (run.finish(), sorted(os.listdir(out)), metas(out))

    done = metas(out)["last.ckpt"][1]
    run = Run(TRAIN, resume, env)
    run.wait_for(f"epoch 2/2 step {done + 1}/{STEPS} loss")
    os.killpg(run.pid, signal.SIGINT)
    run.finish()
    deadline = time.time() + 30  # MindSpore's worker cleaner notices its parent's exit within a second
    while group_members(run.pid) and time.time() < deadline:
        time.sleep(0.2)
    stages["sigint"] = (run, sorted(os.listdir(out)), metas(out), group_members(run.pid))

    stages["finished"] = (Run(TRAIN, resume, env).finish(), sorted(os.listdir(out)))
    return stages


@pytest.mark.slow(reason="the kill/resume chain: six training processes")
def test_a_run_killed_before_any_checkpoint_leaves_only_its_lock(chain):
    run, names = chain["killed_early"]
    assert run.returncode == -signal.SIGKILL, run.text()
    assert not [n for n in names if n.endswith(".ckpt")] and ".run.lock" in names


@pytest.mark.slow(reason="the kill/resume chain: six training processes")
def test_a_crash_in_the_first_last_ckpt_write_leaves_complete_checkpoints_and_one_temporary(chain):
    run, names, stored = chain["killed_writing"]
    assert run.returncode == -signal.SIGKILL, run.text()
    assert f"--resume auto: no checkpoint in {chain['out']}, starting a new run" in "".join(run.out)
    assert stored == {"best.ckpt": (1, 0, STEPS), "epoch_0001.ckpt": (1, 0, STEPS)}
    assert f".last.tmp{run.pid}.tmp" in names and "last.ckpt" not in names


@pytest.mark.slow(reason="the kill/resume chain: six training processes")
def test_resume_auto_takes_the_newest_complete_checkpoint_and_removes_the_dead_temporary(chain):
    out = chain["out"]
    dead = chain["killed_writing"][0].pid
    run, names, _ = chain["sigterm"]
    log = "".join(run.out)
    assert f"removed {out}/.last.tmp{dead}.tmp, left by an interrupted checkpoint write" in log
    assert f"resumed from {out}/epoch_0001.ckpt after epoch 1 (step {STEPS})" in log
    assert not [n for n in names if n.startswith(".") and n != ".run.lock"]  # the run was stopped, not killed


@pytest.mark.slow(reason="the kill/resume chain: six training processes")
def test_a_second_run_into_the_same_folder_is_refused(chain):
    (status, err), still_running, pid = chain["second_start"]
    assert still_running is None
    assert status == 2
    assert re.fullmatch(rf"error: {re.escape(repr(str(chain['out'])))} is in use by another training run "
                        rf"\(pid {pid} on {re.escape(socket.gethostname())}, started [0-9: -]+\); wait for it to "
                        rf"finish or stop it, or choose another --train_url {re.escape(TRACEBACK_HINT)}\n", err), err


@pytest.mark.slow(reason="the kill/resume chain: six training processes")
def test_sigterm_saves_the_step_and_exits_143(chain):
    out = chain["out"]
    run, names, stored = chain["sigterm"]
    assert run.returncode == 143, run.text()
    epoch, done, step = stored["last.ckpt"]
    assert epoch == 1 and 1 <= done < STEPS and step == STEPS + done
    assert run.out[-1].endswith(f"stopped by SIGTERM at epoch 2 step {done}/{STEPS}: saved {out}/last.ckpt (epoch 2, "
                                f"{done} of {STEPS} batches done, step {step}); continue with --resume auto\n")
    err = "".join(run.err)
    assert "SIGTERM: training stops after the current step and saves a checkpoint" in err and "Traceback" not in err
    assert ".run.lock" not in names


@pytest.mark.slow(reason="the kill/resume chain: six training processes")
def test_ctrl_c_saves_the_step_exits_130_and_leaves_no_worker(chain):
    out = chain["out"]
    earlier = chain["sigterm"][2]["last.ckpt"][1]
    run, names, stored, left = chain["sigint"]
    assert run.returncode == 130, run.text()
    assert f"resumed from {out}/last.ckpt in epoch 2 after batch {earlier} of {STEPS} (step {STEPS + earlier})" in \
        "".join(run.out)
    epoch, done, step = stored["last.ckpt"]
    assert epoch == 1 and earlier < done < STEPS and step == STEPS + done
    assert run.out[-1].endswith(f"stopped by SIGINT at epoch 2 step {done}/{STEPS}: saved {out}/last.ckpt (epoch 2, "
                                f"{done} of {STEPS} batches done, step {step}); continue with --resume auto\n")
    assert "Traceback" not in "".join(run.err)
    assert left == [], "processes of the stopped run are still alive"


@pytest.mark.slow(reason="the kill/resume chain: six training processes")
def test_the_resumed_chain_ends_with_the_uninterrupted_runs_checkpoint(chain):
    run, names = chain["finished"]
    assert run.returncode == 0, run.text()
    with open(chain["out"] / "metrics.jsonl", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]  # each record once, though the runs were killed
    assert [r["step"] for r in records if r["type"] == "step"] == list(range(1, 2 * STEPS + 1))
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]
    for name in ("last.ckpt", "best.ckpt"):
        assert_same_checkpoints(read_checkpoint(str(chain["out"] / name)),
                                read_checkpoint(str(chain["uninterrupted"] / name)))
    assert not [n for n in names if n.startswith(".")]  # no lock, no temporaries


# ----- the pieces, one by one


def fake_checkpoint(path, step, epoch):
    save_checkpoint({"w": np.ones(3, np.float32), "meta.step": step, "meta.epoch": epoch}, str(path))


def test_resume_auto_goes_by_the_stored_step_not_the_name_or_time(tmp_path):
    from src.engine.run_checkpoints import RunCheckpoints

    fake_checkpoint(tmp_path / "epoch_0002.ckpt", step=12, epoch=2)
    fake_checkpoint(tmp_path / "best.ckpt", step=6, epoch=1)
    fake_checkpoint(tmp_path / "last.ckpt", step=9, epoch=1)  # newer file, older step
    os.utime(tmp_path / "epoch_0002.ckpt", (1, 1))
    save_checkpoint({"w": np.ones(3, np.float32)}, str(tmp_path / "pretrained.ckpt"))  # not a run's checkpoint
    (tmp_path / "epoch_0003.ckpt").write_bytes(b"\x0a\x05trunc")  # damaged
    checkpoints = RunCheckpoints(str(tmp_path), 5, writer=True)
    assert checkpoints.find_resume("auto") == str(tmp_path / "epoch_0002.ckpt")
    assert [os.path.basename(p) for p, _ in checkpoints.unreadable] == ["epoch_0003.ckpt"]
    for name in ("epoch_0002.ckpt", "best.ckpt", "last.ckpt", "pretrained.ckpt"):
        os.remove(tmp_path / name)
    with pytest.raises(CheckpointError, match=r"--resume auto: no checkpoint in .* can be read \(epoch_0003.ckpt: "
                                              r"cannot read .*\); move them away to start a new run there"):
        checkpoints.find_resume("auto")


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_provably_stale_temporaries_are_removed(tmp_path):
    gone, alive = dead_pid(), os.getppid()
    names = {f".last.tmp{gone}.ckpt": True, f".epoch_0001.tmp{gone}.tmp": True, f".best.tmp{alive}.ckpt": False,
             f".last.tmp{os.getpid()}.ckpt": False, ".last.tmpabc.ckpt": False, f"last.tmp{gone}.ckpt": False,
             f".notes.tmp{gone}.txt": False, "last.ckpt": False}
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / f".dir.tmp{gone}.ckpt").mkdir()
    removed = remove_stale_temporaries(str(tmp_path), ("ckpt", "tmp"))
    assert sorted(os.path.basename(p) for p in removed) == sorted(n for n, stale in names.items() if stale)
    assert sorted(os.listdir(tmp_path)) == sorted([n for n, stale in names.items() if not stale] +
                                                  [f".dir.tmp{gone}.ckpt"])


def test_an_export_removes_the_temporary_of_a_dead_export(tmp_path, graph_mode):
    import mindspore as ms
    from mindspore import nn
    from src.deploy.export import export_network

    gone = dead_pid()
    (tmp_path / f".tiny.tmp{gone}.onnx").write_bytes(b"half an export")
    (tmp_path / f".tiny.tmp{gone}.bin").write_bytes(b"not ours")
    net = nn.SequentialCell(nn.Flatten(), nn.Dense(3 * 4 * 4, 2))
    path = export_network(net, "MINDIR", str(tmp_path / "tiny"), 1, 4)
    assert sorted(os.listdir(tmp_path)) == sorted([f".tiny.tmp{gone}.bin", "tiny.mindir"])
    x = ms.Tensor(np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4) / 48)
    np.testing.assert_allclose(nn.GraphCell(ms.load(path))(x).asnumpy(), net(x).asnumpy(), rtol=1e-6)


def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import src.weights.checkpoint as checkpoint

    path = tmp_path / "last.ckpt"
    fake_checkpoint(path, step=6, epoch=1)
    before = path.read_bytes()

    def full_disk(payload, name, **kwargs):
        with open(os.path.splitext(name)[0] + ".tmp", "wb") as handle:  # where MindSpore writes first
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.ms, "save_checkpoint", full_disk)
    with pytest.raises(CheckpointError, match=re.escape(f"cannot write checkpoint {str(path)!r} (No space left on "
                                                        f"device); it was left as it was")):
        save_checkpoint({"w": np.zeros(3, np.float32)}, str(path))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]


def test_the_folder_lock_refuses_a_second_owner_and_outlives_no_killed_one(tmp_path):
    with FolderLock(str(tmp_path), "train_url"):
        with pytest.raises(OutputFolderError, match=rf"is in use by another training run \(pid {os.getpid()} on "):
            FolderLock(str(tmp_path), "train_url").acquire()
    assert os.listdir(tmp_path) == []
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from src.utils.files import FolderLock; "
                               f"FolderLock({str(tmp_path)!r}, 'train_url').acquire(); print('held', flush=True); "
                               "time.sleep(600)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(OutputFolderError, match=rf"\(pid {holder.pid} on "):
        FolderLock(str(tmp_path), "train_url").acquire()
    holder.kill()
    holder.wait()
    FolderLock(str(tmp_path), "train_url").acquire().release()  # the kernel let go of the dead holder's lock


def drop_permission_override():
    """In the child: as root, give up the capabilities that write through file permissions."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture
def read_only_folder(tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    probe = subprocess.run([sys.executable, "-c", f"open({str(folder / 'x')!r}, 'w')"], capture_output=True,
                           preexec_fn=drop_permission_override)
    if probe.returncode == 0:
        pytest.skip("this user writes into read-only folders")
    yield folder
    folder.chmod(0o755)


def test_a_read_only_train_url_is_one_line_at_start(image_folder, read_only_folder):
    done = subprocess.run([sys.executable, TRAIN, *job_args(image_folder, read_only_folder)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, preexec_fn=drop_permission_override)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (f"error: the output folder {str(read_only_folder)!r} is not writable "
                                            f"(Permission denied); make it writable or choose another --train_url "
                                            f"{TRACEBACK_HINT}")
    assert "Traceback" not in done.stderr and os.listdir(read_only_folder) == []


@pytest.mark.slow(reason="needs the shared trained run")
def test_a_read_only_export_folder_is_one_line(trained_run, read_only_folder):
    done = subprocess.run([sys.executable, "export.py", "--arch", "vig_nano_gelu", "--num_classes", "3",
                           "--image_size", "32", "--pretrained", str(trained_run / "last.ckpt"), "--file_name",
                           str(read_only_folder / "model"), *TRANSFORM], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, preexec_fn=drop_permission_override)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (f"error: the export folder {str(read_only_folder)!r} is not writable "
                                            f"(Permission denied); make it writable or choose another --file_name "
                                            f"{TRACEBACK_HINT}")
    assert "Traceback" not in done.stderr and os.listdir(read_only_folder) == []


def no_room(monkeypatch):
    import src.utils.files as files

    usage = shutil.disk_usage(ROOT)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage._replace(free=2 ** 20))


def test_a_full_train_url_is_refused_before_writing_anything(image_folder, tmp_path, monkeypatch):
    """save_every 1 and keep_last 1 keep three checkpoints: room for three is asked. The refused run leaves
    no train_url behind (no config.yaml, no train.log)."""
    no_room(monkeypatch)
    out = tmp_path / "out"
    status, err = in_process(train_entry.main, job_args(image_folder, out))
    assert status == 2
    assert re.fullmatch(rf"error: the output folder {re.escape(repr(str(out)))} has 1.0 MiB free but keeping 3 "
                        rf"checkpoints \(1 epoch_NNNN.ckpt, last.ckpt, best.ckpt\) needs about \d+\.\d MiB; free some "
                        rf"space or choose another --train_url {re.escape(TRACEBACK_HINT)}\n", err), err
    assert not out.exists()


@pytest.mark.slow(reason="needs the shared trained run")
def test_a_full_export_folder_is_refused(trained_run, tmp_path, monkeypatch, graph_mode):
    no_room(monkeypatch)
    status, err = in_process(export_entry.main, ["--arch", "vig_nano_gelu", "--num_classes", "3", "--image_size", "32",
                                                 "--pretrained", str(trained_run / "last.ckpt"), "--file_name",
                                                 str(tmp_path / "model"), *TRANSFORM])
    assert status == 2
    assert re.fullmatch(rf"error: the export folder {re.escape(repr(str(tmp_path)))} has 1.0 MiB free but the MINDIR "
                        rf"file needs about \d+\.\d MiB; free some space or choose another --file_name "
                        rf"{re.escape(TRACEBACK_HINT)}\n", err), err
    assert os.listdir(tmp_path) == []


DIVERGED = (r"; the run diverged\. The checkpoints saved so far are kept and nothing more was saved\. Lower base_lr or "
            r"check the data, then start again \(--resume auto continues from the newest checkpoint\)$")


def diverging_run(image_folder, out, capsys, *extra):
    """A job_args run that must stop as diverged: (its last log line, the checkpoints it left)."""
    with pytest.raises(SystemExit) as done:
        run_cli(lambda: train_entry.main(job_args(image_folder, out, *extra)))
    assert done.value.code == 1
    return capsys.readouterr().out.splitlines()[-1], sorted(n for n in os.listdir(out) if n.endswith(".ckpt"))


@pytest.mark.slow(reason="a training run")
def test_an_exploding_training_loss_stops_the_run(image_folder, tmp_path, capsys):
    """base_lr 1e3 makes the loss explode after the first update; the run stops there, before any
    checkpoint (the other ways a run diverges: tests/test_training.py)."""
    line, checkpoints = diverging_run(image_folder, tmp_path / "out", capsys, "--base_lr", "1e3")
    assert re.search(rf"training stopped at epoch 1 step [2-6]/6: the training loss is (nan|inf|[0-9.e+]+, above "
                     rf"109\.9 = 100 x ln\(num_classes\)){DIVERGED}", line), line
    assert checkpoints == []


# ----- classes and evaluation transform recorded in checkpoints


@pytest.fixture(scope="module")
def renamed_classes(tmp_path_factory):
    """The tiny image tree with other class names (same count)."""
    root = tmp_path_factory.mktemp("renamed")
    write_image_folder(root, train_per_class=1, val_per_class=2)
    for split in ("train", "val"):
        for c in range(3):
            os.rename(root / split / f"class_{c}", root / split / ["cat", "dog", "fox"][c])
    return str(root)


def eval_args(data, checkpoint, *extra):
    return ["--arch", "vig_nano_gelu", "--num_classes", "3", "--image_size", "32", "--data_url", str(data),
            "--pretrained", str(checkpoint), "--batch_size", "6", "--num_parallel_workers", "1", *TRANSFORM, *extra]


@pytest.mark.slow(reason="needs the shared trained run")
def test_eval_refuses_other_classes(trained_run, renamed_classes):
    status, err = in_process(eval_entry.main, eval_args(renamed_classes, trained_run / "best.ckpt"))
    assert status == 2
    assert err == (f"error: {str(trained_run / 'best.ckpt')!r} does not fit the classes of "
                   f"{os.path.join(renamed_classes, 'val')!r}: it was trained for other classes (only in the "
                   f"checkpoint: 'class_0', 'class_1', 'class_2'; only here: 'cat', 'dog', 'fox'); evaluate it on the "
                   f"classes it was trained for {TRACEBACK_HINT}\n")


@pytest.mark.slow(reason="needs the shared trained run")
def test_eval_export_and_predict_refuse_another_transform(trained_run, image_folder, tmp_path):
    status, err = in_process(eval_entry.main, eval_args(image_folder, trained_run / "best.ckpt", "--crop_pct", "0.8"))
    assert status == 2
    assert err == (f"error: {str(trained_run / 'best.ckpt')!r} does not fit this configuration: it was trained for "
                   f"crop_pct 0.9 (here 0.8); pass --crop_pct 0.9 {TRACEBACK_HINT}\n")
    status, err = in_process(export_entry.main, ["--arch", "vig_nano_gelu", "--num_classes", "3", "--image_size", "64",
                                                 "--pretrained", str(trained_run / "best.ckpt"), "--file_name",
                                                 str(tmp_path / "model"), *TRANSFORM])
    assert status == 2
    assert err == (f"error: {str(trained_run / 'best.ckpt')!r} does not fit this configuration: it was trained for "
                   f"image_size 32 (here 64); pass --image_size 32 {TRACEBACK_HINT}\n")
    assert os.listdir(tmp_path) == []
    assert in_process(predict_entry.main, ["--arch", "vig_nano_gelu", "--num_classes", "3", "--image_size", "64",
                                           "--pretrained", str(trained_run / "best.ckpt"), *TRANSFORM,
                                           str(image_folder)]) == (status, err)


@pytest.mark.slow(reason="needs the shared trained run")
def test_the_same_classes_in_another_order_are_matched_by_name(trained_run, image_folder, tmp_path):
    from src.app.config import load_config
    from src.app.jobs import trained_for

    entries = read_checkpoint(str(trained_run / "best.ckpt"), meta_only=True)
    record = json.loads(entries["meta.data"])
    record["classes"] = ["class_2", "class_0", "class_1"]
    save_checkpoint({"meta.step": 1, "meta.data": json.dumps(record)}, str(tmp_path / "reordered.ckpt"))
    cfg = load_config(eval_args(image_folder, tmp_path / "reordered.ckpt"), entry="eval")
    assert trained_for(cfg, image_folder) == [1, 2, 0]  # dataset label -> model output of the same name
    official = tmp_path / "official.ckpt"  # a converted checkpoint records nothing: ImageNet-1k, as it comes
    save_checkpoint({"w": np.zeros(2, np.float32)}, str(official))
    assert trained_for(load_config(eval_args(image_folder, official), entry="eval"), image_folder) is None


def test_evaluation_scores_the_columns_of_the_dataset_labels(pynative):
    import mindspore.dataset as ds
    from mindspore import nn
    from src.engine.evaluate import evaluate

    logits = np.array([[0.1, 0.7, 0.2], [0.9, 0.0, 0.1], [0.2, 0.3, 0.5]], np.float32)
    labels = np.array([0, 2, 1], np.int32)  # label y is scored by output [1, 2, 0][y]: every top-1 is right
    bad = np.full(3, -1, np.int32)  # no unreadable image
    data = ds.NumpySlicesDataset((logits, labels, bad), column_names=["image", "label", "bad"], shuffle=False).batch(3)
    data.bad_image_policy = NoBadImages()
    identity = nn.Identity()
    assert evaluate(identity, data)["top1"] == 0.0
    assert evaluate(identity, data, columns=[1, 2, 0])["top1"] == 100.0


class SkipsAll:
    """The bad-image policy of a pipeline whose every image is unreadable, skipped as allowed."""

    def add(self, found):
        pass

    def summary(self):
        pass


def test_evaluation_over_no_readable_image_is_an_error(pynative):
    """All images skipped (max_bad_image_fraction 1): an error, not top-1 0.00."""
    import mindspore.dataset as ds
    from mindspore import nn
    from src.data import DatasetError
    from src.engine.evaluate import evaluate

    logits = np.zeros((3, 3), np.float32)
    unreadable = np.full(3, -1, np.int32)
    data = ds.NumpySlicesDataset((logits, unreadable, np.arange(3, dtype=np.int32)),
                                 column_names=["image", "label", "bad"], shuffle=False).batch(3)
    data.bad_image_policy = SkipsAll()
    with pytest.raises(DatasetError, match=r"^no image could be evaluated: every image of the validation split was "
                                           r"skipped as unreadable"):
        evaluate(nn.Identity(), data)


@pytest.mark.parametrize("suffix", [".mindir", ".onnx"])
def test_a_damaged_export_is_one_line_in_infer(tmp_path, suffix, graph_mode):
    (tmp_path / f"model{suffix}").write_bytes(b"\x08\x07 half of a model file")
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "labels.json").write_text(json.dumps({"classes": ["a"], "image_size": 32, "images": {}}))
    status, err = in_process(infer_entry.main, ["--arch", "vig_nano_gelu", "--file_name", str(tmp_path / "model"),
                                                "--file_format", suffix[1:].upper(), "--preprocess_path",
                                                str(tmp_path / "pre"), "--result_path", str(tmp_path / "res")])
    assert status == 2
    assert re.fullmatch(rf"error: cannot load {re.escape(repr(str(tmp_path / ('model' + suffix))))} as an exported "
                        rf"model \(.+\); the file is damaged or not an export: export it again with export\.py "
                        rf"{re.escape(TRACEBACK_HINT)}\n", err), err
    assert not (tmp_path / "res").exists()


SIGNAL_SCRIPT = """import multiprocessing, os, signal, sys, time
sys.path.insert(0, {root!r})
from src.app.signals import StopSignals
stop = StopSignals.install()
child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,), daemon=True)
child.start()
print([int(s) for s in stop.signals], child.pid, flush=True)
step = lambda: None
if {compiled}:  # MindSpore's runtime handles SIGINT while (and after) it runs a compiled graph
    import mindspore as ms
    ms.set_device("CPU")

    @ms.jit
    def work(x):
        for _ in range(10):
            x = ms.ops.matmul(x, x) * 0.01
        return x

    x = ms.ops.ones((200, 200), ms.float32)
    step = lambda: work(x).asnumpy()


def wait(seconds):  # until the stop request changes, at most ``seconds``
    before, deadline = stop(), time.time() + seconds
    while stop() == before and time.time() < deadline:
        time.sleep(0.01)


for _ in range(30):
    step()
os.kill(os.getpid(), {first})
for _ in range(30):
    step()
wait(1)
print(stop(), flush=True)
os.kill(os.getpid(), {second})
wait(2)
print(stop(), "still here", flush=True)
"""


def test_a_second_signal_stops_at_once_and_an_ignored_one_stays_ignored(tmp_path):
    """The first SIGINT becomes a request; the second ends the process (130, one line) and its child
    processes with it. A process started with SIGINT ignored (nohup, a background job) keeps ignoring it,
    also while MindSpore runs compiled graphs, and still takes SIGTERM."""
    script = tmp_path / "signals.py"

    def run(first, second, compiled, **options):
        script.write_text(SIGNAL_SCRIPT.format(root=ROOT, first=first, second=second, compiled=compiled))
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, **options)
        child = int(done.stdout.split("\n")[0].split()[-1])
        return done, child

    done, child = run("signal.SIGINT", "signal.SIGINT", False, preexec_fn=default_sigint)
    assert (done.returncode, done.stdout) == (130, f"[2, 15] {child}\n2\n")
    assert done.stderr == ("SIGINT: training stops after the current step and saves a checkpoint (send it again to "
                           "stop at once)\nSIGINT again: stopping now, without saving\n")
    with pytest.raises(ProcessLookupError):  # ended and reaped before the process exited
        os.kill(child, 0)
    done, child = run("signal.SIGINT", "signal.SIGTERM", True,
                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert (done.returncode, done.stdout) == (0, f"[15] {child}\n0\n15 still here\n"), done.stderr
