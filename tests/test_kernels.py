"""The CPU formulations compute the native kernels' function (same parameters, same results)."""
import shutil

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, ops

from src.models.layers import GELU, Conv2d, create_graph_conv, erf_by_formula, set_export_mode, set_kernel_impl
from src.models.layers.activation import compiled_gelu

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
    kernel = ops.conv2d(x, conv.weight, conv.bias, stride, "pad", pad, 1, groups).asnumpy()  # the device kernel
    conv.set_impl("native")
    assert conv.use_matmul == (groups > 1)  # Ascend documents grouped conv2d for depthwise ones only
    native = conv(x).asnumpy()
    conv.set_impl("cpu")
    assert conv.use_matmul == (k > 1 or groups > 1)
    fast = conv(x).asnumpy()
    for out in (native, fast):
        assert out.shape == kernel.shape
        np.testing.assert_allclose(out, kernel, rtol=1e-5, atol=1e-5 * np.abs(kernel).max())


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
    set_kernel_impl(conv, "native")
    native = conv(x, keys, idx).asnumpy()
    set_kernel_impl(conv, "cpu")
    np.testing.assert_allclose(conv(x, keys, idx).asnumpy(), native, rtol=1e-5, atol=1e-5)
    assert native.shape == (2, 16, 12, 1)


def test_erf_formula_and_export_gelu():
    from scipy.special import erf
    z = np.linspace(-6, 6, 2001).astype(np.float32)
    assert np.abs(erf_by_formula(Tensor(z)).asnumpy() - erf(z.astype(np.float64))).max() < 2e-6  # formula 1.5e-7 + float32 rounding
    gelu = GELU()
    x = Tensor((z * 2).reshape(1, -1))
    exact = gelu(x).asnumpy()
    set_export_mode(gelu, "ONNX")
    assert gelu.use_erf_formula
    np.testing.assert_allclose(gelu(x).asnumpy(), exact, atol=1e-5)
    set_export_mode(gelu, None)
    assert gelu(x).asnumpy().tobytes() == exact.tobytes()


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
    gelu = GELU()
    native = gelu(x).asnumpy()
    gelu.set_impl("cpu")
    assert gelu.fast_gelu is not None
    fast = gelu(x).asnumpy()
    exact = 0.5 * x64 * (1 + erf(x64 / np.sqrt(2)))
    assert np.abs(fast - exact).max() < 4e-6 and np.abs(native - exact).max() < 4e-6
    grad = ms.grad(gelu)(x).asnumpy()
    exact_grad = 0.5 * (1 + erf(x64 / np.sqrt(2))) + x64 * np.exp(-0.5 * x64 ** 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(grad, exact_grad, atol=2e-6)
    half = gelu(x.astype(ms.float16)).asnumpy()  # other dtypes use MindSpore's kernel
    np.testing.assert_allclose(half.astype(np.float64), exact, atol=3e-2, rtol=1e-2)


def test_kernels_fall_back_without_a_compiler(monkeypatch, tmp_path):
    from src.models.layers import kernels
    monkeypatch.setattr(kernels, "_LOADED", {})
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    assert kernels.load("gelu_cpu") is None
