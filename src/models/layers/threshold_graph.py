"""Similarity-thresholded graph (SViG): an edge wherever a pair of nodes is unusually similar.

Per block a probability p gives a z threshold Phi^-1(p) (computed once, here). Each image's
similarity matrix of L2-normalised nodes (the negated kNN distance, a monotone function of the
cosine) is z-scored over all of its N x N entries (unbiased std), and (i, j) is an edge where
that z-score exceeds the threshold. Degrees vary per node and per image.

Aggregation over such a variable neighbour set keeps static shapes: every non-edge is filled
with the centre node itself, so max_j where(edge_ij, x_j, x_i) - x_i is the max-relative
aggregate over the neighbours plus the node itself. That is exactly the official edge-list
result: a node with an edge has its own (maximal) self-similarity above the threshold too, and
an isolated node aggregates to 0 either way.
"""
import warnings
from typing import List

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from .form import NATIVE, Formulation
from .gcn import MRConv2d
from .graph import l2_normalize, negative_sq_distance, normal_quantile, scatter_add

# Per image, the (N, chunk, C) candidates of one chunk of key nodes hold at most this many elements
# (4 MB in float32): at batch 128 a chunk is ~0.5 GB instead of the 3.8 GB of ViG-Ti's full B*N*N*C.
CHUNK_ELEMENTS = 1 << 20


def threshold_probabilities(start: float, dec: float, depth: int) -> List[float]:
    """p_i = start - dec * i, by repeated subtraction from ``start`` as the official code computes it."""
    probs, current = [], start
    for _ in range(depth):
        probs.append(current)
        current = current - dec
    return probs


def probability_to_z(probability: float) -> float:
    """Phi^-1(p). p <= 0 gives -inf (every pair is an edge), p >= 1 gives +inf (no edges), with a warning."""
    if probability <= 0:
        warnings.warn(f"similarity threshold probability {probability:.4g} <= 0: every pair of nodes is an edge "
                      "(fully connected graph)", stacklevel=2)
    elif probability >= 1:
        warnings.warn(f"similarity threshold probability {probability:.4g} >= 1: no edges, every node aggregates "
                      "only itself", stacklevel=2)
    return normal_quantile(probability)


class SimilarityThresholdGraph(nn.Cell):
    """Boolean adjacency (B, N, M) of queries x (B, N, C) against keys y (B, M, C) (y is x in SViG).

    Runs in float32 without gradient.

    Args:
        probability: p; pairs whose z-scored similarity exceeds Phi^-1(p) are edges (out-of-range p warns,
            see ``probability_to_z``).
        ddof: the std's delta degrees of freedom (official: 1, the unbiased std).
    """

    def __init__(self, probability: float, ddof: int = 1):
        super().__init__()
        self.probability = probability
        self.z = probability_to_z(probability)
        self.z_threshold = Tensor(self.z, ms.float32)  # the official comparison is in float32 too
        self.ddof = ddof

    def construct(self, x, y, relative_pos=None):
        """``relative_pos`` completes the kNN graph's interface; this graph takes none."""
        x = ops.stop_gradient(l2_normalize(x.astype(ms.float32)))
        y = ops.stop_gradient(l2_normalize(y.astype(ms.float32)))
        score = negative_sq_distance(x, y)
        count = score.shape[1] * score.shape[2]
        centred = score - score.mean((1, 2), keep_dims=True)
        std = ops.sqrt((centred * centred).sum((1, 2), keepdims=True) / (count - self.ddof))
        return ops.stop_gradient(centred / std > self.z_threshold)


class MaskedNeighbourMax(nn.Cell):
    """max over j of where(mask[b, i, j], x[b, j], x[b, i]) for x (B, N, C), mask (B, N, N) -> (B, N, C).

    The key nodes j are processed in chunks (see ``CHUNK_ELEMENTS``), so no (B, N, N, C) tensor is
    ever held, forward or backward. The backward sends each output gradient to the one node that
    attained the maximum (the centre when that was a non-edge), as a max over an edge list does.
    In the CPU formulation a compiled kernel visits only the edges (same results, computed in float32
    and returned in the input's dtype): MindSpore's CPU kernels take ~0.6 s per ViG-Ti block for the
    dense form.

    Args:
        num_nodes: N, the node count (sizes the key chunks and the backward's index constants).
        channels: C, the nodes' width.
        chunk: key nodes per chunk; 0 chooses it from ``CHUNK_ELEMENTS``.
        form: the layers' formulation: its ``masked_max`` is the compiled kernel, if any.
    """

    def __init__(self, num_nodes: int, channels: int, chunk: int = 0, form: Formulation = NATIVE):
        super().__init__()
        chunk = chunk or max(1, CHUNK_ELEMENTS // (num_nodes * channels))
        self.sizes = [min(chunk, num_nodes - start) for start in range(0, num_nodes, chunk)]
        self.starts = [sum(self.sizes[:c]) for c in range(len(self.sizes))]
        self.node_index = Tensor(np.arange(num_nodes).reshape(1, num_nodes, 1), ms.int32)  # ops.arange fails in a bprop
        self.channel_index = Tensor(np.arange(channels), ms.int32)
        self.kernel = form.masked_max

    def _chunks(self, x, mask):
        """Per chunk of key nodes: (edge mask (B, N, S, 1), key features (B, 1, S, C)). ``narrow``, as
        tensor slicing is slow in PyNative mode."""
        return [(ops.narrow(mask, 2, self.starts[c], self.sizes[c]).expand_dims(-1),
                 ops.narrow(x, 1, self.starts[c], self.sizes[c]).expand_dims(1)) for c in range(len(self.sizes))]

    def construct(self, x, mask):
        if self.kernel is not None:  # a maximum of float16 values is exact in float32 and back
            return self.kernel[0](x.astype(ms.float32), mask.astype(ms.uint8)).astype(x.dtype)
        # A non-edge is lowered to the dtype's lowest value, below the centre the maximum starts from: the same
        # result as where(edge, x_j, x_i) without Select, for which the MindSpore Lite operator list gives no Ascend
        # (310) support. An edge adds -0.0, which changes no value.
        lowest = -65504.0 if x.dtype == ms.float16 else -3.4028234663852886e38
        out = x
        for edge, keys in self._chunks(x, mask):
            out = ops.maximum(out, ops.amax(keys + (1 - edge.astype(x.dtype)) * lowest, 2))
        return out

    def bprop(self, x, mask, out, dout):
        if self.kernel is not None:
            grad = self.kernel[1](x.astype(ms.float32), mask.astype(ms.uint8), dout.astype(ms.float32))
            return grad.astype(x.dtype), ops.zeros_like(mask)
        centre = x.expand_dims(2)
        own = self.node_index.broadcast_to(x.shape)
        best, row = x, own
        chunks = self._chunks(x, mask)
        for c in range(len(chunks)):
            edge, keys = chunks[c]
            value, pos = ops.max(ops.where(edge, keys, centre), axis=2)
            pos = pos.astype(ms.int32)
            is_edge = ops.gather_elements(edge.squeeze(-1).astype(ms.int32), 2, pos) > 0
            better = value > best  # the centre, then the earliest maximum wins (a tie is the same value)
            best = ops.where(better, value, best)
            row = ops.where(better, ops.where(is_edge, pos + self.starts[c], own), row)
        # each gradient added to its row (tensor_scatter_elements' "add" has no Ascend kernel)
        batch, nodes, channels = dout.shape
        sample = Tensor(np.arange(batch, dtype=np.int32).reshape(batch, 1, 1))
        elements = (sample * nodes + row) * channels + self.channel_index
        return scatter_add(dout, elements.reshape(-1), dout.reshape(-1)), ops.zeros_like(mask)


def threshold_graph_conv(in_channels: int, out_channels: int, num_nodes: int, form: Formulation = NATIVE) -> nn.Cell:
    """The max-relative conv over the threshold graph of ``num_nodes`` nodes (SViG's only graph conv; parameter
    names as ``mr``'s)."""
    return MRConv2d(in_channels, out_channels, form, aggregate=MaskedNeighbourMax(num_nodes, in_channels, form=form))
