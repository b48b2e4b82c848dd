"""Convolution with the official ViG initialisation and an exact CPU formulation.

MindSpore's CPU backend runs a dense 3x3 convolution at about 0.5 GMAC/s and a 4-group 1x1
convolution 40x slower than a dense one. On the CPU the same function is computed as patch
extraction (``ops.unfold``) followed by one (batched) matrix product; the parameters keep the
names and shapes of ``nn.Conv2d`` (``weight`` (out, in/groups, k, k), ``bias`` (out,)), so
checkpoints are interchangeable and the native kernel stays in use on Ascend and GPU.
"""
from typing import Optional

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import HeNormal, initializer

KERNEL_IMPLS = ("auto", "native", "cpu")


class Conv2d(nn.Cell):
    """2-D convolution (zero padding, no dilation) as the official models use it.

    Initialisation follows the official ``model_init``: kaiming-normal with fan_in
    (std = sqrt(2 / fan_in)) for the weight, zeros for the bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, bias: bool = True):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: channels {in_channels}->{out_channels} are not divisible by "
                             f"groups={groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.groups = groups
        shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        self.weight = Parameter(initializer(HeNormal(mode="fan_in"), shape, ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (out_channels,), ms.float32), name="bias") if bias else None
        self.has_bias = bias
        # A dense 1x1 convolution is already fast on the CPU; only k > 1 or groups > 1 need the matmul form.
        self.use_matmul = False
        self.impl = "native"
        self.pointwise = kernel_size == 1 and stride == 1 and padding == 0

    def set_impl(self, impl: str) -> None:
        """Select the kernel: 'native' (ops.conv2d) or 'cpu' (unfold + matmul where that is faster); grouped
        convolutions other than depthwise ones are a matmul in both."""
        if impl not in ("native", "cpu"):
            raise ValueError(f"Conv2d impl must be 'native' or 'cpu', got {impl!r}")
        # MindSpore 2.x documents grouped ops.conv2d on Ascend for depthwise convolutions only (groups = in =
        # out channels): any other grouped convolution (the graph conv's 4 groups) is the batched matmul
        # everywhere, the same function on native MatMul kernels.
        depthwise = self.groups == self.in_channels == self.out_channels
        self.use_matmul = (impl == "cpu" and self.kernel_size > 1) or (self.groups > 1 and not depthwise)
        self.impl = impl

    def set_export(self, exporting: bool) -> None:
        """Exported graphs keep the convolution operator (grouped included: ONNX and MindSpore Lite run
        it); back to the ``impl`` form afterwards."""
        if exporting:
            self.use_matmul = False
        else:
            self.set_impl(self.impl)

    def construct(self, x):
        # Parameters follow the activation dtype: under mixed precision (O2/O3) MindSpore casts cell
        # inputs to float16 but not the parameters of functional ops; in float32 this is a no-op.
        weight = self.weight.astype(x.dtype)
        if self.use_matmul:
            y = self._matmul_conv(x, weight)
        else:
            y = ops.conv2d(x, weight, None, self.stride, "pad", self.padding, 1, self.groups)
        if self.has_bias:  # BiasAdd: its backward is a dedicated reduction, cheaper than a broadcast add's
            y = ops.bias_add(y, self.bias.astype(x.dtype))
        return y

    def _matmul_conv(self, x, weight):
        """Same function as the native kernel: columns ordered (channel, ky, kx) like the weight."""
        _, _, h, w = x.shape
        if self.pointwise:
            out_h, out_w = h, w
            cols = x.reshape(x.shape[0], self.in_channels, h * w)
        else:
            out_h = (h + 2 * self.padding - self.kernel_size) // self.stride + 1
            out_w = (w + 2 * self.padding - self.kernel_size) // self.stride + 1
            cols = ops.unfold(x, self.kernel_size, 1, self.padding, self.stride)
        length = out_h * out_w
        if self.groups == 1:
            return ops.matmul(weight.reshape(self.out_channels, -1), cols).reshape(-1, self.out_channels, out_h, out_w)
        g = self.groups
        y = ops.matmul(weight.reshape(g, self.out_channels // g, -1), cols.reshape(-1, g, cols.shape[1] // g, length))
        return y.reshape(-1, self.out_channels, out_h, out_w)


def resolve_kernel_impl(impl: str = "auto", device_target: Optional[str] = None) -> str:
    """'auto' picks the CPU formulations on the CPU target and the native kernels elsewhere."""
    if impl not in KERNEL_IMPLS:
        raise ValueError(f"kernel impl must be one of {KERNEL_IMPLS}, got {impl!r}")
    if impl != "auto":
        return impl
    target = device_target or ms.get_context("device_target")
    return "cpu" if target == "CPU" else "native"


def set_kernel_impl(net: nn.Cell, impl: str = "auto") -> str:
    """Switch every kernel-dependent cell of ``net`` to ``impl``; returns the resolved choice.

    Cells that offer a CPU formulation expose ``set_impl``; their parameters do not change.
    """
    resolved = resolve_kernel_impl(impl)
    for _, cell in net.cells_and_names():
        if hasattr(cell, "set_impl"):
            cell.set_impl(resolved)
    return resolved
