"""The low-level helpers of src/utils: atomic files and waiting for a condition."""
import os
import subprocess

import pytest

from src.utils.files import atomic_path, write_json
from src.utils.processes import process_alive, wait_until


def test_an_atomic_write_leaves_the_old_file_or_the_whole_new_one(tmp_path):
    path = tmp_path / "state.json"
    write_json(str(path), {"step": 1})
    with pytest.raises(RuntimeError), atomic_path(str(path)) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write('{"step": ')
        raise RuntimeError("killed mid-write")
    assert path.read_text() == '{\n "step": 1\n}' and os.listdir(tmp_path) == ["state.json"]
    write_json(str(path), {"step": 2})
    assert path.read_text() == '{\n "step": 2\n}' and os.listdir(tmp_path) == ["state.json"]


def test_waiting_ends_when_the_condition_holds_or_the_time_is_up():
    calls = []
    assert wait_until(lambda: calls.append(1) or len(calls) == 3, seconds=60, interval=0)
    assert len(calls) == 3
    assert not wait_until(lambda: False, seconds=0, interval=0)


def test_a_process_is_alive_until_it_ends():
    child = subprocess.Popen(["sleep", "60"])
    assert process_alive(child.pid)
    child.kill()
    child.wait()
    assert not process_alive(child.pid)
