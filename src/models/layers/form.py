"""Formulations: which operators the kernel-dependent layers use, fixed when a model is built.

Every formulation computes the same function with the same parameters; only the operators differ.
A layer takes its ``form`` as a constructor argument and never changes it afterwards.

- ``native``: MindSpore's own kernels, for Ascend and GPU (the default); the graph conv's 4-group
  convolution as a batched matmul, the form Ascend documents support for.
- ``cpu``: what is fast on MindSpore's CPU backend: convolutions as patch extraction + matmul (plain
  MindSpore operators), and GELU, the dilated kNN, the neighbour max, the threshold graph's masked max and
  BatchNorm's inference as compiled C++ kernels (``kernels``). Building this formulation compiles them (once;
  cached on disk) and falls back to MindSpore's kernels with a warning where they are unavailable (the
  neighbour max then as a running maximum over per-slot gathers).
- exported graphs (``export_formulation``) never hold compiled kernels, whose library lives in one
  host's cache; MINDIR and AIR hold grouped convolutions as the native form's batched matmul, ONNX as the
  convolution operator; ONNX graphs compute erf by formula (MindSpore's ONNX converter has no Erf).
"""
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional, Union

from mindspore import ops

from . import kernels
from ...choices import KERNEL_IMPLS
from ..errors import ModelError


@dataclass(frozen=True)
class Formulation:
    cpu_ops: bool = False         # unfold + matmul convolutions, running neighbour max
    gelu: Optional[Any] = None    # compiled float32 GELU (custom operator with its derivative)
    topk: Optional[Any] = None    # compiled dilated kNN (custom operators, see compiled_topk)
    masked_max: Optional[Any] = None  # compiled (forward, backward) max over a threshold graph's edges
    gather_max: Optional[Any] = None  # compiled (forward, backward) max over gathered neighbour rows
    batch_norm: Optional[Any] = None  # compiled BatchNorm inference with the running statistics (norm.BatchNorm2d)
    erf_formula: bool = False     # GELU's erf from elementary operators
    fold_batch_norm: bool = False  # an export folds BatchNorm into the convolution before it (fold.py)
    # grouped convolutions other than depthwise ones as a batched matmul: MindSpore 2.x documents grouped
    # ops.conv2d on Ascend for depthwise convolutions only (docs/ascend.md)
    grouped_matmul: bool = False


NATIVE = Formulation(grouped_matmul=True)


def _same(x, *_):
    return x


@lru_cache(maxsize=None)
def compiled_gelu():
    """The compiled float32 GELU as a custom operator with its compiled derivative, or None."""
    library = kernels.load("gelu_cpu")
    if library is None:
        return None
    backward = ops.Custom(f"{library}:GeluBackward", out_shape=_same, out_dtype=_same, func_type="aot")

    def bprop(x, out, dout):
        return (backward(x, dout),)

    return ops.Custom(f"{library}:GeluForward", out_shape=_same, out_dtype=_same, func_type="aot", bprop=bprop)


def _knn_shape(queries, *inputs):
    return queries[:-1] + inputs[-1]


def _knn_dtype(*inputs):
    return inputs[-1]


def _normalized_shape(x):
    return x, x[:-1] + [1]


def _normalized_dtype(x):
    return x, x


@lru_cache(maxsize=None)
def compiled_topk():
    """The compiled dilated kNN (``kernels/topk_cpu.cc``), or None: the neighbour indices (B, N, k) of the
    queries (B, N, C) among the keys (B, M, C) at the ranked positions (k,), from distances computed a tile
    of queries at a time; three operators: without a relative-position term, with the whole term, and
    with the term's table and resize taps; then a fourth, the rows L2-normalised with their squared norms
    (the first three's inputs)."""
    library = kernels.load("topk_cpu")
    if library is None:
        return None
    *knn, normalized = kernels.SYMBOLS["topk_cpu"]
    return tuple(ops.Custom(f"{library}:{name}", out_shape=_knn_shape, out_dtype=_knn_dtype, func_type="aot")
                 for name in knn) + (
        ops.Custom(f"{library}:{normalized}", out_shape=_normalized_shape, out_dtype=_normalized_dtype,
                   func_type="aot"),)


@lru_cache(maxsize=None)
def compiled_masked_max():
    """(forward, backward) compiled operators of the masked neighbour max (SViG), or None."""
    library = kernels.load("masked_max_cpu")
    if library is None:
        return None
    return tuple(ops.Custom(f"{library}:{name}", out_shape=_same, out_dtype=_same, func_type="aot")
                 for name in ("MaskedMaxForward", "MaskedMaxBackward"))


def _gather_max_shape(flat, idx):
    return idx[:-1] + flat[-1:]


@lru_cache(maxsize=None)
def compiled_gather_max():
    """(forward, backward) compiled operators of the neighbour max over gathered rows (the max-relative
    conv), or None."""
    library = kernels.load("gather_max_cpu")
    if library is None:
        return None
    return (ops.Custom(f"{library}:GatherMaxForward", out_shape=_gather_max_shape, out_dtype=_same, func_type="aot"),
            ops.Custom(f"{library}:GatherMaxBackward", out_shape=_same, out_dtype=_same, func_type="aot"))


def _batch_norm_gradients(x, gamma, beta, mean, var, eps, out, dout):
    """The gradients of BatchNorm with fixed statistics, y = (x - mean) * gamma / sqrt(var + eps) + beta, in
    MindSpore's operators (inference rarely differentiates: Grad-CAM's input gradient)."""
    invstd = ops.rsqrt(var + eps)
    channel = (1, -1, 1, 1)
    centred = x - mean.reshape(channel)
    per_channel = ops.reduce_sum(dout * centred, (0, 2, 3))
    dbeta = ops.reduce_sum(dout, (0, 2, 3))
    scale = gamma * invstd
    dvar = -0.5 * per_channel * scale * invstd * invstd
    return (dout * scale.reshape(channel), per_channel * invstd, dbeta, -dbeta * scale, dvar, ops.zeros_like(eps))


@lru_cache(maxsize=None)
def compiled_batch_norm():
    """The compiled BatchNorm inference (``kernels/batch_norm_cpu.cc``) as a custom operator with its gradients,
    or None: inputs x (N, C, H, W), gamma, beta, mean, var (C,), eps (1,)."""
    library = kernels.load("batch_norm_cpu")
    if library is None:
        return None
    return ops.Custom(f"{library}:BatchNormInference", out_shape=_same, out_dtype=_same, func_type="aot",
                      bprop=_batch_norm_gradients)


def cpu_formulation() -> Formulation:
    """The CPU formulation, with the compiled kernels that are available (compiled here if needed)."""
    return Formulation(cpu_ops=True, gelu=compiled_gelu(), topk=compiled_topk(), masked_max=compiled_masked_max(),
                       gather_max=compiled_gather_max(), batch_norm=compiled_batch_norm())


def formulation(kernel_impl: Union[str, Formulation] = "native") -> Formulation:
    """The formulation named ``kernel_impl`` ('native' or 'cpu'); a Formulation is returned as it is."""
    if isinstance(kernel_impl, Formulation):
        return kernel_impl
    if kernel_impl == "native":
        return NATIVE
    if kernel_impl == "cpu":
        return cpu_formulation()
    hint = ""
    if kernel_impl == "auto":
        hint = " ('auto' is resolved by the caller: resolve_kernel_impl(impl, device_target))"
    raise ModelError(f"kernel_impl must be one of {KERNEL_IMPLS} or a Formulation, got {kernel_impl!r}{hint}")


def resolve_kernel_impl(impl: str, device_target: str) -> str:
    """'auto' is 'cpu' on the CPU target and 'native' elsewhere; 'native' and 'cpu' stay as they are."""
    if impl == "auto":
        return "cpu" if device_target == "CPU" else "native"
    if impl not in KERNEL_IMPLS:
        raise ModelError(f"kernel_impl must be 'auto' or one of {KERNEL_IMPLS}, got {impl!r}")
    return impl


def export_formulation(kernel_impl: str, file_format: str) -> Formulation:
    """The formulation an exported graph is built with: MindSpore's own operators, or for a MINDIR of
    ``kernel_impl`` 'cpu' the CPU formulations without compiled kernels (plain MindSpore operators,
    faster in MindSpore on the CPU; each BatchNorm after a convolution folded into it when exported); ONNX with
    erf by formula. MINDIR and AIR (the Ascend 310 files) hold the grouped convolutions as a batched matmul, as
    the native form does: MindSpore documents grouped ops.conv2d on Ascend for depthwise convolutions only, and no
    MindSpore Lite or CANN document lifts that for the 310 (docs/ascend.md); ONNX keeps the grouped Conv, which
    ONNX and onnxruntime define."""
    if kernel_impl not in KERNEL_IMPLS:
        raise ModelError(f"kernel_impl must be one of {KERNEL_IMPLS}, got {kernel_impl!r}")
    if kernel_impl == "cpu" and file_format != "MINDIR":
        raise ModelError(f"the CPU formulations (patch extraction) export only to MINDIR, not {file_format}: "
                         f"use kernel_impl 'native'")
    return Formulation(cpu_ops=kernel_impl == "cpu", erf_formula=file_format == "ONNX",
                       grouped_matmul=file_format != "ONNX", fold_batch_norm=kernel_impl == "cpu")
