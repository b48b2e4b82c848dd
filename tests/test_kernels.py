"""The CPU formulations compute the native kernels' function (same parameters, same results)."""
import shutil

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

from src.models.layers import (GELU, NATIVE, Conv2d, Formulation, compiled_gelu, compiled_topk, cpu_formulation,
                               create_graph_conv, erf_by_formula, kernels)

CPU_OPS = Formulation(cpu_ops=True)  # the CPU formulations without compiled kernels


def same_weights(target, source):
    """``target`` with ``source``'s parameter values (the formulations share names and shapes)."""
    ms.load_param_into_net(target, {p.name: ms.Parameter(p.value(), name=p.name) for p in source.get_parameters()},
                           strict_load=True)
    return target


CONV_CASES = [  # (in, out, kernel, stride, padding, groups, bias, size)
    (3, 8, 3, 2, 1, 1, True, 17),
    (8, 16, 3, 1, 1, 1, False, 9),
    (8, 8, 3, 2, 0, 4, True, 12),
    (16, 32, 1, 1, 0, 4, True, 7),
    (16, 16, 1, 2, 0, 1, True, 10),
    (12, 24, 5, 3, 2, 2, True, 16),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv_cpu_form_matches_native(any_mode, case):
    cin, cout, k, stride, pad, groups, bias, size = case
    conv = Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups, bias=bias)
    if bias:
        conv.bias.set_data(Tensor(np.random.default_rng(1).standard_normal(cout).astype(np.float32)))
    x = Tensor(np.random.default_rng(0).standard_normal((2, cin, size, size)).astype(np.float32))
    native = conv(x).asnumpy()
    cpu = same_weights(Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups, bias=bias, form=CPU_OPS), conv)
    assert not conv.use_matmul and cpu.use_matmul == (k > 1 or groups > 1)
    fast = cpu(x).asnumpy()
    assert fast.shape == native.shape
    np.testing.assert_allclose(fast, native, rtol=1e-5, atol=1e-5 * np.abs(native).max())


def test_conv_init_is_kaiming_fan_in():
    conv = Conv2d(64, 256, 3, groups=4)
    weight = conv.weight.asnumpy()
    fan_in = 64 // 4 * 9
    assert abs(weight.std() - np.sqrt(2 / fan_in)) < 0.03 * np.sqrt(2 / fan_in)
    assert not conv.bias.asnumpy().any()


@pytest.mark.parametrize("name", ["mr", "edge", "sage", "gin"])
def test_graph_conv_forms_agree(pynative, name):
    rng = np.random.default_rng(0)
    conv = create_graph_conv(name, 8, 16)
    x = Tensor(rng.standard_normal((2, 8, 12, 1)).astype(np.float32))
    keys = Tensor(rng.standard_normal((2, 6, 8)).astype(np.float32))
    idx = Tensor(rng.integers(0, 6, (2, 12, 4)).astype(np.int32))
    native = conv(x, keys, idx).asnumpy()
    cpu = same_weights(create_graph_conv(name, 8, 16, cpu_formulation()), conv)
    np.testing.assert_allclose(cpu(x, keys, idx).asnumpy(), native, rtol=1e-5, atol=1e-5)
    assert native.shape == (2, 16, 12, 1)


def test_erf_formula_and_export_gelu():
    from scipy.special import erf
    z = np.linspace(-6, 6, 2001).astype(np.float32)
    assert np.abs(erf_by_formula(Tensor(z)).asnumpy() - erf(z.astype(np.float64))).max() < 2e-6  # formula 1.5e-7 + float32 rounding
    x = Tensor((z * 2).reshape(1, -1))
    exact = GELU()(x).asnumpy()
    onnx = GELU(Formulation(erf_formula=True))
    assert onnx.use_erf_formula and not GELU(NATIVE).use_erf_formula
    np.testing.assert_allclose(onnx(x).asnumpy(), exact, atol=1e-5)


needs_compiler = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                                    reason="no C++ compiler: the models use MindSpore's kernels instead")


@needs_compiler
def test_compiled_gelu_is_exact(any_mode):
    """The compiled CPU GELU and its derivative against float64 (and MindSpore's kernel)."""
    from scipy.special import erf
    assert compiled_gelu() is not None, "the CPU kernel did not compile here"
    x64 = np.random.default_rng(0).standard_normal(100_003) * 4  # not a multiple of the vector width
    x = Tensor(x64.astype(np.float32))
    x64 = x64.astype(np.float32).astype(np.float64)
    native = GELU()(x).asnumpy()
    gelu = GELU(cpu_formulation())
    assert gelu.fast_gelu is not None
    fast = gelu(x).asnumpy()
    exact = 0.5 * x64 * (1 + erf(x64 / np.sqrt(2)))
    assert np.abs(fast - exact).max() < 4e-6 and np.abs(native - exact).max() < 4e-6
    grad = ms.grad(gelu)(x).asnumpy()
    exact_grad = 0.5 * (1 + erf(x64 / np.sqrt(2))) + x64 * np.exp(-0.5 * x64 ** 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(grad, exact_grad, atol=2e-6)
    half = gelu(x.astype(ms.float16)).asnumpy()  # other dtypes use MindSpore's kernel
    np.testing.assert_allclose(half.astype(np.float64), exact, atol=3e-2, rtol=1e-2)


def test_kernels_fall_back_without_a_compiler(isolated_kernels, monkeypatch, caplog):
    """The CPU formulation keeps its plain-operator forms and MindSpore's kernels, with a warning."""
    monkeypatch.setenv("CXX", str(isolated_kernels.parent / "no-such-compiler"))
    form = cpu_formulation()
    assert form.cpu_ops and form.gelu is None and form.topk is None
    assert [r.name for r in caplog.records if r.levelname == "WARNING"] == [kernels.__name__] * 2
    assert "no C++ compiler found" in caplog.text


@needs_compiler
@pytest.mark.parametrize("k,dilation", [(5, 1), (4, 3)])
def test_compiled_topk_ties_take_the_earlier_index(any_mode, k, dilation):
    """Exactly equal scores: the compiled selection takes the earlier index first (a stable sort),
    and its neighbours are as near as those of the native ops.topk path, which orders ties its own way."""
    from src.models.layers import DilatedKnnGraph
    op = compiled_topk()
    assert op is not None, "the CPU kernel did not compile here"
    scores = np.random.default_rng(k).integers(-3, 1, (2, 40, 50)).astype(np.float32)  # many ties per row
    positions = np.arange(0, k * dilation, dilation, dtype=np.int32)
    got = op(Tensor(scores), Tensor(positions)).asnumpy()
    np.testing.assert_array_equal(got, np.argsort(-scores, axis=-1, kind="stable")[..., positions])
    _, native = ms.ops.topk(Tensor(scores), k * dilation, sorted=True)
    native = native.asnumpy()[..., positions]
    np.testing.assert_array_equal(np.take_along_axis(scores, got, -1), np.take_along_axis(scores, native, -1))
    # a graph of identical nodes: every distance ties, and the graph is the first k * d nodes
    graph = DilatedKnnGraph(k, dilation, form=cpu_formulation())
    same = Tensor(np.ones((1, 30, 8), np.float32))
    np.testing.assert_array_equal(graph(same, same).asnumpy(), np.broadcast_to(positions, (1, 30, k)))
