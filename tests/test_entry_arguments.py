"""Every entry point over one table of bad values (0, negative, huge, wrong type, impossible path): one
line on stderr naming the problem, exit status 2, no traceback, nothing left behind. In this process
through each entry point's ``main`` and ``run_cli`` (each case stops before any model is built); one
subprocess checks that every entry point's --help and argument errors come before MindSpore is imported."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

import benchmark
import convert_checkpoint
import eval as eval_entry
import export
import infer
import postprocess
import predict
import preprocess
import train
import visualize
from support import ROOT, execution_mode, in_process
from src.app.cli import TRACEBACK_HINT

BAD = {"zero": "0", "negative": "-3", "huge": "1000000000", "wrong type": "abc",
       "impossible path": "/proc/vig/no/such", "no multiple of 16": "17"}
COUNT = ("zero", "negative", "huge", "wrong type")
PATH = ("impossible path",)
MISSING = "MISSING"  # a file that does not exist, in the case's folder

# entry point: (main, command line where only the flag under test is wrong ({tmp}: the test's folder,
# {images}: a tiny dataset), the flags with the kinds of bad values each takes)
ENTRIES = {
    "train": (train.main, ["--arch", "vig_nano_gelu", "--data_url", "{images}", "--train_url", "{tmp}/out",
                           "--num_classes", "3", "--image_size", "32", "--epochs", "1"],
              {"--epochs": COUNT, "--batch_size": COUNT, "--image_size": COUNT, "--num_classes": COUNT,
               "--accumulation_step": COUNT, "--train_url": PATH, "--data_url": PATH, "--config": PATH}),
    "eval": (eval_entry.main, ["--arch", "vig_nano_gelu", "--pretrained", f"{{tmp}}/{MISSING}"],
             {"--batch_size": COUNT, "--image_size": COUNT, "--num_classes": COUNT, "--pretrained": PATH}),
    "export": (export.main, ["--arch", "vig_nano_gelu", "--pretrained", f"{{tmp}}/{MISSING}", "--file_name",
                             "{tmp}/model"],
               {"--batch_size": COUNT, "--image_size": COUNT, "--pretrained": PATH}),
    "preprocess": (preprocess.main, ["--arch", "vig_nano_gelu", "--image_size", "32", "--data_url", "{images}",
                                     "--preprocess_path", "{tmp}/pre"],
                   {"--image_size": COUNT, "--preprocess_path": PATH, "--data_url": PATH}),
    "infer": (infer.main, ["--arch", "vig_nano_gelu", "--file_name", "{tmp}/tiny", "--preprocess_path",
                           "{tmp}/inputs", "--result_path", "{tmp}/results"],
              {"--result_path": PATH, "--preprocess_path": PATH, "--file_name": PATH}),
    "postprocess": (postprocess.main, ["--preprocess_path", "{tmp}/inputs", "--result_path", "{tmp}/results"],
                    {"--preprocess_path": PATH}),
    "predict": (predict.main, ["--arch", "vig_nano_gelu", "--pretrained", f"{{tmp}}/{MISSING}", "{tmp}/x.png"],
                {"--topk": ("zero", "negative", "wrong type"), "--batch_size": COUNT, "--image_size": COUNT,
                 "--pretrained": PATH}),
    "visualize": (visualize.main, ["--arch", "vig_nano_gelu", "--num_classes", "3", "--image_size", "32",
                                   "--pretrained", "{tmp}/nano.ckpt", "--image", "{tmp}/x.png", "--out",
                                   "{tmp}/drawings"],
                  {"--image_size": COUNT, "--out": PATH, "--pretrained": PATH}),
    "convert_checkpoint": (convert_checkpoint.main, ["--arch", "vig_nano_gelu", "--src", f"{{tmp}}/{MISSING}",
                                                     "--dst", "{tmp}/converted.ckpt"],
                           {"--dst": PATH, "--src": PATH}),
    "benchmark": (benchmark.main, ["--arch", "vig_nano_gelu", "--mode", "infer"],
                  {"--batch_size": COUNT, "--runs": COUNT, "--image_size": COUNT + ("no multiple of 16",),
                   "--warmup": COUNT[1:]}),
}
CASES = [(entry, flag, kind) for entry, (_, _, flags) in ENTRIES.items() for flag, kinds in flags.items()
         for kind in kinds]


class Failing(nn.Cell):
    def construct(self, x):
        return x.reshape(7, 5)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """What the cases read: a small MINDIR export and a preprocessed folder without images (infer.py), a
    checkpoint of vig_nano_gelu for 3 classes (visualize.py)."""
    from src.deploy.export import export_network
    from src.models import create_model
    from src.weights.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("inputs")
    with execution_mode(ms.GRAPH_MODE):
        export_network(nn.SequentialCell(nn.Flatten(), nn.Dense(3 * 4 * 4, 2)), "MINDIR", str(folder / "tiny"), 1, 4)
    os.makedirs(folder / "inputs")
    (folder / "inputs" / "labels.json").write_text(json.dumps({"classes": ["a", "b"], "image_size": 4, "images": {}}))
    net = create_model("vig_nano_gelu", num_classes=3, img_size=32)
    save_checkpoint({p.name: p for p in net.get_parameters()}, str(folder / "nano.ckpt"))
    return folder


@pytest.mark.parametrize("entry, flag, kind", CASES, ids=[f"{e}{f}-{k}" for e, f, k in CASES])
def test_a_bad_value_is_one_line(entry, flag, kind, image_folder, inputs, tmp_path, monkeypatch):
    main, base, _ = ENTRIES[entry]
    for name in os.listdir(inputs):
        os.symlink(inputs / name, tmp_path / name)
    before = sorted(os.listdir(tmp_path))
    argv = [arg.format(tmp=tmp_path, images=image_folder) for arg in base] + [flag, BAD[kind]]
    monkeypatch.delenv("VIG_TRACEBACK", raising=False)
    with execution_mode(ms.get_context("mode")):  # the entry points set their own
        status, err = in_process(main, argv)
    lines = err.splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and \
        lines[0].endswith(TRACEBACK_HINT), err
    assert sorted(os.listdir(tmp_path)) == before  # a refused start leaves nothing (train: no train_url)


# Each entry point's --help, and a command line it refuses (an argument error or a bad value).
REFUSED = {"train": ["--arch", "x", "--epochs", "0"], "eval": ["--arch", "x", "--batch_size", "0"],
           "export": ["--arch", "x", "--batch_size", "0"], "preprocess": ["--arch", "x", "--num_classes", "3"],
           "infer": ["--file_format", "AIR"], "postprocess": ["--base_lr", "3"], "predict": ["x.png", "--topk", "0"],
           "visualize": ["--arch", "x", "--out", "o"], "convert_checkpoint": ["--arch", "x", "--dst", "y.ckpt"],
           "selftest": ["--batch_size", "x"], "benchmark": ["--arch", "vig_nano_gelu", "--batch_size", "0"]}
PARSE_ONLY = """
import contextlib, importlib, io, json, sys
sys.path.insert(0, sys.argv[1])
from src.app.cli import run_cli
report = {}
for name, refused in json.loads(sys.argv[2]).items():
    main, report[name] = importlib.import_module(name).main, []
    for argv in (["--help"], refused):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_cli(lambda: main(argv))
            except SystemExit as done:
                report[name].append([done.code, out.getvalue(), err.getvalue()])
    report[name].append("mindspore" in sys.modules)
print(json.dumps(report))
"""


def test_help_and_argument_errors_come_before_mindspore_and_leave_nothing(tmp_path):
    """Every entry point parses its command line and refuses a bad one without importing MindSpore or a model
    (the job is imported after): one process runs them all in turn, from an empty folder."""
    done = subprocess.run([sys.executable, "-c", PARSE_ONLY, ROOT, json.dumps(REFUSED)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(report) == sorted(REFUSED)
    for name, (shown, refused, mindspore_loaded) in report.items():
        assert shown[0] == 0 and "usage:" in shown[1], (name, shown)
        lines = refused[2].splitlines()
        assert refused[0] == 2 and len(lines) == 1 and lines[0].startswith("error: ") and \
            lines[0].endswith(TRACEBACK_HINT), (name, refused)
        assert not mindspore_loaded, f"{name}.py imported MindSpore before its arguments were checked"
    assert report["benchmark"][1][2] == ("error: argument --batch_size: 0 must be in [1, 4096] (--help shows the "
                                         f"usage) {TRACEBACK_HINT}\n")
    assert os.listdir(tmp_path) == []


def test_mindspores_compile_reports_stay_out_of_the_working_folder(tmp_path, monkeypatch, graph_mode):
    """A failed graph compilation writes rank_0/om/analyze_fail.ir under MS_OM_PATH, which every entry point's
    device setup points away from the working folder."""
    import src.app.device as device

    monkeypatch.delenv("MS_OM_PATH", raising=False)
    monkeypatch.setattr(device, "MINDSPORE_REPORTS", str(tmp_path / "reports"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    device.init_device("CPU")
    with pytest.raises((ValueError, RuntimeError, TypeError)):
        Failing()(ms.Tensor(np.zeros((2, 3), np.float32)))
    assert os.listdir(tmp_path / "work") == []
    assert os.path.isfile(tmp_path / "reports" / "rank_0" / "om" / "analyze_fail.ir")
