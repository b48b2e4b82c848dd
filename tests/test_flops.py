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
