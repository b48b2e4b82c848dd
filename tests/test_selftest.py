"""The Ascend self-test (scripts/run_ascend_selftest.sh, selftest.py), run here on the CPU with the same checks."""
import os
import subprocess
import sys

import pytest

from src.app.config import ConfigError
from src.app.selftest import CHECKS, FamilyResult, format_table, run_selftest, summary
from support import ROOT



@pytest.mark.slow(reason="the self-test script: train step, export and a second process")
def test_the_script_checks_a_family_on_the_cpu(tmp_path):
    """The O2 step (with its injected overflow), the forward against a CPU process and the MINDIR pass; AIR is
    skipped with its reason; one table, a summary, the log in the current folder."""
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("DEVICE_ID", None)
    done = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_ascend_selftest.sh"), "0", "vig",
                           "--device_target", "CPU", "--image_size", "32", "--batch_size", "2", "--steps", "3",
                           "--quick", "true"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("vig "))
    assert row.split()[-5:] == ["pass", "pass", "pass", "pass", "skip"]
    assert "vig-mindspore self-test: PASS" in done.stdout
    assert "vig air: MindSpore writes AIR only with device_target Ascend" in done.stdout
    assert "vig-mindspore self-test: PASS" in (tmp_path / "ascend_selftest.log").read_text()
    assert {p.name for p in tmp_path.iterdir()} <= {"ascend_selftest.log", "rank_0", "kernel_meta"}


def test_a_failed_check_fails_the_run_and_says_why():
    result = FamilyResult("pvig", "pvig_ti_224_gelu")
    for check in CHECKS:
        result.record(check, "pass")
    result.record("forward", "FAIL", "max relative difference 3.10e-02 (tolerance 0.01), same top-1 False")
    assert not result.passed
    assert format_table([result]).splitlines()[2].split()[-5:] == ["pass", "pass", "FAIL", "pass", "pass"]
    text = summary([result], "Ascend", 3, 224, 8, 4)
    assert "self-test: FAIL" in text and "pvig forward: max relative difference 3.10e-02" in text


def test_bad_arguments_are_one_line(capsys):
    with pytest.raises(ConfigError, match="unknown family pvgi; the families are graphconvnet, pgraphconvnet"):
        run_selftest("CPU", 0, ["pvgi"], 32, 2, 3, entry="selftest.py")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "selftest.py"), "vig", "--device_target", "Ascend"],
                          capture_output=True, text=True, timeout=300)
    last = done.stderr.strip().splitlines()[-1]  # after MindSpore's own warning
    assert done.returncode == 2 and last.startswith("error: device_target 'Ascend' is not available")
    assert "Traceback" not in done.stderr
