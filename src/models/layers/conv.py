"""Convolution with the official ViG initialisation and an exact CPU formulation, and the conv + BN
(+ GELU) units the models are made of.

MindSpore's CPU backend runs a dense 3x3 convolution at about 0.5 GMAC/s and a 4-group 1x1
convolution 40x slower than a dense one. In the CPU formulation the same function is computed as
patch extraction (``ops.unfold``) followed by one (batched) matrix product; the parameters keep the
names and shapes of ``nn.Conv2d`` (``weight`` (out, in/groups, k, k), ``bias`` (out,)), so
checkpoints are interchangeable and the native kernel stays in use on Ascend and GPU.
"""
from typing import List

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import HeNormal, initializer

from .activation import GELU
from .form import NATIVE, Formulation
from .norm import BatchNorm2d


class Conv2d(nn.Cell):
    """2-D convolution (zero padding, no dilation) as the official models use it.

    Initialisation follows the official ``model_init``: kaiming-normal with fan_in
    (std = sqrt(2 / fan_in)) for the weight, zeros for the bias.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel side.
        stride: stride in both directions.
        padding: zero padding on every side.
        groups: channel groups (the graph convs' BasicConv uses 4).
        bias: add a learnt bias.
        form: the layers' formulation: whether this conv runs as patch extraction + matmul (``cpu_ops``,
            ``grouped_matmul``) or as MindSpore's conv kernel; the same function either way.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, bias: bool = True, form: Formulation = NATIVE):
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
        depthwise = groups == in_channels == out_channels
        self.use_matmul = (form.cpu_ops and (kernel_size > 1 or groups > 1)) or \
            (form.grouped_matmul and groups > 1 and not depthwise)
        self.pointwise = kernel_size == 1 and stride == 1 and padding == 0

    def construct(self, x):
        # Parameters follow the activation dtype: under mixed precision (O2/O3) MindSpore casts cell
        # inputs to float16 but not the parameters of functional ops; in float32 this is a no-op.
        weight = self.weight.astype(x.dtype)
        if self.use_matmul:
            y = self._matmul_conv(x, weight)
        else:
            # keywords: MindSpore 2.10 announces that pad_mode will be removed from ops.conv2d's signature
            y = ops.conv2d(x, weight, stride=self.stride, pad_mode="pad", padding=self.padding, groups=self.groups)
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


def conv_bn_layers(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                   act: bool = False, form: Formulation = NATIVE) -> List[nn.Cell]:
    """Conv (bias, zero padding kernel_size // 2) -> BatchNorm [-> GELU], as a list for sequences whose
    indices follow the official module tree (the stem, the head). The arguments are ``Conv2d``'s; ``act`` adds
    the GELU."""
    layers = [Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups,
                     form=form),
              BatchNorm2d(out_channels, form)]
    return layers + [GELU(form)] if act else layers


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
            act: bool = False, form: Formulation = NATIVE) -> nn.SequentialCell:
    """``conv_bn_layers`` as one cell: the official fc1/fc2 (no activation) and ``BasicConv`` (4 groups, GELU)."""
    return nn.SequentialCell(conv_bn_layers(in_channels, out_channels, kernel_size, stride, groups, act, form))
