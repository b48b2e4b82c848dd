"""The two residual blocks of every ViG stage: Grapher (graph mixing) and FFN (channel mixing)."""
from typing import Optional, Tuple

import mindspore as ms
from mindspore import Parameter, Tensor, nn

from .activation import GELU
from .conv import conv_bn
from .drop import DropPath
from .form import NATIVE, Formulation
from .gcn import create_graph_conv
from .graph import DilatedKnnGraph, cap_knn
from .pos_embed import relative_pos_table
from .resize import BicubicResize
from .threshold_graph import SimilarityThresholdGraph, threshold_graph_conv


class DyGraphConv2d(nn.Cell):
    """Builds the kNN graph on the input (keys average-pooled by ``reduce_ratio``) and applies
    the graph conv; (B, C, H, W) -> (B, out, H, W).

    With ``threshold`` (a probability) the graph is SViG's similarity-thresholded one instead (see
    ``threshold_graph``; ``num_nodes`` is then the node count, and k, dilation are not used).
    ``position_resize`` resizes a relative-position table to the node grid (see ``DilatedKnnGraph``).
    """

    def __init__(self, in_channels: int, out_channels: int, k: Optional[int], dilation: Optional[int],
                 conv: str = "mr", reduce_ratio: int = 1, stochastic: bool = False, epsilon: float = 0.0,
                 form: Formulation = NATIVE, threshold: Optional[float] = None, num_nodes: int = 0,
                 position_resize: Optional[BicubicResize] = None):
        super().__init__()
        if threshold is None:
            self.gconv = create_graph_conv(conv, in_channels, out_channels, form)
            self.dilated_knn_graph = DilatedKnnGraph(k, dilation, stochastic, epsilon, form, position_resize)
        else:
            if reduce_ratio != 1:
                raise ValueError("the similarity-threshold graph compares every node with every other: "
                                 f"use reduce_ratio 1, not {reduce_ratio}")
            self.gconv = threshold_graph_conv(conv, in_channels, out_channels, num_nodes, form)
            self.dilated_knn_graph = SimilarityThresholdGraph(threshold)
        self.reduce_ratio = reduce_ratio

    def graph(self, x, relative_pos=None):
        """Token-major nodes (B, N, C), keys (B, M, C) and the graph: neighbour indices (B, N, k), or
        the boolean adjacency (B, N, N) of the threshold graph."""
        batch, channels, height, width = x.shape
        nodes = x.reshape(batch, channels, -1).swapaxes(1, 2)
        keys = nodes
        if self.reduce_ratio > 1:  # r x r average pooling, written as a mean so that it exports everywhere
            r = self.reduce_ratio
            pooled = x.reshape(batch, channels, height // r, r, width // r, r).mean((3, 5))
            keys = pooled.reshape(batch, channels, -1).swapaxes(1, 2)
        return nodes, keys, self.dilated_knn_graph(nodes, keys, relative_pos)

    def construct(self, x, relative_pos=None):
        batch, channels, height, width = x.shape
        _, keys, idx = self.graph(x, relative_pos)
        out = self.gconv(x.reshape(batch, channels, height * width, 1), keys, idx)
        return out.reshape(batch, -1, height, width)


def graphs_in_float32(net: nn.Cell) -> nn.Cell:
    """Have every graph of ``net`` built in float32 after ``ms.amp.auto_mixed_precision`` cast the network to
    float16 (O2, O3), as BatchNorm is kept in float32; returns ``net``.

    Mixed precision casts the float arguments of every cell's ``construct`` and methods to the cell's precision
    (and, in PyNative mode, the inputs of every operator inside the cell), so a cast to float32 inside a float16
    cell lasts only to the next method: the distances, top-k and relative-position term would run in float16.
    Here the DyGraphConv2d's own code (its nodes and keys, the term it passes on) and its graph cell (kNN or
    similarity threshold, with the term's resize) are float32; its graph conv keeps the network's precision.
    """
    for _, cell in net.cells_and_names():
        if isinstance(cell, DyGraphConv2d):
            cell.add_flags(fp16=False, bf16=False, fp32=True)  # this cell only, as Cell.to_float flags a cell
            cell.dilated_knn_graph.to_float(ms.float32)
    return net


class Grapher(nn.Cell):
    """x + drop_path(fc2(graph_conv(fc1(x)))), with fc1/fc2 = 1x1 conv + BN and no activation.

    ``grid`` is this block's node grid for the model's input size. With ``relative_pos`` the
    frozen table is built for ``table_grid`` (the grid at 224x224, so the parameter has the
    official shape) and bicubic-resized to ``grid`` in the forward pass when they differ,
    as the official code does (by the kNN graph, a chunk of rows at a time). k and dilation are
    capped to the key count (see ``cap_knn``).
    With ``threshold`` (SViG: the block's probability p) the graph is the similarity-thresholded
    one and k, dilation are None.
    """

    def __init__(self, channels: int, k: Optional[int], dilation: Optional[int], grid: Tuple[int, int],
                 conv: str = "mr", reduce_ratio: int = 1, relative_pos: bool = False,
                 table_grid: Optional[int] = None, drop_path: float = 0.0, stochastic: bool = False,
                 epsilon: float = 0.0, form: Formulation = NATIVE, threshold: Optional[float] = None):
        super().__init__()
        height, width = grid
        if height % reduce_ratio or width % reduce_ratio:
            raise ValueError(f"node grid {grid} is not divisible by the reduce ratio {reduce_ratio}")
        if threshold is not None and relative_pos:
            raise ValueError("the similarity-threshold graph takes no relative-position term")
        self.channels = channels
        self.grid = (height, width)  # this block's node grid (rows, columns)
        self.num_nodes = height * width
        self.num_keys = (height // reduce_ratio) * (width // reduce_ratio)
        self.threshold = threshold
        self.k, self.dilation = cap_knn(k, dilation, self.num_keys) if threshold is None else (None, None)
        table = relative_pos_table(channels, table_grid or height, reduce_ratio) if relative_pos else None
        resize = None
        if table is not None and table.shape[1:] != (self.num_nodes, self.num_keys):
            resize = BicubicResize(table.shape[1:], (self.num_nodes, self.num_keys))
        self.fc1 = conv_bn(channels, channels, form=form)
        self.graph_conv = DyGraphConv2d(channels, channels * 2, self.k, self.dilation, conv, reduce_ratio, stochastic,
                                        epsilon, form, threshold, self.num_nodes, resize)
        self.fc2 = conv_bn(channels * 2, channels, form=form)
        self.drop_path = DropPath(drop_path)
        self.use_relative_pos = relative_pos
        if relative_pos:
            self.relative_pos = Parameter(Tensor(table, ms.float32), name="relative_pos", requires_grad=False)

    def position_table(self):
        """The relative-position table as the graph takes it (at 224 the term itself), or None."""
        return self.relative_pos if self.use_relative_pos else None

    def position_bias(self):
        """The whole relative-position term (1, N, M) for this block's node grid, or None (for tools; the
        forward pass resizes it a chunk of rows at a time)."""
        resize = self.graph_conv.dilated_knn_graph.position_resize if self.use_relative_pos else None
        if resize is None:
            return self.position_table()
        return resize(self.relative_pos)

    def neighbours(self, x):
        """The graph this block uses for input x (for tests and visualisation): neighbour indices
        (B, N, k), or the boolean adjacency (B, N, N) of the threshold graph."""
        return self.graph_conv.graph(self.fc1(x), self.position_table())[2]

    def construct(self, x):
        shortcut = x
        x = self.fc1(x)
        x = self.graph_conv(x, self.position_table())
        x = self.fc2(x)
        return self.drop_path(x) + shortcut


class FFN(nn.Cell):
    """x + drop_path(fc2(GELU(fc1(x)))), fc1/fc2 = 1x1 conv + BN (hidden width 4C in ViG)."""

    def __init__(self, channels: int, hidden_channels: int, drop_path: float = 0.0, form: Formulation = NATIVE):
        super().__init__()
        self.fc1 = conv_bn(channels, hidden_channels, form=form)
        self.act = GELU(form)
        self.fc2 = conv_bn(hidden_channels, channels, form=form)
        self.drop_path = DropPath(drop_path)

    def construct(self, x):
        return self.drop_path(self.fc2(self.act(self.fc1(x)))) + x


def vig_block(grapher: Grapher, channels: int, drop_path: float, form: Formulation = NATIVE) -> nn.SequentialCell:
    """ViG's backbone entry: (Grapher, FFN) as ``backbone.I.0`` / ``backbone.I.1``."""
    return nn.SequentialCell([grapher, FFN(channels, channels * 4, drop_path=drop_path, form=form)])
