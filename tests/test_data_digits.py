"""The digits writer never touches a user's folder and cleans up only what it can prove it wrote."""
import json
import os
import socket
import subprocess
import sys

import pytest

import eval as eval_entry
from support import ROOT, snapshot, write_image_folder
from src.app.builders import prepare_data
from src.app.cli import TRACEBACK_HINT
from src.app.config import load_config
from src.data import DatasetError
from src.data.digits import write_digits_dataset

DEMO = os.path.join(ROOT, "configs", "demo.yaml")


@pytest.fixture
def users_folder(tmp_path):
    """A user's own dataset: train/ and val/ class folders with images, and a file of theirs in train/."""
    root = write_image_folder(tmp_path / "my_data", classes=2, train_per_class=2, val_per_class=1, size=12)
    with open(os.path.join(root, "train", "labels.csv"), "w") as handle:
        handle.write("file,label\n")
    return root


def refusal(root):
    return (f"set: digits writes the demo digits only into a new or empty folder, and {root} holds other files "
            f"(train, val): nothing was changed; point data_url at a new folder for the demo, or use set: ImageNet "
            f"to read your own train/ and val/ there")


def test_a_users_folder_is_refused_untouched(users_folder, tmp_path):
    before = snapshot(users_folder)
    with pytest.raises(DatasetError) as info:
        write_digits_dataset(users_folder, image_size=8)
    assert str(info.value) == refusal(users_folder)
    assert snapshot(users_folder) == before
    assert sorted(os.listdir(tmp_path)) == ["my_data"]  # no temporary folder either
    cfg = load_config(["--config", DEMO, "--data_url", users_folder])
    with pytest.raises(DatasetError) as info:  # the other ranks of a distributed run refuse at once, not after 600 s
        prepare_data(cfg, rank=1)
    assert str(info.value) == refusal(users_folder)
    assert snapshot(users_folder) == before


def test_eval_with_the_demo_config_refuses_a_users_folder(users_folder, tmp_path, graph_mode):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"never read")
    before = snapshot(users_folder)
    with pytest.raises(DatasetError) as info:
        eval_entry.main(["--config", DEMO, "--data_url", users_folder, "--pretrained", str(checkpoint)])
    assert str(info.value) == refusal(users_folder)
    assert snapshot(users_folder) == before


def test_run_eval_script_refuses_a_users_folder(users_folder, tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"never read")
    before = snapshot(users_folder)
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_eval.sh"), DEMO, users_folder, str(checkpoint)],
                          cwd=work, capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable},
                          timeout=300)
    assert done.returncode == 2
    assert done.stdout.strip().splitlines()[-1] == f"error: {refusal(users_folder)} {TRACEBACK_HINT}"
    assert "Traceback" not in done.stdout + done.stderr
    assert snapshot(users_folder) == before


def _marker(folder, pid, host=None):
    folder.mkdir()
    (folder / "digits.json").write_text(json.dumps({"writer": {"host": host or socket.gethostname(), "pid": pid}}))


def test_an_interrupted_write_is_cleaned_up_on_the_next_start(tmp_path):
    root = tmp_path / "digits"
    killed = subprocess.run([sys.executable, "-c", f"""
import os, sys
sys.path.insert(0, {ROOT!r})
from PIL import Image
from src.data.digits import write_digits_dataset
save, count = Image.Image.save, [0]
def save_then_die(self, *args, **kwargs):
    save(self, *args, **kwargs)
    count[0] += 1
    if count[0] == 5:
        os._exit(9)  # killed in the middle of the tree
Image.Image.save = save_then_die
write_digits_dataset({str(root)!r}, image_size=8)
"""], capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr
    (stale,) = [n for n in os.listdir(tmp_path) if n.startswith(".digits.tmp-")]
    assert not root.exists()
    dead_pid = json.loads((tmp_path / stale / "digits.json").read_text())["writer"]["pid"]
    assert stale.startswith(f".digits.tmp-{dead_pid}-")
    # neighbours it cannot prove it left behind: all must stay
    lookalike = tmp_path / ".digits.tmp-1-deadbeef"  # the name pattern, but no marker
    lookalike.mkdir()
    (lookalike / "mine.txt").write_text("a user's file")
    _marker(tmp_path / f".digits.tmp-{os.getpid()}-0123abcd", os.getpid())  # its writer is alive
    _marker(tmp_path / f".digits.tmp-{dead_pid}-89abcdef", dead_pid, host="another-host")
    _marker(tmp_path / f".digits.tmp-{dead_pid}-0000000g", dead_pid)  # not the name pattern
    _marker(tmp_path / f".other.tmp-{dead_pid}-01234567", dead_pid)  # another destination's
    (tmp_path / "notes.txt").write_text("unrelated")
    kept = {name: snapshot(tmp_path / name) for name in os.listdir(tmp_path) if name != stale}

    info = write_digits_dataset(str(root), image_size=8)
    assert info == {"train": 1437, "val": 360, "num_classes": 10, "written": True}
    assert not (tmp_path / stale).exists()
    assert {name: snapshot(tmp_path / name) for name in os.listdir(tmp_path) if name != "digits"} == kept
    assert json.loads((root / "digits.json").read_text())["train"] == 1437
