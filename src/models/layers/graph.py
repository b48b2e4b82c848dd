"""Graph construction: the dense dilated kNN graph of ViG.

Nodes are handled token-major, (B, N, C): that is the layout of the distance matrix product and
of the neighbour gathers. Neighbour lists are int32 (B, N, k) indices into the key set; the
centre of row i is node i itself, so no centre index is stored.
"""
import math
import statistics
from typing import Optional, Tuple

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from .form import NATIVE, Formulation
from .resize import BicubicResize


def l2_normalize(x, axis: int = -1):
    """x / max(||x||_2, 1e-12), as torch.nn.functional.normalize (basic ops, so it exports)."""
    norm = ops.sqrt((x * x).sum(axis, keepdims=True))
    return x / ops.maximum(norm, ops.full_like(norm, 1e-12))


def cap_knn(k: int, dilation: int, num_keys: int) -> Tuple[int, int]:
    """Fit k neighbours at dilation d into ``num_keys`` candidates.

    k.d candidates are ranked and every d-th kept. When an input is small enough that fewer
    than k.d keys exist, k is capped at the key count and d at the largest value that still
    fits (d = min(d, M // k), at least 1). At 224x224 no official model is affected.
    """
    if num_keys < 1:
        raise ValueError("a graph needs at least one key node")
    k = min(k, num_keys)
    return k, max(1, min(dilation, num_keys // k))


def squared_norm(v):
    """|v|^2 over the last axis, kept: (..., 1)."""
    return (v * v).sum(-1, keepdims=True)


def negative_sq_distance(x, y, relative_pos=None):
    """-(|x|^2 - 2 x.y + |y|^2 + relative_pos), summed in the official order: negating every term is
    exact in floating point, so this equals the negated official distance bit for bit."""
    out = 2 * ops.matmul(x, y.swapaxes(1, 2)) - squared_norm(x)
    out = out - squared_norm(y).swapaxes(1, 2)
    if relative_pos is not None:
        out = out - relative_pos
    return out


# Distances per image above which the queries are split into chunks of at most this many (16 MB):
# at 224 no pyramid stage reaches it (stage 1: 3,136 x 196); at 800x1344 stage 1 has 67,200 x 4,200.
CHUNK_ELEMENTS = 1 << 22


def query_chunks(num_queries: int, num_keys: int):
    """(start, stop) of the query chunks: one for all unless num_queries x num_keys exceeds
    ``CHUNK_ELEMENTS``."""
    if num_queries * num_keys <= CHUNK_ELEMENTS:
        return ((0, num_queries),)
    rows = max(1, CHUNK_ELEMENTS // num_keys)
    return tuple((start, min(start + rows, num_queries)) for start in range(0, num_queries, rows))


def normal_quantile(probability: float) -> float:
    """Phi^-1(p) of the standard normal distribution; -inf for p <= 0, +inf for p >= 1."""
    if probability <= 0:
        return -math.inf
    if probability >= 1:
        return math.inf
    return statistics.NormalDist().inv_cdf(probability)


class DilatedKnnGraph(nn.Cell):
    """Neighbours of each query among the keys: the k.d nearest by L2-normalised distance
    (sorted, nearest first), of which positions 0, d, 2d, ... are kept.

    Stochastic mode (training only): with probability ``epsilon`` per forward, k random positions
    among the k.d candidates replace the dilated ones. No gradient flows through the graph, and
    distances are computed in float32 whatever the network's precision.

    Memory stays linear in the number of nodes. With MindSpore's kernels the queries are handled in
    chunks above ``CHUNK_ELEMENTS`` distances per image (``query_chunks``), each with its rows of the
    relative-position term (resized by ``position_resize`` chunk by chunk when the term comes as its
    224 table): the neighbours of one pass. The CPU formulation's compiled kNN writes no distance
    matrix at all: it computes the distances, and the resized term, a tile of queries at a time with
    the same arithmetic, and ranks them directly (among exactly equal distances it takes the earlier
    index first, where MindSpore's CPU TopK takes any of them, an equally near neighbour).

    Args:
        k: neighbours per query; at most the key count (``cap_knn`` fits it).
        dilation: keep every d-th of the k * d nearest keys.
        stochastic: in training, with probability ``epsilon``, take k random candidates instead.
        epsilon: that probability per forward.
        form: the layers' formulation: its ``topk`` is the compiled kNN, if any.
        position_resize: the resize of a relative-position table to the (N, M) term, when the graph is
            given the table rather than the term (inputs other than 224).
    """

    def __init__(self, k: int, dilation: int = 1, stochastic: bool = False, epsilon: float = 0.0,
                 form: Formulation = NATIVE, position_resize: Optional[BicubicResize] = None):
        super().__init__()
        self.k = k
        self.dilation = dilation
        self.stochastic = stochastic
        self.epsilon = epsilon
        self.epsilon_z = Tensor(normal_quantile(epsilon), ms.float32)  # P(N(0, 1) < epsilon_z) = epsilon
        self.num_candidates = k * dilation
        self.dilated_positions = Tensor(np.arange(0, self.num_candidates, dilation), ms.int32)
        self.knn = form.topk
        self.position_resize = position_resize

    def construct(self, x, y, relative_pos=None):
        """x: queries (B, N, C); y: keys (B, M, C); relative_pos: None, the (1, N, M) term, or the table
        that ``position_resize`` resizes to it."""
        if relative_pos is not None:
            relative_pos = ops.stop_gradient(relative_pos.astype(ms.float32))
        positions = self._positions() if self.stochastic and self.training else self.dilated_positions
        if self.knn is not None:
            return self._compiled_knn(ops.stop_gradient(x.astype(ms.float32)), ops.stop_gradient(y.astype(ms.float32)),
                                      relative_pos, positions)
        x = ops.stop_gradient(l2_normalize(x.astype(ms.float32)))
        y = ops.stop_gradient(l2_normalize(y.astype(ms.float32)))
        num_queries = x.shape[1]
        chunks = query_chunks(num_queries, y.shape[1])
        if len(chunks) == 1:
            return self._dense_knn(x, y, self._term_rows(relative_pos, 0, num_queries, num_queries, y.shape[1]),
                                   positions)
        found = ()
        for start, stop in chunks:
            term = self._term_rows(relative_pos, start, stop, num_queries, y.shape[1])
            found += (self._dense_knn(x[:, start:stop], y, term, positions),)
        return ops.concat(found, 1)

    def _compiled_knn(self, x, y, relative_pos, positions):
        """All queries at once, from the raw rows (the kernels normalise them, as l2_normalize and squared_norm
        do); the kernel resizes a table itself, a tile of rows at a time."""
        normalized = self.knn[3]
        x, x_sq = normalized(x)
        y, y_sq = normalized(y)
        if relative_pos is None:
            return self.knn[0](x, y, x_sq, y_sq, positions)
        if relative_pos.shape[-2:] == (x.shape[1], y.shape[1]):
            return self.knn[1](x, y, x_sq, y_sq, relative_pos, positions)
        taps = self.position_resize
        return self.knn[2](x, y, x_sq, y_sq, relative_pos, taps.idx_h, taps.w_h, taps.idx_w, taps.w_w, positions)

    def _term_rows(self, relative_pos, start: int, stop: int, num_queries: int, num_keys: int):
        """Rows start:stop of the relative-position term of num_queries x num_keys, or None."""
        if relative_pos is None:
            return None
        if relative_pos.shape[-2:] == (num_queries, num_keys):  # the term itself
            return relative_pos if stop - start == num_queries else relative_pos[:, start:stop]
        return self.position_resize.rows(relative_pos, start, stop)

    def _dense_knn(self, x, y, term, positions):
        """The distance matrix of queries x (B, n, C) with the term's rows (1, n, M), sorted top-k, every
        d-th kept: (B, n, k)."""
        _, idx = ops.topk(negative_sq_distance(x, y, term), self.num_candidates, sorted=True)
        if self.stochastic and self.training:
            return ops.gather(idx, positions, 2)
        if self.dilation > 1:
            idx = idx[:, :, ::self.dilation]
        return idx

    def _positions(self):
        """The dilated positions, or with probability epsilon k random ones (static shapes). The draws are standard
        normal (ops.randn, documented for Ascend; ops.rand's UniformReal is deprecated in MindSpore 2.10): sorting
        them gives a uniformly random order, and one falls below Phi^-1(epsilon) with probability epsilon."""
        noise = ops.randn((self.num_candidates + 1,), dtype=ms.float32)
        random_positions = ops.sort(noise[:self.num_candidates])[1][:self.k].astype(ms.int32)
        return ops.where(noise[self.num_candidates:].broadcast_to((self.k,)) < self.epsilon_z,
                         random_positions, self.dilated_positions)


def _flat_rows(table, idx):
    """Flatten (B, M, C) to (B*M, C) and shift idx (B, ...) by each sample's row offset (a constant of the static
    batch size: no Range operator, which MindSpore documents for GPU and CPU only, is left to run)."""
    batch, num_keys, channels = table.shape
    offsets = Tensor(np.arange(batch, dtype=np.int32).reshape((batch,) + (1,) * (idx.ndim - 1)) * num_keys)
    return table.reshape(-1, channels), idx + offsets


def _gather_elements_flat(like, elements):
    return ops.gather(like.reshape(-1), elements, 0)


# The gradient of a flat gather with respect to its table: each value added at its element (MindSpore derives it as
# UnsortedSegmentSum); the ops.unsorted_segment_sum interface is deprecated (MindSpore 2.10 docstring).
_scatter_add = ops.GradOperation(sens_param=True)(_gather_elements_flat)


def scatter_add(like, elements, values):
    """Zeros shaped like ``like`` (any values) with each of ``values`` added at its flat element index ``elements``
    (1-D, int32): a scatter-add through the documented ``ops.gather`` and its gradient."""
    return _scatter_add(like, elements, values).reshape(like.shape)


def gather_rows(table, idx):
    """Rows of a per-sample table (B, M, C) picked by idx (B, ...) -> (B, ..., C).

    A flat ``ops.gather`` with per-sample offsets: exportable, and far faster than advanced
    indexing on the CPU.
    """
    flat, flat_idx = _flat_rows(table, idx)
    return ops.gather(flat, flat_idx.reshape(-1), 0).reshape(idx.shape + (table.shape[-1],))


class MaxOverRows(nn.Cell):
    """max over t of flat[idx[..., t]] for global row indices idx (..., k) -> (..., C).

    The CPU formulation computes it with its compiled kernel (``form.gather_max``), which reads each
    neighbour row once, or without one (``per_slot``) gathers one neighbour slot at a time and keeps a
    running maximum, several times faster on the CPU than one large gather followed by a reduction;
    the result is identical, bit for bit.
    The backward sends each output gradient to the one row that attained the maximum (the first
    on ties, as torch.max does): the compiled kernel's, or a single segment sum, since the generic
    backward of a chain of element-wise maxima costs several selects and comparisons per slot, which
    made it the largest single cost of a CPU training step.

    Args:
        channels: C, the rows' width.
        form: the layers' formulation: ``cpu_ops`` chooses the per-slot running maximum, its
            ``gather_max`` the compiled kernel.
    """

    def __init__(self, channels: int, form: Formulation = NATIVE):
        super().__init__()
        self.per_slot = form.cpu_ops
        self.kernel = form.gather_max
        self.channel_index = Tensor(np.arange(channels), ms.int32)  # a constant: ops.arange fails in a bprop

    def construct(self, flat, idx):
        if self.kernel is not None:  # a maximum of float16 values is exact in float32 and back
            return self.kernel[0](flat.astype(ms.float32), idx).astype(flat.dtype)
        if not self.per_slot:
            return ops.amax(ops.gather(flat, idx, 0), -2)
        out = ops.gather(flat, idx[..., 0], 0)
        for t in range(1, idx.shape[-1]):
            out = ops.maximum(out, ops.gather(flat, idx[..., t], 0))
        return out

    def bprop(self, flat, idx, out, dout):
        if self.kernel is not None:
            grad = self.kernel[1](flat.astype(ms.float32), idx, dout.astype(ms.float32))
            return grad.astype(flat.dtype), ops.zeros_like(idx)
        winner = ops.argmax(ops.gather(flat, idx, 0), dim=-2).astype(ms.int32)  # (..., C): slot of the max
        rows = ops.gather_elements(idx, idx.ndim - 1, winner)                    # (..., C): its row
        elements = rows * flat.shape[1] + self.channel_index
        return scatter_add(flat, elements.reshape(-1), dout.reshape(-1)), ops.zeros_like(idx)


class NeighbourMax(nn.Cell):
    """max over t of table[b, idx[b, i, t]] for per-sample tables (B, M, C) -> (B, N, C): the max-relative
    conv's aggregate over kNN indices.

    Args:
        channels: C, the tables' width.
        form: the layers' formulation (see ``MaxOverRows``).
    """

    def __init__(self, channels: int, form: Formulation = NATIVE):
        super().__init__()
        self.rows = MaxOverRows(channels, form)

    def construct(self, table, idx):
        flat, flat_idx = _flat_rows(table, idx)
        return self.rows(flat, flat_idx)
