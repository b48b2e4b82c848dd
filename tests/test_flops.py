"""benchmark.py's cheap checks: parameters and MACs per image (the official paper's figures for ViG-Ti and
Pyramid ViG-Ti), and the side-by-side run against PyTorch end to end (speed is never asserted)."""
import os
import subprocess
import sys

import pytest

from tools.flops import count_macs, model_size
from src.models import create_model
from support import ROOT

# official_vig.md section 2: README parameters, paper/README GMACs; MACs by torchprofile's rule and conv+matmul
PUBLISHED = {
    "vig_ti_224_gelu": dict(params_trainable=7_184_744, params_all=7_184_744, gmacs=1.3, official=1.3065,
                            conv_matmul=1.3009),
    "pvig_ti_224_gelu": dict(params_trainable=10_714_376, params_all=12_486_314, gmacs=1.7, official=1.7100,
                             conv_matmul=1.6996),
}


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_published_figures(arch):
    want = PUBLISHED[arch]
    got = model_size(arch, 224)
    assert (got["params_trainable"], got["params_all"]) == (want["params_trainable"], want["params_all"])
    assert round(got["macs_official"] / 1e9, 1) == want["gmacs"]
    assert abs(got["macs_official"] / 1e9 - want["official"]) < 5e-5
    assert abs(got["macs_conv_matmul"] / 1e9 - want["conv_matmul"]) < 5e-5


def test_counts_follow_the_input_size_and_the_features_only_model(pynative):
    """Convolutions scale with the node count, the distance with its square; the head adds its two 1x1 convs."""
    small, large = (count_macs(create_model("vig_nano_gelu", img_size=s, features_only=True, kernel_impl="native"), s)
                    for s in (32, 64))
    assert large["conv"] == 4 * small["conv"]
    assert large["matmul"] == 16 * small["matmul"]
    full = count_macs(create_model("vig_nano_gelu", img_size=64, kernel_impl="native"), 64)
    assert full["conv"] - large["conv"] == 64 * 1024 + 1024 * 1000
    assert full["matmul"] == large["matmul"]


def test_command_line_prints_a_row_per_model():
    done = subprocess.run([sys.executable, "benchmark.py", "--flops", "--arch", "vig_nano_gelu", "--image_size", "32"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    row = [line for line in done.stdout.splitlines() if line.startswith("| vig_nano_gelu")]
    assert len(row) == 1 and row[0].split("|")[2].strip() == "32"


@pytest.mark.slow(reason="the side-by-side benchmark in fresh processes")
def test_against_pytorch_prints_both_frameworks(tmp_path):
    """A tiny input of another height than width, one timed call, the official code's weights (made in PyTorch,
    converted, cached in a folder of the test's): a row with both frameworks' figures and the batch-1 deployments'
    latencies, and both computed the same function on the same weights."""
    done = subprocess.run([sys.executable, "benchmark.py", "--against-pytorch", "--arch", "vig_ti_224_gelu",
                           "--image_size", "32", "48", "--batch_size", "2", "--runs", "1", "--mode", "infer",
                           "--weights", "official"], env=dict(os.environ, VIG_BENCHMARK_CACHE=str(tmp_path)),
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert os.listdir(tmp_path) == ["vig_ti_224_gelu_32x48_official"]
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| model | weights | mode | images/s ours"))
    row = next(line for line in lines if line.startswith("| vig_ti_224_gelu | official | infer |"))
    names, cells = ([c.strip() for c in line.split("|")[4:-1]] for line in (header, row))
    assert len(cells) == len(names) == 14 and names[-2:] == ["output difference", "load"]
    assert all(float(v) > 0 for v in cells[:-2])
    assert float(cells[-2]) < 1e-3
    assert any(line.startswith("machine: ") and "PyTorch" in line for line in lines)
    assert any(line.startswith("batch 2, 32x48, float32") for line in lines)


def test_a_height_and_width_are_for_the_side_by_side_benchmark_only():
    done = subprocess.run([sys.executable, "benchmark.py", "--arch", "vig_ti_224_gelu", "--image_size", "32", "48"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--against-pytorch also takes H W" in done.stderr


def test_against_pytorch_without_torch_is_one_clear_error(monkeypatch):
    from src.app.config import ConfigError
    from tools import against_pytorch
    find_spec = against_pytorch.importlib.util.find_spec
    monkeypatch.setattr(against_pytorch.importlib.util, "find_spec", lambda name: None if name == "torch" else
                        find_spec(name))
    with pytest.raises(ConfigError, match=r"needs PyTorch .* pip install -r requirements-test.txt"):
        against_pytorch.compare(["vig_ti_224_gelu"])


def test_op_profile_sorts_both_frameworks_operators_into_one_set_of_kinds():
    """Names as MindSpore's profiler and torch.profiler give them: by type, our compiled kernels by scope, an
    optimizer's element-wise work as the optimizer's; the table sums each kind per side and gives the ratio."""
    from tools.against_pytorch import format_op_profile, op_kind
    kinds = {
        "Conv2DBackpropFilter network-WithLossCell/_backbone-VisionGNN/Grapher/fc1-SequentialCell/Conv2d/Grad_Conv2D":
            "convolution and matmul",
        "BatchNorm backbone-SequentialCell/Grapher/graph_conv-DyGraphConv2d/gconv-MRConv2d/nn-SequentialCell/"
        "BatchNorm2d": "batch norm",
        "Custom backbone-SequentialCell/Grapher/graph_conv-DyGraphConv2d/graph_builder-DilatedKnnGraph":
            "kNN (distances, top-k)",
        "Custom Grapher/graph_conv-DyGraphConv2d/gconv-MRConv2d/aggregate-NeighbourMax/rows-MaxOverRows":
            "neighbour gather and max",
        "Custom backbone-SequentialCell/FFN/act-GELU": "GELU",
        "Mul optimizer-AdamWeightDecay": "optimizer",
        "SoftmaxCrossEntropyWithLogits network-WithLossCell/_loss_fn-CrossEntropyLoss": "loss",
        "aten::mkldnn_convolution": "convolution and matmul", "aten::native_batch_norm_backward": "batch norm",
        "aten::linalg_vector_norm": "kNN (distances, top-k)", "aten::topk": "kNN (distances, top-k)",
        "aten::max": "neighbour gather and max", "aten::scatter_add_": "neighbour gather and max",
        "aten::mul_ optimizer": "optimizer", "aten::_log_softmax": "loss", "aten::permute": "layout (transpose, "
        "copy, concat, broadcast)", "aten::sub": "element-wise and reductions", "ReduceSum Grapher": "element-wise "
        "and reductions",
    }
    assert {name: op_kind(name) for name in kinds} == kinds
    result = {"machine": "m", "settings": dict(arch="vig_ti_224_gelu", weights="official", batch_size=8,
                                               image_size=224, runs=3, warmup=2),
              "rows": [{"mode": "train", "ours": {"aten::topk": 1.0, "Custom x/act-GELU": 4.0, "Mul y": 2.0},
                        "pytorch": {"aten::gelu": 2.0, "aten::gelu_backward": 6.0, "aten::mul": 1.0}}]}
    lines = format_op_profile(result).splitlines()
    assert "| GELU | 4.0 | 8.0 | 0.50 |" in lines and "| kNN (distances, top-k) | 1.0 | 0.0 | – |" in lines
    assert "| total | 7.0 | 9.0 | 0.78 |" in lines


@pytest.fixture
def clean_modules():
    """The modules, path entries and NumPy aliases (``np.float``) a test's imports add are removed afterwards."""
    import numpy as np
    before, path, numpy_names = set(sys.modules), list(sys.path), set(np.__dict__)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]
    sys.path[:] = path
    for name in set(np.__dict__) - numpy_names:
        delattr(np, name)


OFFICIAL_FILES = {  # each official repository's layout, its builders returning what they were called with
    "vig_pytorch": {"gcn_lib/__init__.py": "WIDTH = 3\n",
                    "vig.py": "from gcn_lib import WIDTH\nfrom timm.data import IMAGENET_DEFAULT_MEAN\n"
                              "from timm.models.layers import DropPath, to_2tuple, trunc_normal_\n"
                              "from timm.models.registry import register_model\n@register_model\n"
                              "def vig_ti_224_gelu(pretrained=False, **kwargs):\n"
                              "    return DropPath(0.5), to_2tuple(WIDTH)\n",
                    "pyramid_vig.py": "def pvig_ti_224_gelu(pretrained=False, **kwargs):\n    return 'pvig'\n"},
    "GraphConvNet": {"models/__init__.py": "", "models/gcn_lib/__init__.py": "NAME = 'gcn'\n",
                     "models/GraphConvNet.py": "from .gcn_lib import NAME\n"
                                               "def graphconvnet_ti(pretrain=False, **kwargs):\n    return NAME\n"
                                               "def graphconvnetp_ti(pretrained=False, **kwargs):\n    return 'p'\n"},
}


def test_the_official_code_runs_from_its_folders_with_timm_or_its_stand_in(tmp_path, clean_modules, monkeypatch):
    """Each official repository is recognised by its files and its builders are found under our names
    (GraphConvNet's pyramid ones renamed) and run from their folders; where timm does not import, its names come
    from the stand-in, with timm's drop path. A folder of none of them, folders that build none of the models
    asked for and another size than 224 are one-line errors naming the fix; the models they do not build are
    measured against the reference only."""
    import numpy as np
    import torch
    from src.app.config import ConfigError
    from tools.against_pytorch import check_official_code
    from tools.official_code import build_official, official_models
    with pytest.raises(ConfigError, match="none of the official code's folders: pass the vig_pytorch folder of "):
        check_official_code([str(tmp_path)], ["vig_ti_224_gelu"], 224)
    folders = []
    for layout, files in OFFICIAL_FILES.items():
        for path, text in files.items():
            (tmp_path / layout / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / layout / path).write_text(text)
        folders.append(str(tmp_path / layout))
    assert {name: where[1:] for name, where in official_models(folders).items()} == {
        "vig_ti_224_gelu": ("vig_pytorch", "vig_ti_224_gelu"), "pvig_ti_224_gelu": ("vig_pytorch", "pvig_ti_224_gelu"),
        "graphconvnet_ti": ("GraphConvNet", "graphconvnet_ti"),
        "pgraphconvnet_ti": ("GraphConvNet", "graphconvnetp_ti")}
    assert check_official_code(folders, ["vig_ti_224_gelu", "svig_ti_224_gelu", "pgraphconvnet_ti"], 224) == [
        "vig_ti_224_gelu", "pgraphconvnet_ti"]
    with pytest.raises(ConfigError, match="builds none of vig_s_224_gelu .*add the folder of their repository"):
        check_official_code(folders[1:], ["vig_s_224_gelu"], 224)
    with pytest.raises(ConfigError, match="224x224 only, not 32x48"):
        check_official_code(folders, ["vig_ti_224_gelu"], (32, 48))

    monkeypatch.setitem(sys.modules, "timm", None)  # as where timm's torchvision does not import
    assert (build_official("graphconvnet_ti", folders), build_official("pgraphconvnet_ti", folders)) == ("gcn", "p")
    assert np.float is float  # NumPy's alias of the builtin, which Pyramid ViG's code uses, as before NumPy 1.24
    assert build_official("pvig_ti_224_gelu", folders) == "pvig"
    drop, pair = build_official("vig_ti_224_gelu", folders)
    assert pair == (3, 3) and sys.modules["timm.data"].IMAGENET_DEFAULT_MEAN == (0.485, 0.456, 0.406)
    x = torch.ones(64, 2, 3)
    assert torch.equal(drop.eval()(x), x)
    dropped = drop.train()(x)  # whole samples dropped, the kept ones scaled by 1 / (1 - 0.5)
    assert set(dropped.flatten().tolist()) == {0.0, 2.0}
    assert torch.equal(dropped, dropped[:, :1, :1].expand_as(dropped))


def test_the_official_code_is_a_second_anchor_in_both_tables():
    """With the official model measured, the comparison table has its images/s and ours / it, and the memory
    table a row of its own with ours / it above the import; without it, the tables are as before. A model
    torch.onnx.export refuses has that column empty and the exporter's reason under the table."""
    from tools.against_pytorch import format_comparison, format_memory, report

    def side(img_s, peak, imported):
        return {"img_s": img_s, "peak_mb": peak, "first_s": 1.0,
                "stages": {"import": imported, "model": imported, "first call peak": peak, "peak": peak}}
    row = {"arch": "vig_ti_224_gelu", "weights": "official", "mode": "infer", "load": 1.0, "difference": 1e-6,
           "ours": side(30.0, 700, 400), "pytorch": side(20.0, 500, 200), "official": side(12.0, 600, 200)}
    header, _, line = format_comparison([row]).splitlines()
    cells = [(name.strip(), cell.strip()) for name, cell in zip(header.split("|")[4:11], line.split("|")[4:11])]
    assert cells == [("images/s ours", "30"), ("PyTorch", "20"), ("ratio", "1.50"), ("official code", "12"),
                     ("ratio", "2.50"), ("peak RSS MB ours", "700"), ("PyTorch", "500")]
    memory = format_memory([row]).splitlines()
    assert memory[-2].endswith("| pytorch | 200 | 200 | 500 | 500 | 300 | 1.00 |")
    assert memory[-1].endswith("| official code | 200 | 200 | 600 | 600 | 400 | 0.75 |")
    plain = {key: value for key, value in row.items() if key != "official"}
    assert "official code" not in format_comparison([plain]) and len(format_memory([plain]).splitlines()) == 4
    refused = dict(plain, mindir_ms=70.0, torch_ms=80.0, onnx_ms=25.0, torch_onnx_error="no include_self=False")
    printed = report({"machine": "m", "load": (1.0, 1.0), "rows": [refused],
                      "settings": dict(batch_size=8, image_size=224, runs=10, warmup=4)}).splitlines()
    assert printed[5].endswith("| 70 | 80 | 25 | – | 1e-06 | 1.0 |")
    assert printed[6] == ("vig_ti_224_gelu official: torch.onnx.export refused the PyTorch model "
                          "(no include_self=False)")
