"""Graph convolutions on dense neighbour lists: max-relative (mr), edge, GraphSAGE (sage), GIN.

Every conv maps centre features x (B, C, N, 1) plus neighbours gathered from the keys
(token-major (B, M, C), indices (B, N, k)) to (B, out, N, 1). Attribute names (``nn``, ``nn1``,
``nn2``, ``eps``) and ``BasicConv`` (1x1 conv with 4 groups -> BN -> GELU) follow the official
``gcn_lib`` so that state dicts map one-to-one.
"""
from typing import Optional

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ...choices import GRAPH_CONVS
from .conv import conv_bn
from .form import NATIVE, Formulation
from .graph import NeighbourMax, gather_rows


def neighbours_channel_first(keys, idx):
    """x_j as (B, C, N, k), the layout the 1x1 convs and BatchNorm expect."""
    return gather_rows(keys, idx).transpose(0, 3, 1, 2)


class MRConv2d(nn.Cell):
    """Max-relative conv: [x, max_j(x_j) - x] interleaved per channel, then BasicConv(2C -> out).

    The interleave (x_0, m_0, x_1, m_1, ...) is what the grouped conv of the trained weights
    expects: with 4 groups, group g sees the pairs of channels [gC/4, (g+1)C/4). max_j(x_j) - x
    equals max_j(x_j - x) exactly, without a (B, C, N, k) temporary.
    """

    def __init__(self, in_channels: int, out_channels: int, form: Formulation = NATIVE,
                 aggregate: Optional[nn.Cell] = None):
        super().__init__()
        self.nn = conv_bn(in_channels * 2, out_channels, groups=4, act=True, form=form)
        # (keys, graph) -> per-node max over its neighbours; another graph form brings its own
        self.aggregate = NeighbourMax(in_channels, form) if aggregate is None else aggregate

    def construct(self, x, keys, idx):
        batch, channels, num_nodes, _ = x.shape
        rel = self.aggregate(keys, idx).swapaxes(1, 2).reshape(x.shape) - x
        z = ops.stack((x, rel), axis=2).reshape(batch, 2 * channels, num_nodes, 1)
        return self.nn(z)


class EdgeConv2d(nn.Cell):
    """Edge conv: max over neighbours of BasicConv([x_i ; x_j - x_i]) (channel concatenation)."""

    def __init__(self, in_channels: int, out_channels: int, form: Formulation = NATIVE):
        super().__init__()
        self.nn = conv_bn(in_channels * 2, out_channels, groups=4, act=True, form=form)

    def construct(self, x, keys, idx):
        x_j = neighbours_channel_first(keys, idx)
        x_i = ops.tile(x, (1, 1, 1, x_j.shape[-1]))  # Tile, which the Lite operator list documents on Ascend (310)
        return ops.amax(self.nn(ops.cat((x_i, x_j - x_i), axis=1)), -1, keepdims=True)


class GraphSAGE(nn.Cell):
    """GraphSAGE: BasicConv(C -> C) on each neighbour, max, then BasicConv(2C -> out) on [x ; max]."""

    def __init__(self, in_channels: int, out_channels: int, form: Formulation = NATIVE):
        super().__init__()
        self.nn1 = conv_bn(in_channels, in_channels, groups=4, act=True, form=form)
        self.nn2 = conv_bn(in_channels * 2, out_channels, groups=4, act=True, form=form)

    def construct(self, x, keys, idx):
        x_j = ops.amax(self.nn1(neighbours_channel_first(keys, idx)), -1, keepdims=True)
        return self.nn2(ops.cat((x, x_j), axis=1))


class GINConv2d(nn.Cell):
    """GIN: BasicConv(C -> out) on (1 + eps) x + sum_j x_j, with a learnable scalar eps (init 0)."""

    def __init__(self, in_channels: int, out_channels: int, form: Formulation = NATIVE):
        super().__init__()
        self.nn = conv_bn(in_channels, out_channels, groups=4, act=True, form=form)
        self.eps = Parameter(Tensor([0.0], ms.float32), name="eps")

    def construct(self, x, keys, idx):
        x_j = gather_rows(keys, idx).sum(2).swapaxes(1, 2).reshape(x.shape)
        return self.nn((1 + self.eps.astype(x.dtype)) * x + x_j)


_CONVS = {"mr": MRConv2d, "edge": EdgeConv2d, "sage": GraphSAGE, "gin": GINConv2d}
assert tuple(_CONVS) == GRAPH_CONVS


def create_graph_conv(name: str, in_channels: int, out_channels: int, form: Formulation = NATIVE) -> nn.Cell:
    if name not in _CONVS:
        raise ValueError(f"unknown graph conv {name!r}; choose one of {sorted(GRAPH_CONVS)}")
    return _CONVS[name](in_channels, out_channels, form)
