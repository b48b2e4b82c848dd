"""The two residual blocks of every ViG stage: Grapher (graph mixing) and FFN (channel mixing)."""
from typing import Optional, Tuple

import mindspore as ms
from mindspore import Parameter, Tensor, nn

from .activation import GELU
from .conv import conv_bn
from .drop import DropPath
from .form import NATIVE, Formulation
from .graph_spec import GraphSpec
from .pos_embed import relative_pos_table
from .resize import BicubicResize


class DyGraphConv2d(nn.Cell):
    """Builds the block's graph on its input and applies the graph conv over it; (B, C, H, W) -> (B, out, H, W).

    The graph's kind comes with ``graph`` (a ``KnnGraphSpec`` or ``ThresholdGraphSpec``), which builds both
    the graph cell (``graph_builder``) and the graph conv that reads its output (``gconv``, the official
    name, so parameter names map one-to-one).

    Args:
        in_channels: channels of the input nodes.
        out_channels: channels out of the graph conv (2C in ViG's Grapher).
        graph: the block's graph spec, already fitted to its key count (``Grapher`` fits it).
        reduce_ratio: keys are the nodes average-pooled r x r (Pyramid ViG's early stages), so the graph
            compares N nodes with N / r^2 keys; 1 keeps every node as a key.
        form: the layers' formulation (``Formulation``), fixed here.
        num_nodes: H * W, for graphs whose aggregation is sized by the node count (the threshold graph).
        position_resize: the bicubic resize of a relative-position table to this block's (N, M) term,
            when the table was built for another grid (see ``DilatedKnnGraph``).
    """

    def __init__(self, in_channels: int, out_channels: int, graph: GraphSpec, reduce_ratio: int = 1,
                 form: Formulation = NATIVE, num_nodes: int = 0, position_resize: Optional[BicubicResize] = None):
        super().__init__()
        self.gconv, self.graph_builder = graph.build(in_channels, out_channels, num_nodes, reduce_ratio, form,
                                                     position_resize)
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
        return nodes, keys, self.graph_builder(nodes, keys, relative_pos)

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
            cell.graph_builder.to_float(ms.float32)
    return net


class Grapher(nn.Cell):
    """x + drop_path(fc2(graph_conv(fc1(x)))), with fc1/fc2 = 1x1 conv + BN and no activation: the graph
    mixing block of every ViG family.

    ``graph_spec`` is the block's graph as built (the given spec fitted to the key count, e.g. k and dilation
    capped by ``cap_knn``). With ``relative_pos`` the frozen table is built for ``table_grid`` (the grid at
    224x224, so the parameter has the official shape) and bicubic-resized to ``grid`` in the forward pass
    when they differ, as the official code does (by the kNN graph, a chunk of rows at a time).

    Args:
        channels: C, the block's width (the graph conv works at 2C).
        graph: which graph the block builds (``KnnGraphSpec`` or ``ThresholdGraphSpec``), chosen by the
            family's builder.
        grid: this block's node grid (rows, columns) at the model's input size.
        reduce_ratio: keys average-pooled r x r before the graph is built (Pyramid ViG: 4, 2, 1, 1 by stage);
            the grid must be divisible by r.
        relative_pos: add Pyramid ViG's frozen relative-position term to the kNN distances.
        table_grid: the square grid side the relative-position table is built for (the 224 grid; default:
            ``grid``'s rows).
        drop_path: stochastic-depth rate of the residual branch.
        form: the layers' formulation (``Formulation``), fixed here.
    """

    def __init__(self, channels: int, graph: GraphSpec, grid: Tuple[int, int], reduce_ratio: int = 1,
                 relative_pos: bool = False, table_grid: Optional[int] = None, drop_path: float = 0.0,
                 form: Formulation = NATIVE):
        super().__init__()
        height, width = grid
        if height % reduce_ratio or width % reduce_ratio:
            raise ValueError(f"node grid {grid} is not divisible by the reduce ratio {reduce_ratio}")
        self.channels = channels
        self.grid = (height, width)  # this block's node grid (rows, columns)
        self.num_nodes = height * width
        self.num_keys = (height // reduce_ratio) * (width // reduce_ratio)
        self.graph_spec = graph.fit(self.num_keys, relative_pos)
        table = relative_pos_table(channels, table_grid or height, reduce_ratio) if relative_pos else None
        resize = None
        if table is not None and table.shape[1:] != (self.num_nodes, self.num_keys):
            resize = BicubicResize(table.shape[1:], (self.num_nodes, self.num_keys))
        self.fc1 = conv_bn(channels, channels, form=form)
        self.graph_conv = DyGraphConv2d(channels, channels * 2, self.graph_spec, reduce_ratio, form, self.num_nodes,
                                        resize)
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
        resize = self.graph_conv.graph_builder.position_resize if self.use_relative_pos else None
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
    """x + drop_path(fc2(GELU(fc1(x)))), fc1/fc2 = 1x1 conv + BN: the channel mixing block.

    Args:
        channels: C, input and output width.
        hidden_channels: width between fc1 and fc2 (4C in every ViG family).
        drop_path: stochastic-depth rate of the residual branch.
        form: the layers' formulation (``Formulation``), fixed here.
    """

    def __init__(self, channels: int, hidden_channels: int, drop_path: float = 0.0, form: Formulation = NATIVE):
        super().__init__()
        self.fc1 = conv_bn(channels, hidden_channels, form=form)
        self.act = GELU(form)
        self.fc2 = conv_bn(hidden_channels, channels, form=form)
        self.drop_path = DropPath(drop_path)

    def construct(self, x):
        return self.drop_path(self.fc2(self.act(self.fc1(x)))) + x


def vig_block(grapher: Grapher, channels: int, drop_path: float, form: Formulation = NATIVE) -> nn.SequentialCell:
    """ViG's backbone entry: (Grapher, FFN) as ``backbone.I.0`` / ``backbone.I.1``, the FFN of width 4C with the
    block's ``drop_path`` rate; the default ``block`` of ``VisionGNN`` and ``PyramidVisionGNN``."""
    return nn.SequentialCell([grapher, FFN(channels, channels * 4, drop_path=drop_path, form=form)])
