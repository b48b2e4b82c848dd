"""The CPU formulations compute the native kernels' function (same parameters, same results), and
the compiled-kernel cache survives every fault."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from src.models.layers import (GELU, NATIVE, Conv2d, Formulation, compiled_gelu, cpu_formulation,
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
    kernel = ops.conv2d(x, conv.weight, conv.bias, stride=stride, pad_mode="pad", padding=pad,  # the device kernel
                        groups=groups).asnumpy()
    native = conv(x).asnumpy()
    cpu = same_weights(Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups, bias=bias, form=CPU_OPS), conv)
    exported = same_weights(Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups, bias=bias,
                                   form=Formulation()), conv)
    # native: grouped convolutions as a matmul (Ascend documents grouped conv2d for depthwise ones only)
    assert conv.use_matmul == (groups > 1) and cpu.use_matmul == (k > 1 or groups > 1) and not exported.use_matmul
    for out in (native, cpu(x).asnumpy(), exported(x).asnumpy()):
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
    native = conv(x, keys, idx).asnumpy()
    cpu = same_weights(create_graph_conv(name, 8, 16, cpu_formulation()), conv)
    np.testing.assert_allclose(cpu(x, keys, idx).asnumpy(), native, rtol=1e-5, atol=1e-5)
    assert native.shape == (2, 16, 12, 1)


def test_erf_formula_and_export_gelu():
    from scipy.special import erf
    z = np.linspace(-6, 6, 2001).astype(np.float32)
    # the formula's 1.5e-7 plus float32 rounding
    assert np.abs(erf_by_formula(Tensor(z)).asnumpy() - erf(z.astype(np.float64))).max() < 2e-6
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


@needs_compiler
def test_compiled_gather_max_is_the_running_maximum(any_mode):
    """The compiled neighbour max equals the per-slot running maximum bit for bit (ties, -0.0 against 0.0, NaN
    and infinities included), sends each gradient to the first slot that attained the maximum as the per-slot
    backward does, and refuses an index outside the table."""
    from src.models.layers import NeighbourMax
    rng = np.random.default_rng(3)
    table = rng.integers(-3, 4, (2, 50, 24)).astype(np.float32)  # small integers: many ties
    table[0, :5] = [[np.nan], [np.inf], [-np.inf], [-0.0], [0.0]]
    idx = rng.integers(0, 50, (2, 37, 9)).astype(np.int32)
    weights = Tensor(rng.standard_normal((2, 37, 24)).astype(np.float32))
    compiled = NeighbourMax(24, cpu_formulation())
    assert compiled.rows.kernel is not None, "the CPU kernel did not compile here"
    per_slot = NeighbourMax(24, CPU_OPS)
    got, expected = (m(Tensor(table), Tensor(idx)).asnumpy() for m in (compiled, per_slot))
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    finite = np.where(np.isfinite(table), table, 7.0).astype(np.float32)

    def weighted_sum(aggregate):
        def loss(t):
            return (aggregate(t, Tensor(idx)) * weights).sum()
        return loss

    grads = [ms.grad(weighted_sum(m))(Tensor(finite)).asnumpy() for m in (compiled, per_slot)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6, atol=1e-6)
    half = compiled(Tensor(finite, ms.float16), Tensor(idx))
    assert half.dtype == ms.float16
    np.testing.assert_array_equal(half.asnumpy(), per_slot(Tensor(finite), Tensor(idx)).asnumpy())
    idx[1, 3, 4] = 50
    with pytest.raises(RuntimeError, match=r"function\(GatherMaxForward\) is 2"):
        compiled(Tensor(table), Tensor(idx)).asnumpy()


class WeightedSum(nn.Cell):
    """sum(cell(x) * weights): a loss whose gradient reaches every output element differently."""

    def __init__(self, cell, weights):
        super().__init__()
        self.cell = cell
        self.weights = weights

    def construct(self, x):
        return (self.cell(x) * self.weights).sum()


@needs_compiler
def test_compiled_batch_norm_is_mindspores_inference(any_mode):
    """The compiled BatchNorm inference gives MindSpore's output and gradients (Grad-CAM differentiates a model
    in inference); training and float16 inputs keep MindSpore's kernel (the same bits)."""
    from src.models.layers import BatchNorm2d
    rng = np.random.default_rng(5)
    channels = 12
    plain, fast = nn.BatchNorm2d(channels), BatchNorm2d(channels, cpu_formulation())
    assert fast.fast_inference is not None, "the CPU kernel did not compile here"
    for name, value in [("gamma", 1 + 0.3 * rng.standard_normal(channels)), ("beta", rng.standard_normal(channels)),
                        ("moving_mean", rng.standard_normal(channels)),
                        ("moving_variance", rng.random(channels) + 0.2)]:
        for bn in (plain, fast):
            getattr(bn, name).set_data(Tensor(value.astype(np.float32)))
    x = Tensor(rng.standard_normal((3, channels, 5, 7)).astype(np.float32) * 3)  # 35 per plane: a scalar tail
    weights = Tensor(rng.standard_normal((3, channels, 5, 7)).astype(np.float32))
    results = []
    for bn in (plain, fast):
        bn.set_train(False)
        loss = WeightedSum(bn, weights)
        dx, (dgamma, dbeta) = ms.grad(loss, grad_position=0, weights=bn.trainable_params())(x)
        results.append([bn(x).asnumpy(), dx.asnumpy(), dgamma.asnumpy(), dbeta.asnumpy()])
    for expected, got in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert not np.array_equal(results[0][0], x.asnumpy())  # the statistics were used
    # the statistics' gradients (not trained, but part of the operator) against float64 central differences
    from src.models.layers.form import _batch_norm_gradients
    values = {name: getattr(fast, name).asnumpy().astype(np.float64) for name in
              ("gamma", "beta", "moving_mean", "moving_variance")}

    def loss64(mean, var):
        y = (x.asnumpy() - mean.reshape(1, -1, 1, 1)) * (values["gamma"] / np.sqrt(var + fast.eps)).reshape(
            1, -1, 1, 1) + values["beta"].reshape(1, -1, 1, 1)
        return (y * weights.asnumpy()).sum()

    def central(f, at, step=1e-4):
        return np.array([(f(at + step * unit) - f(at - step * unit)) / (2 * step) for unit in np.eye(channels)])

    mean, var = values["moving_mean"], values["moving_variance"]
    numeric = [central(lambda m: loss64(m, var), mean), central(lambda v: loss64(mean, v), var)]
    grads = _batch_norm_gradients(x, fast.gamma, fast.beta, fast.moving_mean, fast.moving_variance, fast.eps_tensor,
                                  None, weights)
    for got, expected in zip(grads[3:5], numeric):
        np.testing.assert_allclose(got.asnumpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    half = x.astype(ms.float16)
    np.testing.assert_array_equal(fast(half).asnumpy(), plain(half).asnumpy())
    for bn in (plain, fast):
        bn.set_train(True)
    np.testing.assert_array_equal(fast(x).asnumpy(), plain(x).asnumpy())  # batch statistics: MindSpore's


def kernel_threads():
    """Thread ids of the compiled kernels' workers in this process (named by kernels/kernel.h)."""
    tasks = "/proc/self/task"
    return [tid for tid in os.listdir(tasks) if open(f"{tasks}/{tid}/comm").read().strip() == "vig-kernel"]


def blocked(tid):
    """Whether the thread waits in a system call (not running): /proc gives its number, or 'running'."""
    return open(f"/proc/self/task/{tid}/syscall").read().split()[0] not in ("running", "-1")


def cpu_ticks(tid):
    fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


@needs_compiler
def test_kernel_threads_sleep_between_calls(graph_mode):
    """The kernels' threads take no CPU between calls. With OpenMP, whose idle threads spin after each parallel
    region while libgomp manages no more threads than CPUs, vig_ti ran 27% slower with the kernels than without
    on loaded checkpoints (docs/performance.md): the spinning thread took a core from MindSpore's next operator.
    So no library links OpenMP, and after a graph-mode call every worker is blocked and gains no CPU time."""
    nm = shutil.which("nm")
    for name, symbols in kernels.SYMBOLS.items():
        if nm:
            imported = subprocess.run([nm, "-D", "--undefined-only", kernels.load(name)], capture_output=True,
                                      text=True, check=True).stdout
            assert "GOMP_" not in imported and "omp_" not in imported, name
    x = Tensor(np.linspace(-4, 4, 3 * 8192, dtype=np.float32))  # several blocks: every thread takes part
    out = ms.jit(GELU(cpu_formulation()))(x).asnumpy()
    np.testing.assert_allclose(out, GELU()(x).asnumpy(), atol=4e-6)
    workers = kernel_threads()
    assert len(workers) == len(os.sched_getaffinity(0)) - 1
    deadline = time.monotonic() + 5
    while not all(blocked(tid) for tid in workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    before = [cpu_ticks(tid) for tid in workers]
    time.sleep(0.2)
    assert all(blocked(tid) for tid in workers) and [cpu_ticks(tid) for tid in workers] == before


@needs_compiler
def test_kernel_threads_compute_in_the_callers_floating_point_mode(any_mode):
    """Each worker takes the caller's floating-point mode for its part: MindSpore's graph-mode threads treat
    denormals as zero, PyNative's caller does not, and every element follows the caller whichever thread
    computed it (GELU(x) ~ x/2 of a denormal x)."""
    x = Tensor(np.full(4 * 8192, 2e-39, np.float32))
    out = GELU(cpu_formulation())(x).asnumpy()
    assert (out == 0).all() if any_mode == "graph" else (out == np.float32(1e-39)).all()


F16, F32, I32, U8 = (np.float16, np.float32, np.int32, np.uint8)
REFUSED = [  # (library, symbol, the dtypes of its inputs, one of them not the one it reads)
    ("gelu_cpu", "GeluForward", [F16]),
    ("gelu_cpu", "GeluBackward", [F32, F16]),
    ("topk_cpu", "DilatedKnn", [F16, F16, F16, F16, I32]),
    ("topk_cpu", "DilatedKnn", [F32, F32, F32, F32, np.int64]),
    ("topk_cpu", "DilatedKnnTerm", [F32, F32, F32, F32, F16, I32]),
    ("topk_cpu", "DilatedKnnResized", [F32, F32, F32, F32, F32, I32, F32, np.int64, F32, I32]),
    ("topk_cpu", "NormalizedRows", [F16]),
    ("masked_max_cpu", "MaskedMaxForward", [F16, U8]),
    ("masked_max_cpu", "MaskedMaxBackward", [F32, np.bool_, F32]),
    ("gather_max_cpu", "GatherMaxForward", [F16, I32]),
    ("gather_max_cpu", "GatherMaxBackward", [F32, np.int64, F32]),
    ("batch_norm_cpu", "BatchNormInference", [F32, F32, F32, F32, F16, F32]),
]


@needs_compiler
@pytest.mark.parametrize("library,symbol,dtypes", REFUSED, ids=[f"{s}-{i}" for i, (_, s, _) in enumerate(REFUSED)])
def test_kernels_refuse_other_dtypes(pynative, library, symbol, dtypes):
    """A kernel reads its buffers as the dtypes it was written for; given another dtype (a float16 tensor once
    reached the kNN under O2 and was read as float32, past its end) it returns an error, raised by MindSpore."""
    kernel = ops.Custom(f"{kernels.load(library)}:{symbol}", out_shape=lambda *shapes: shapes[0],
                        out_dtype=lambda *types: types[0], func_type="aot")
    inputs = [Tensor(np.ones((1, 4, 4), dtype)) for dtype in dtypes]
    with pytest.raises(RuntimeError, match=f"function\\({symbol}\\) is 1"):
        kernel(*inputs).asnumpy()


def test_kernels_fall_back_without_a_compiler(isolated_kernels, monkeypatch, caplog):
    """The CPU formulation keeps its plain-operator forms and MindSpore's kernels, with a warning."""
    monkeypatch.setenv("CXX", str(isolated_kernels.parent / "no-such-compiler"))
    form = cpu_formulation()
    assert form.cpu_ops and (form.gelu, form.topk, form.masked_max, form.gather_max, form.batch_norm) == (None,) * 5
    assert [r.name for r in caplog.records if r.levelname == "WARNING"] == [kernels.__name__] * len(kernels.SYMBOLS)
    assert "no C++ compiler found" in caplog.text


# ----- the compiled-kernel cache never breaks a run: each fault falls back (or rebuilds) with a warning

def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.name == kernels.__name__ and r.levelname == "WARNING"]


def fake_compiler(folder, script):
    """A compiler stand-in running ``script`` (arguments: source -o output flags...); each call is logged."""
    path, calls = folder / "fake-cxx", folder / "calls"
    path.write_text(f"#!/bin/sh\necho call >> {calls}\n{script}\n")
    path.chmod(0o755)
    return str(path), calls


def build_files(cache):
    return [f for f in os.listdir(cache) if f.startswith(".vig-build")] if os.path.isdir(cache) else []


def test_a_failing_compile_falls_back_once(isolated_kernels, monkeypatch, caplog):
    """A full disk: the compiler cannot write its output. No temporary file stays; the second call
    gives the same answer without compiling again."""
    compiler, calls = fake_compiler(isolated_kernels.parent, 'printf partial > "$3"; echo "ld: final link failed: '
                                                             'No space left on device" >&2; exit 1')
    monkeypatch.setenv("CXX", compiler)
    assert kernels.load("topk_cpu") is None and kernels.load("topk_cpu") is None
    assert calls.read_text().count("call") == 1
    assert build_files(isolated_kernels) == [] and os.listdir(isolated_kernels) == []
    (message,) = warnings_of(caplog)
    assert "topk_cpu falls back to MindSpore's CPU kernel" in message and "No space left on device" in message


def test_a_hanging_compile_is_stopped(isolated_kernels, monkeypatch, caplog):
    pid_file = isolated_kernels.parent / "pid"
    compiler, _ = fake_compiler(isolated_kernels.parent, f'sleep 60 & echo $! > {pid_file}; wait')
    monkeypatch.setenv("CXX", compiler)
    monkeypatch.setattr(kernels, "COMPILE_TIMEOUT", 1.0)
    start = time.monotonic()
    assert kernels.load("topk_cpu") is None
    assert time.monotonic() - start < 10
    assert "longer than 1 s" in warnings_of(caplog)[0] and build_files(isolated_kernels) == []
    child = int(pid_file.read_text())  # the compiler's own subprocess is stopped too
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and " Z " not in open(f"/proc/{child}/stat").read() and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{child}") or " Z " in open(f"/proc/{child}/stat").read()


def test_a_later_start_removes_only_stale_temporary_files(isolated_kernels):
    """Builds killed midway leave temporary files; only those named by the cache whose process is gone
    (this host) or that are older than any build are removed."""
    host = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()
    isolated_kernels.mkdir()
    files = {f".vig-build.{dead.pid}.{host}.abc123_x.so": False,          # killed build on this host
             f".vig-build.{os.getpid()}.{host}.def456_y.so": True,         # a build still running
             f".vig-build.{dead.pid}.another-host.ghi789_z.so": True,      # another host's, recent
             f".vig-build.{dead.pid}.another-host.jkl012_w.so": False,     # another host's, old
             ".vig-build.notes.txt": True, "mine.so.tmp": True}            # not the cache's
    for name in files:
        (isolated_kernels / name).write_bytes(b"partial")
    day_ago = time.time() - 86400
    for name in (".vig-build.notes.txt", "mine.so.tmp", f".vig-build.{dead.pid}.another-host.jkl012_w.so"):
        os.utime(isolated_kernels / name, (day_ago, day_ago))
    assert kernels.load("topk_cpu") is not None
    left = set(os.listdir(isolated_kernels))
    assert {name for name, kept in files.items() if kept} <= left
    assert not {name for name, kept in files.items() if not kept} & left


@needs_compiler
@pytest.mark.parametrize("damage", ["truncated", "garbage", "other library"])
def test_a_damaged_library_is_rebuilt(isolated_kernels, caplog, damage):
    path = kernels.library_path("topk_cpu", kernels._compiler())
    os.makedirs(isolated_kernels, exist_ok=True)
    if damage == "other library":  # a loadable library without the kernel's symbol
        content = open(kernels.load("gelu_cpu"), "rb").read()
    else:
        good = kernels.load("topk_cpu")
        content = open(good, "rb").read()
        content = content[:len(content) // 2] if damage == "truncated" else b"not a library" * 100
        kernels._LOADED.clear()
    with open(path, "wb") as handle:
        handle.write(content)
    assert kernels.load("topk_cpu") == path and kernels.load("topk_cpu") == path
    assert kernels.library_problem(path, kernels.SYMBOLS["topk_cpu"]) is None
    reason = {"truncated": "", "garbage": "invalid ELF header", "other library": "undefined symbol: DilatedKnn"}
    (message,) = warnings_of(caplog)
    assert "is unusable" in message and reason[damage] in message and "rebuilding it" in message


def test_a_damaged_library_that_cannot_be_rebuilt_falls_back(isolated_kernels, monkeypatch, caplog):
    compiler, _ = fake_compiler(isolated_kernels.parent, "exit 1")
    monkeypatch.setenv("CXX", compiler)
    os.makedirs(isolated_kernels)
    path = kernels.library_path("topk_cpu", compiler)
    open(path, "wb").write(b"not a library")
    assert kernels.load("topk_cpu") is None and kernels.load("topk_cpu") is None
    assert len(warnings_of(caplog)) == 2 and "falls back" in warnings_of(caplog)[1]


LOAD_TWICE = """
import importlib.util, json, logging, sys
logging.basicConfig(format="%(levelname)s %(message)s")
spec = importlib.util.spec_from_file_location("kernels", sys.argv[1])
kernels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kernels)
print(json.dumps([kernels.load("topk_cpu"), kernels.load("topk_cpu")]))
"""


def reachable_by_all(path):
    """Whether every user may run ``path`` (it and every folder above it executable by others)."""
    path = os.path.realpath(path)
    while True:
        if not os.stat(path).st_mode & 0o001:
            return False
        if path == os.path.dirname(path):
            return True
        path = os.path.dirname(path)


@pytest.fixture
def shared_cache(monkeypatch):
    """A kernel cache, and a copy of the kernels module, that another user can reach (pytest's
    temporary folders may be private); yields (cache folder, function loading twice as another user)."""
    python = next((p for p in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3")
                   if os.path.exists(p) and reachable_by_all(p)), None)
    if python is None:
        pytest.skip("no Python interpreter that another user may run")
    folder = tempfile.mkdtemp(prefix="vig-shared-cache-")
    os.chmod(folder, 0o755)
    module = shutil.copytree(os.path.dirname(kernels.__file__), os.path.join(folder, "kernels"),
                             ignore=shutil.ignore_patterns("__pycache__"))
    cache = os.path.join(folder, "cache")
    os.mkdir(cache, 0o755)
    monkeypatch.setenv("VIG_KERNEL_CACHE", cache)
    monkeypatch.setattr(kernels, "_LOADED", {})

    def load_as_another_user():
        """``load`` twice in a process of another user (nobody, when the tests run as root)."""
        env = {"PATH": os.environ["PATH"], "VIG_KERNEL_CACHE": cache, "HOME": "/nonexistent"}
        done = subprocess.run([python, "-c", LOAD_TWICE, os.path.join(module, "__init__.py")], env=env, cwd="/",
                              timeout=120, capture_output=True, text=True,
                              user=65534 if os.geteuid() == 0 else None)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout), done.stderr

    yield cache, load_as_another_user
    os.chmod(cache, 0o755)
    shutil.rmtree(folder)


@needs_compiler
def test_a_shared_cache_serves_another_user(shared_cache):
    cache, load_as_another_user = shared_cache
    path = kernels.load("topk_cpu")
    assert os.stat(path).st_mode & 0o777 == 0o644 and build_files(cache) == []  # mkstemp's 0600 is widened
    assert load_as_another_user() == ([path, path], "")


@needs_compiler
def test_an_unwritable_cache_or_unreadable_library_falls_back(shared_cache):
    cache, load_as_another_user = shared_cache
    os.chmod(cache, 0o555)
    loaded, log = load_as_another_user()
    assert loaded == [None, None]
    assert log.count("WARNING") == 1 and "cannot write to the kernel cache" in log
    os.chmod(cache, 0o755)
    path = kernels.load("topk_cpu")
    os.chmod(path, 0)
    os.chmod(cache, 0o555)
    loaded, log = load_as_another_user()
    assert loaded == [None, None]
    assert "is unusable (cannot read it: Permission denied)" in log and "falls back" in log


def dense_knn(x, y, k, dilation, bias=None):
    """The native formulation's kNN: the whole negated-distance matrix, sorted top-k, every d-th kept."""
    from src.models.layers import l2_normalize, negative_sq_distance
    score = negative_sq_distance(l2_normalize(Tensor(x)), l2_normalize(Tensor(y)),
                                 None if bias is None else Tensor(bias))
    return ms.ops.topk(score, k * dilation, sorted=True)[1].asnumpy()[..., ::dilation], score.asnumpy()


KNN_CASES = [  # (batch, queries, keys, channels, k, dilation, relative-position term)
    (1, 3136 // 16, 196 // 4, 48, 9, 1, True),   # pyramid stage 1 shrunk: whole query tiles
    (2, 37, 20, 8, 4, 3, True),                  # a query count that is no multiple of the tile (4)
    (2, 50, 50, 13, 9, 2, False),                # keys no multiple of the vector width
    (1, 30, 7, 5, 3, 2, True),                   # fewer keys than the vector width
    (3, 9, 40, 24, 18, 2, False),                # more candidates (36) than in any group of the threshold
]


@needs_compiler
@pytest.mark.parametrize("case", KNN_CASES, ids=[str(c) for c in KNN_CASES])
def test_compiled_knn_equals_the_dense_knn(any_mode, case):
    """The tiled distance + selection kernel returns the dense formulation's neighbours, whose distances it
    never stores."""
    from src.models.layers import DilatedKnnGraph
    batch, n, m, c, k, dilation, with_bias = case
    rng = np.random.default_rng(n * m + c)
    x = rng.standard_normal((batch, n, c)).astype(np.float32)
    y = rng.standard_normal((batch, m, c)).astype(np.float32)
    bias = (0.3 * rng.standard_normal((1, n, m))).astype(np.float32) if with_bias else None
    expected, score = dense_knn(x, y, k, dilation, bias)
    ranked = np.sort(score, -1)[..., ::-1][..., :k * dilation + 1]
    assert np.diff(ranked, axis=-1).max() < 0, "a tie among the ranked candidates: draw other features"
    graph = DilatedKnnGraph(k, dilation, form=cpu_formulation())
    assert graph.knn is not None, "the CPU kernel did not compile here"
    got = graph(Tensor(x), Tensor(y), None if bias is None else Tensor(bias)).asnumpy()
    assert got.shape == (batch, n, k) and got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)


@needs_compiler
def test_compiled_normalization_is_mindspores(pynative):
    """The kNN kernels' normalisation gives l2_normalize's rows and squared_norm's values bit for bit: zero rows
    (the 1e-12 floor), tiny and huge magnitudes, widths that are no multiple of the vector width."""
    from src.models.layers import compiled_topk, l2_normalize
    from src.models.layers.graph import squared_norm
    normalized = compiled_topk()[3]
    rng = np.random.default_rng(5)
    for shape in [(2, 50, 384), (3, 7, 13), (1, 4, 1)]:
        x = rng.standard_normal(shape) * np.exp(rng.uniform(-30, 30, shape[:-1] + (1,)))
        x[0, 0] = 0
        x = Tensor(x.astype(np.float32))
        expected = l2_normalize(x)
        got, got_sq = normalized(x)
        for a, b in [(got, expected), (got_sq, squared_norm(expected))]:
            np.testing.assert_array_equal(a.asnumpy().view(np.uint32), b.asnumpy().view(np.uint32))


@needs_compiler
@pytest.mark.parametrize("k,dilation", [(5, 1), (4, 3)])
def test_compiled_knn_ties_take_the_earlier_index(any_mode, k, dilation):
    """Exactly equal distances (keys repeated): the compiled kNN takes the earlier index first (a stable
    sort), and its neighbours are as near as those of the native ops.topk path, which orders ties its own way."""
    from src.models.layers import DilatedKnnGraph
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 40, 6)).astype(np.float32)
    y = rng.standard_normal((2, 5, 6)).astype(np.float32)[:, rng.integers(0, 5, 50)]  # 50 keys, 5 distinct
    positions = np.arange(0, k * dilation, dilation)
    native, score = dense_knn(x, y, k, dilation)
    got = DilatedKnnGraph(k, dilation, form=cpu_formulation())(Tensor(x), Tensor(y)).asnumpy()
    np.testing.assert_array_equal(got, np.argsort(-score, axis=-1, kind="stable")[..., positions])
    np.testing.assert_array_equal(np.take_along_axis(score, got, -1), np.take_along_axis(score, native, -1))
    # a graph of identical nodes: every distance ties, and the graph is the first k * d nodes
    graph = DilatedKnnGraph(k, dilation, form=cpu_formulation())
    same = Tensor(np.ones((1, 30, 8), np.float32))
    np.testing.assert_array_equal(graph(same, same).asnumpy(), np.broadcast_to(positions, (1, 30, k)))


@needs_compiler
def test_compiled_knn_resizes_the_term_as_mindspore_does(pynative):
    """Given the 224 table, the kernel resizes the relative-position term itself (BicubicResize's float32
    products, float64 tap sums): with every query and key the same node, the whole ranking (k.d = M) is
    decided by the term alone, among many ties, and equals the ranking by MindSpore's resized term."""
    from src.models.layers import BicubicResize, compiled_topk, relative_pos_table
    from src.models.layers.graph import squared_norm
    plain, whole, resized, _ = compiled_topk()
    table = Tensor(relative_pos_table(16, 8, 2))
    for out_hw in [(96, 24), (64, 24), (96, 16)]:  # both axes resized, the keys' only, the queries' only
        resize = BicubicResize((64, 16), out_hw)
        term = resize(table)
        assert np.diff(np.sort(term.asnumpy(), -1), axis=-1).min() == 0  # ties: one rounding apart decides
        node = np.random.default_rng(0).standard_normal(8).astype(np.float32)
        x = Tensor(np.broadcast_to(node, (2,) + out_hw[:1] + (8,)).copy())
        y = Tensor(np.broadcast_to(node, (2,) + out_hw[1:] + (8,)).copy())
        positions = Tensor(np.arange(out_hw[1], dtype=np.int32))
        expected = whole(x, y, squared_norm(x), squared_norm(y), term, positions).asnumpy()
        got = resized(x, y, squared_norm(x), squared_norm(y), table, resize.idx_h, resize.w_h, resize.idx_w,
                      resize.w_w, positions).asnumpy()
        np.testing.assert_array_equal(got, expected)
