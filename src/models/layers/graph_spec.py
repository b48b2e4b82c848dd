"""Which graph a Grapher builds: a spec per block, chosen by the family's builder and fixed at construction.

A spec holds a block's graph options and knows how to build them: the cell that computes the graph from the
node features, and the graph conv that aggregates over that graph (the two go together: a kNN graph is a
neighbour list, a threshold graph an adjacency). The Grapher and its DyGraphConv2d build whatever spec they
are given, as the layers build whatever ``Formulation`` they are given.

- ``KnnGraphSpec``: ViG's dilated kNN graph (ViG, Pyramid ViG, GraphConvNet).
- ``ThresholdGraphSpec``: SViG's similarity-thresholded graph.
"""
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from mindspore import nn

from .form import Formulation
from .gcn import create_graph_conv
from .graph import DilatedKnnGraph, cap_knn, normal_quantile
from .resize import BicubicResize
from .threshold_graph import SimilarityThresholdGraph, threshold_graph_conv, threshold_probabilities


@dataclass(frozen=True)
class KnnGraphSpec:
    """ViG's dilated kNN graph: each node's neighbours are every ``dilation``-th of its ``k * dilation`` nearest
    keys (see ``DilatedKnnGraph``).

    Args:
        k: neighbours per node (capped to the key count when the grid is small, see ``fit``).
        dilation: keep every d-th of the k * d nearest keys; larger d widens the receptive field at equal k.
        conv: the graph conv aggregating over the neighbours, one of ``GRAPH_CONVS`` ('mr', 'edge', 'sage',
            'gin'); the official models use 'mr'.
        stochastic: in training, with probability ``epsilon`` per forward, take k random candidates instead
            of the dilated ones (the official ``use_stochastic``).
        epsilon: that probability (official default 0.2; unused unless ``stochastic``).
    """
    k: int
    dilation: int = 1
    conv: str = "mr"
    stochastic: bool = False
    epsilon: float = 0.2

    def fit(self, num_keys: int, relative_pos: bool) -> "KnnGraphSpec":
        """This spec for a block of ``num_keys`` key nodes: k and dilation capped to fit (``cap_knn``). Any
        ``relative_pos`` term is added to the distances."""
        k, dilation = cap_knn(self.k, self.dilation, num_keys)
        return replace(self, k=k, dilation=dilation)

    def build(self, in_channels: int, out_channels: int, num_nodes: int, reduce_ratio: int, form: Formulation,
              position_resize: Optional[BicubicResize]) -> Tuple[nn.Cell, nn.Cell]:
        """(graph conv, graph cell) of a DyGraphConv2d; ``num_nodes`` and ``reduce_ratio`` need no cell here."""
        return (create_graph_conv(self.conv, in_channels, out_channels, form),
                DilatedKnnGraph(self.k, self.dilation, self.stochastic, self.epsilon, form, position_resize))

    def margin(self, dist: np.ndarray) -> np.ndarray:
        """Per node, the smallest gap between adjacent ranked distances ``dist`` (B, N, M) that decides its
        neighbour list (inf when no gap does): how far the graph is from changing."""
        k, d = self.k, self.dilation
        ranked = np.sort(dist, axis=-1)[..., :min((k - 1) * d + 2, dist.shape[-1])]
        t = np.arange(ranked.shape[-1] - 1)
        decides = ((t % d == 0) & (t <= (k - 1) * d)) | (((t + 1) % d == 0) & (t + 1 <= (k - 1) * d))
        if not decides.any():
            return np.full(ranked.shape[:2], np.inf)
        return np.diff(ranked, axis=-1)[..., decides].min(-1)


@dataclass(frozen=True)
class ThresholdGraphSpec:
    """SViG's similarity-thresholded graph: an edge wherever a pair's per-image z-scored similarity exceeds
    Phi^-1(``probability``) (see ``SimilarityThresholdGraph``); aggregated by the max-relative conv.

    Args:
        probability: the block's p; a higher p keeps fewer, more similar pairs (SViG lowers p block by block,
            ``threshold_specs``).
    """
    probability: float

    def fit(self, num_keys: int, relative_pos: bool) -> "ThresholdGraphSpec":
        """This spec for a block: the same (every node is compared with every node); refuses a position term."""
        if relative_pos:
            raise ValueError("the similarity-threshold graph takes no relative-position term")
        return self

    def build(self, in_channels: int, out_channels: int, num_nodes: int, reduce_ratio: int, form: Formulation,
              position_resize: Optional[BicubicResize]) -> Tuple[nn.Cell, nn.Cell]:
        """(graph conv, graph cell) of a DyGraphConv2d over ``num_nodes`` nodes; the keys must not be pooled."""
        if reduce_ratio != 1:
            raise ValueError("the similarity-threshold graph compares every node with every other: "
                             f"use reduce_ratio 1, not {reduce_ratio}")
        return (threshold_graph_conv(in_channels, out_channels, num_nodes, form),
                SimilarityThresholdGraph(self.probability))

    def margin(self, dist: np.ndarray) -> np.ndarray:
        """Per node, the smallest distance of its z-scored similarities (from distances ``dist`` (B, N, N)) to
        the threshold: how far the graph is from changing."""
        flat = dist.reshape(dist.shape[0], -1)
        z = (flat.mean(1)[:, None, None] - dist) / flat.std(1, ddof=1)[:, None, None]  # similarity = -distance
        return np.abs(z - normal_quantile(self.probability)).min(-1)


GraphSpec = Union[KnnGraphSpec, ThresholdGraphSpec]


def knn_specs(ks: Sequence[int], dilations: Sequence[int], conv: str = "mr", stochastic: bool = False,
              epsilon: float = 0.2) -> List[KnnGraphSpec]:
    """One ``KnnGraphSpec`` per block from per-block ``ks`` and ``dilations`` and the options all blocks share."""
    if len(ks) != len(dilations):
        raise ValueError(f"k has {len(ks)} entries but dilation has {len(dilations)}")
    return [KnnGraphSpec(k, d, conv, stochastic, epsilon) for k, d in zip(ks, dilations)]


def threshold_specs(start: float, dec: float, depth: int) -> List[ThresholdGraphSpec]:
    """SViG's per-block graphs: p_i = start - dec * i (``threshold_probabilities``)."""
    return [ThresholdGraphSpec(p) for p in threshold_probabilities(start, dec, depth)]
