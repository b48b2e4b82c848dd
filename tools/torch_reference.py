"""Independent PyTorch re-implementation of the official Vision GNN models (test oracle).

The official code is github huawei-noah/Efficient-AI-Backbones, folder ``vig_pytorch/``. This
module re-derives the same architecture from the porting spec (``official_vig.md``) so that tests
can use it as the "official function" without ``timm``. With one state dict loaded into both, it
reproduces the official float32 computation op for op (same kNN distance formula and op order,
same topk, same channel interleave), so block outputs and logits agree bit for bit at 224.

Module tree and ``state_dict()`` keys, order and shapes equal the official ones::

    pos_embed, stem.convs.{0..13}, backbone.{i}.0.* (Grapher: [relative_pos], fc1.0/1,
    graph_conv.gconv.*, fc2.0/1), backbone.{i}.1.* (FFN: fc1.0/1, fc2.0/1),
    backbone.{j}.conv.0/1 (pyramid Downsample), prediction.0/1/4

Inputs other than 224 (the behaviour of the MindSpore port; the official code fails there):

* ``pos_embed`` keeps its 224 shape ((1, C, 14, 14) isotropic, (1, C0, 56, 56) pyramid) and is
  resized in ``forward`` to the stem output H x W with bicubic interpolation, align_corners=False.
* ``relative_pos`` keeps its 224 shape (1, N224, M224) and is resized in ``forward`` as the
  official ``Grapher._get_relative_pos`` does: bicubic on the (1, 1, N224, M224) table to
  (N, M) with N = H*W and M = (H//r)*(W//r) the number of average-pooled keys (equal to the
  official N // r**2 whenever r divides H and W).
* k and dilation are capped per forward when the key count M is smaller than k*d:
  ``d = max(1, min(d, M // k))`` and then ``k = min(k, M)`` (see ``capped_k_dilation``).

Dilation schedules (construction time) follow the official rules with N the node count at
``img_size``: isotropic ``k_i = int(float32 linspace(k, 2k, depth)[i])``,
``d_i = max(1, min(i // 4 + 1, N // max(k)))``; pyramid ``k_i = k``,
``d_idx = max(1, min(idx // 4 + 1, N_last // k))`` with a global block index. At 224 these equal
the official lists (``OFFICIAL_SCHEDULES``).

Other families built from the same pieces (``build_svig``, ``build_graphconvnet``):

* SViG (github IsmaelElsharkawi/SViG, ``gcn_lib/torch_edge.py`` and ``torch_vertex.py``):
  ViG-Ti whose Grapher (``ThresholdGrapher``) builds the similarity-thresholded graph and
  aggregates over it exactly as the official code does: an edge list from ``nonzero`` of the
  adjacency and a scatter max, empty segments 0. The official aggregate is cast to float16 (its
  training used AMP); here it keeps the input dtype.
* GraphConvNet (github yuan0038/GraphConvNet, ``models/GraphConvNet.py``): every block is
  ``GraphConvBlock`` (grapher, FFN, res_block = ResNet bottleneck without its final ReLU, bn); in
  the pyramid each block is wrapped in a one-element sequence (keys ``backbone.I.0.*``). For
  inputs other than 224 the official code resizes ``pos_embed`` by a scale factor; here, as for
  ViG, to the stem output's size (identical at 224).

``build_named(name, img_size)`` builds any of them by its model name (``NAMED_VARIANTS``).

Teacher forcing: ``model.forward_stem(images)``, ``model.forward_entry(i, x)``,
``model.forward_head(x)``, ``model.trace(images)``; kNN indices: ``Grapher.neighbours(x)`` or
``model.neighbours(i, x)`` (after dilation, shape (B, N, k)). Near-ties: float32 kNN has
several nodes per model whose candidate distances differ by < 1e-6, so two correct float32
implementations may pick different neighbours there; ``Grapher.neighbour_margin`` /
``model.neighbour_margins`` give each node's float64 margin so tests can mask such nodes.
"""
from __future__ import annotations

import copy
import math
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "OFFICIAL_CONFIGS", "OFFICIAL_SCHEDULES", "IsotropicViG", "PyramidViG", "Grapher", "FFN",
    "build_isotropic", "build_pyramid", "build_official", "isotropic_schedule", "pyramid_schedule",
    "capped_k_dilation", "relative_pos_table", "knn_indices", "calibrate_", "structured_images",
    "mindspore_param_dict", "count_params", "ThresholdGrapher", "GraphConvBlock", "Bottleneck",
    "GRAPHCONVNET_CONFIGS", "build_svig", "build_graphconvnet", "threshold_probabilities", "threshold_z",
    "SVIG_NAME", "NAMED_VARIANTS", "build_named",
]

# --------------------------------------------------------------------------------------------
# Official variants and their per-block schedules (official_vig.md §1, §1.1)
# --------------------------------------------------------------------------------------------

OFFICIAL_CONFIGS: dict[str, dict] = {
    "vig_ti_224_gelu": {"kind": "isotropic", "channels": 192, "depth": 12},
    "vig_s_224_gelu": {"kind": "isotropic", "channels": 320, "depth": 16},
    "vig_b_224_gelu": {"kind": "isotropic", "channels": 640, "depth": 16},
    "pvig_ti_224_gelu": {"kind": "pyramid", "channels": (48, 96, 240, 384), "depths": (2, 2, 6, 2)},
    "pvig_s_224_gelu": {"kind": "pyramid", "channels": (80, 160, 400, 640), "depths": (2, 2, 6, 2)},
    "pvig_m_224_gelu": {"kind": "pyramid", "channels": (96, 192, 384, 768), "depths": (2, 2, 16, 2)},
    "pvig_b_224_gelu": {"kind": "pyramid", "channels": (128, 256, 512, 1024),
                        "depths": (2, 2, 18, 2)},
}

_D12 = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
_K_S = [9, 9, 10, 10, 11, 12, 12, 13, 13, 14, 15, 15, 16, 16, 17, 18]
OFFICIAL_SCHEDULES: dict[str, tuple[list[int], list[int]]] = {
    "vig_ti_224_gelu": ([9, 9, 10, 11, 12, 13, 13, 14, 15, 16, 17, 18], _D12),
    "vig_s_224_gelu": (_K_S, _D12 + [4, 4, 4, 4]),
    "vig_b_224_gelu": (_K_S, _D12 + [4, 4, 4, 4]),
    "pvig_ti_224_gelu": ([9] * 12, _D12),
    "pvig_s_224_gelu": ([9] * 12, _D12),
    "pvig_m_224_gelu": ([9] * 22, _D12 + [4, 4, 4, 4] + [5] * 6),
    "pvig_b_224_gelu": ([9] * 24, _D12 + [4, 4, 4, 4] + [5] * 8),
}


def _conv_s2_out(n: int) -> int:
    """Output side of a 3x3, stride-2, padding-1 convolution."""
    return (n - 1) // 2 + 1


def _node_count(img_size: int | Sequence[int], convs: int) -> int:
    """Nodes left of an img_size (side, or (height, width)) input after ``convs`` stride-2 convolutions."""
    count = 1
    for side in ((img_size, img_size) if isinstance(img_size, int) else img_size):
        for _ in range(convs):
            side = _conv_s2_out(side)
        count *= side
    return count


def isotropic_schedule(k: int, depth: int, n_nodes: int) -> tuple[list[int], list[int]]:
    """Official isotropic rule: k from float32 linspace(k, 2k) truncated, d = min(i//4+1, N//max k)."""
    ks = [int(v) for v in torch.linspace(k, 2 * k, depth, dtype=torch.float32).tolist()]
    cap = n_nodes // max(ks)
    return ks, [max(1, min(i // 4 + 1, cap)) for i in range(depth)]


def pyramid_schedule(k: int, depths: Sequence[int], n_last: int) -> tuple[list[int], list[int]]:
    """Official pyramid rule: constant k, d = min(idx//4+1, N_last//k) with a global block index."""
    total = int(sum(depths))
    cap = n_last // k
    return [k] * total, [max(1, min(i // 4 + 1, cap)) for i in range(total)]


def capped_k_dilation(k: int, d: int, n_keys: int) -> tuple[int, int]:
    """Cap (k, d) for a key count M < k*d: d = max(1, min(d, M // k)), then k = min(k, M)."""
    d = max(1, min(d, n_keys // k))
    return min(k, n_keys), d


def _drop_path_rates(rate: float, n: int) -> list[float]:
    """Per-block stochastic-depth rates: float32 linspace(0, rate, n), as python floats."""
    return [float(v) for v in torch.linspace(0, rate, n, dtype=torch.float32).tolist()]


# --------------------------------------------------------------------------------------------
# relative_pos table (official_vig.md §3.6)
# --------------------------------------------------------------------------------------------

def _sincos_1d(dim: int, coords: np.ndarray) -> np.ndarray:
    """MAE-style 1-D sin-cos embedding, float64, shape (len(coords), dim): [sin | cos]."""
    n_freq = dim // 2
    freqs = np.arange(n_freq, dtype=np.float64)
    freqs /= n_freq / 1.0
    freqs = 1.0 / 10000 ** freqs
    angles = np.einsum("m,d->md", coords.reshape(-1), freqs)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def _sincos_2d(dim: int, side: int) -> np.ndarray:
    """2-D sin-cos embedding of a side x side grid (first half: x/width, second half: y/height)."""
    axis = np.arange(side, dtype=np.float32)
    xs, ys = np.meshgrid(axis, axis)  # xs varies along the width
    return np.concatenate([_sincos_1d(dim // 2, xs), _sincos_1d(dim // 2, ys)], axis=1)


def relative_pos_table(channels: int, n_nodes: int, r: int) -> Tensor:
    """Negated, bicubic-resized 2*P*P^T/C table of shape (1, n, n // r**2), float32."""
    side = int(n_nodes ** 0.5)
    emb = _sincos_2d(channels, side)
    gram = 2 * np.matmul(emb, emb.transpose()) / emb.shape[1]
    table = torch.from_numpy(np.float32(gram))[None, None]
    table = F.interpolate(table, size=(n_nodes, n_nodes // (r * r)), mode="bicubic",
                          align_corners=False)
    return -table.squeeze(1)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

class DropPath(nn.Module):
    """Per-sample stochastic depth with timm 0.3.2 semantics (identity in eval)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype,
                                  device=x.device)).floor_()
        return x.div(keep) * mask


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


def _conv_bn(c_in: int, c_out: int, kernel: int = 1, stride: int = 1) -> nn.Sequential:
    """Conv (bias) followed by BatchNorm, no activation: keys ``.0`` and ``.1``."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2),
                         nn.BatchNorm2d(c_out))


def _basic_conv(c_in: int, c_out: int) -> nn.Sequential:
    """gcn_lib BasicConv: 1x1 conv groups=4 (bias) + BN + exact GELU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, groups=4), nn.BatchNorm2d(c_out), nn.GELU())


def _gather_neighbours(feats: Tensor, idx: Tensor) -> Tensor:
    """feats (B, C, M, 1), idx (B, N, k) -> neighbour features (B, C, N, k)."""
    b, c = feats.shape[:2]
    _, n, k = idx.shape
    flat_idx = idx.reshape(b, 1, n * k).expand(b, c, n * k)
    return torch.gather(feats.squeeze(-1), 2, flat_idx).view(b, c, n, k)


class MaxRelativeConv(nn.Module):
    """'mr': max_k(x_j - x_i), interleaved [x0, m0, x1, m1, ...] channels, then BasicConv."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.nn = _basic_conv(2 * c_in, c_out)

    def forward(self, x: Tensor, keys: Tensor, idx: Tensor) -> Tensor:
        rel = torch.max(_gather_neighbours(keys, idx) - x, dim=-1, keepdim=True)[0]
        b, c, n, _ = x.shape
        return self.nn(torch.stack((x, rel), dim=2).reshape(b, 2 * c, n, 1))


class EdgeConv(nn.Module):
    """'edge': max over k of BasicConv([x_i ; x_j - x_i]) (channel concatenation)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.nn = _basic_conv(2 * c_in, c_out)

    def forward(self, x: Tensor, keys: Tensor, idx: Tensor) -> Tensor:
        centre = x.expand(-1, -1, -1, idx.shape[-1])
        edges = torch.cat([centre, _gather_neighbours(keys, idx) - centre], dim=1)
        return torch.max(self.nn(edges), dim=-1, keepdim=True)[0]


class SageConv(nn.Module):
    """'sage': BasicConv(C->C) on x_j, max over k, then BasicConv(2C->out) on [x ; max]."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.nn1 = _basic_conv(c_in, c_in)
        self.nn2 = _basic_conv(2 * c_in, c_out)

    def forward(self, x: Tensor, keys: Tensor, idx: Tensor) -> Tensor:
        pooled = torch.max(self.nn1(_gather_neighbours(keys, idx)), dim=-1, keepdim=True)[0]
        return self.nn2(torch.cat([x, pooled], dim=1))


class GinConv(nn.Module):
    """'gin': BasicConv(C->out) on (1 + eps) * x + sum_k x_j, eps a learnable scalar (init 0)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.nn = _basic_conv(c_in, c_out)
        self.eps = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, keys: Tensor, idx: Tensor) -> Tensor:
        total = torch.sum(_gather_neighbours(keys, idx), dim=-1, keepdim=True)
        return self.nn((1 + self.eps) * x + total)


_GRAPH_CONVS = {"mr": MaxRelativeConv, "edge": EdgeConv, "sage": SageConv, "gin": GinConv}


class GraphConv(nn.Module):
    """Container giving the official key prefix ``graph_conv.gconv``."""

    def __init__(self, c_in: int, c_out: int, conv: str) -> None:
        super().__init__()
        if conv not in _GRAPH_CONVS:
            raise ValueError(f"unknown graph conv {conv!r}; expected one of {sorted(_GRAPH_CONVS)}")
        self.gconv = _GRAPH_CONVS[conv](c_in, c_out)

    def forward(self, x: Tensor, keys: Tensor, idx: Tensor) -> Tensor:
        return self.gconv(x, keys, idx)


def knn_indices(x: Tensor, keys: Tensor | None, k: int, d: int,
                relative_pos: Tensor | None = None) -> Tensor:
    """Dilated kNN on L2-normalised nodes: x (B, C, N, 1), keys (B, C, M, 1) or None -> (B, N, k).

    distance = |x|^2 - 2 x.y + |y|^2 (+ relative_pos), sorted topk(k*d) of -distance, then
    every d-th candidate. Runs without gradient.
    """
    with torch.no_grad():
        q = F.normalize(x, p=2.0, dim=1).transpose(2, 1).squeeze(-1)  # (B, N, C) view
        kv = q if keys is None else F.normalize(keys, p=2.0, dim=1).transpose(2, 1).squeeze(-1)
        cross = -2 * torch.matmul(q, kv.transpose(2, 1))
        q_sq = torch.sum(torch.mul(q, q), dim=-1, keepdim=True)
        kv_sq = q_sq if keys is None else torch.sum(torch.mul(kv, kv), dim=-1, keepdim=True)
        dist = q_sq + cross + kv_sq.transpose(2, 1)
        if relative_pos is not None:
            dist += relative_pos
        idx = torch.topk(-dist, k=k * d)[1]
        return idx[:, :, ::d]


class Grapher(nn.Module):
    """fc1 (conv+BN) -> dynamic kNN graph conv (C -> 2C) -> fc2 (conv+BN) -> drop path + residual.

    ``n_nodes`` is the 224 node count of the stage (size of ``relative_pos``). Set
    ``record_neighbours = True`` to keep the last forward's indices in ``last_neighbours``.
    """

    def __init__(self, channels: int, k: int = 9, dilation: int = 1, conv: str = "mr", r: int = 1,
                 n_nodes: int = 196, drop_path: float = 0.0, relative_pos: bool = False) -> None:
        super().__init__()
        self.channels, self.k, self.dilation, self.r, self.n_nodes = channels, k, dilation, r, n_nodes
        if relative_pos:
            self.relative_pos = nn.Parameter(relative_pos_table(channels, n_nodes, r),
                                             requires_grad=False)
        else:
            self.relative_pos = None
        self.fc1 = _conv_bn(channels, channels)
        self.graph_conv = GraphConv(channels, 2 * channels, conv)
        self.fc2 = _conv_bn(2 * channels, channels)
        self.drop_path = _drop_path(drop_path)
        self.record_neighbours = False
        self.last_neighbours: Tensor | None = None

    def _relative_pos_for(self, n: int, m: int) -> Tensor | None:
        """The table at the current geometry, bicubic-resized (to (n, m)) if it differs from 224."""
        table = self.relative_pos
        if table is None or tuple(table.shape[1:]) == (n, m):
            return table
        return F.interpolate(table.unsqueeze(0), size=(n, m), mode="bicubic",
                             align_corners=False).squeeze(0)

    def _graph_inputs(self, h: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """From the fc1 output: nodes (B, C, N, 1), pooled keys or None, neighbour indices."""
        b, c = h.shape[:2]
        keys = None
        if self.r > 1:
            keys = F.avg_pool2d(h, self.r, self.r).reshape(b, c, -1, 1).contiguous()
        nodes = h.reshape(b, c, -1, 1).contiguous()
        n = nodes.shape[2]
        m = n if keys is None else keys.shape[2]
        k, d = capped_k_dilation(self.k, self.dilation, m)
        idx = knn_indices(nodes, keys, k, d, self._relative_pos_for(n, m))
        return nodes, keys, idx

    def neighbours(self, x: Tensor) -> Tensor:
        """kNN neighbour indices (after dilation) for a Grapher input x: LongTensor (B, N, k)."""
        with torch.no_grad():
            return self._graph_inputs(self.fc1(x))[2]

    def neighbour_margin(self, x: Tensor, set_only: bool = False) -> Tensor:
        """Per node, the smallest float64 gap between sorted candidate distances that matters.

        A pair of adjacent sorted candidates (t, t+1) matters when swapping them changes the
        neighbour list (exactly one of them is a kept position 0, d, ..., (k-1)d, or both are kept
        with d = 1); with ``set_only`` only swaps that change the neighbour *set* (hence the
        block output) count. A node whose margin is below the numerical error of a comparison may
        legitimately get other neighbours in another implementation. Returns float64 (B, N).
        """
        with torch.no_grad():
            h = self.fc1(x).double()
            b, c = h.shape[:2]
            nodes = F.normalize(h.reshape(b, c, -1), p=2.0, dim=1).transpose(1, 2)
            keys = nodes
            if self.r > 1:
                pooled = F.avg_pool2d(h, self.r, self.r).reshape(b, c, -1)
                keys = F.normalize(pooled, p=2.0, dim=1).transpose(1, 2)
            n, m = nodes.shape[1], keys.shape[1]
            dist = ((nodes * nodes).sum(-1, keepdim=True) - 2 * nodes @ keys.transpose(1, 2)
                    + (keys * keys).sum(-1).unsqueeze(1))
            table = self._relative_pos_for(n, m)
            if table is not None:
                dist = dist + table.double()
            k, d = capped_k_dilation(self.k, self.dilation, m)
            ranked = torch.sort(dist, dim=-1)[0][..., : min((k - 1) * d + 2, m)]
            t = torch.arange(ranked.shape[-1] - 1)
            last = (k - 1) * d
            first_kept = (t % d == 0) & (t <= last)
            second_kept = ((t + 1) % d == 0) & (t + 1 <= last)
            relevant = first_kept ^ second_kept if set_only else first_kept | second_kept
            if not bool(relevant.any()):
                return torch.full((b, n), math.inf, dtype=torch.float64)
            gaps = (ranked[..., 1:] - ranked[..., :-1])[..., relevant]
            return gaps.min(dim=-1)[0]

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        b, _, height, width = h.shape
        nodes, keys, idx = self._graph_inputs(h)
        if self.record_neighbours:
            self.last_neighbours = idx
        out = self.graph_conv(nodes, nodes if keys is None else keys, idx)
        out = self.fc2(out.reshape(b, -1, height, width).contiguous())
        return self.drop_path(out) + x


class FFN(nn.Module):
    """fc1 (1x1 conv C->hidden + BN) -> GELU -> fc2 (1x1 conv + BN) -> drop path + residual."""

    def __init__(self, channels: int, hidden: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.fc1 = _conv_bn(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = _conv_bn(hidden, channels)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop_path(self.fc2(self.act(self.fc1(x)))) + x


class Downsample(nn.Module):
    """Pyramid stage transition: 3x3 stride-2 conv (bias) + BN, no activation."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = _conv_bn(c_in, c_out, kernel=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Stem(nn.Module):
    """Stride-2 3x3 conv/BN/GELU triples with the given widths, then a stride-1 conv + BN."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out),
                       nn.GELU()]
        layers += [nn.Conv2d(widths[-1], widths[-1], 3, stride=1, padding=1),
                   nn.BatchNorm2d(widths[-1])]
        self.convs = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(x)


def _head(c_in: int, num_classes: int, drop_rate: float) -> nn.Sequential:
    """Official head: conv C->1024, BN, GELU, Dropout, conv 1024->classes (keys 0, 1, 4)."""
    return nn.Sequential(nn.Conv2d(c_in, 1024, 1), nn.BatchNorm2d(1024), nn.GELU(),
                         nn.Dropout(drop_rate), nn.Conv2d(1024, num_classes, 1))


# --------------------------------------------------------------------------------------------
# SViG: the similarity-thresholded graph (variants.md §1)
# --------------------------------------------------------------------------------------------

def threshold_probabilities(start: float, dec: float, depth: int) -> list[float]:
    """Per-block probabilities: ``start``, then ``dec`` subtracted once per block (official loop)."""
    out, current = [], start
    for _ in range(depth):
        out.append(current)
        current = current - dec
    return out


def threshold_z(probability: float) -> float:
    """The official ``norm.ppf(p)``, with p <= 0 forced to -inf (p >= 1 gives inf or nan: no edges)."""
    from scipy.stats import norm  # the official code's function

    if probability <= 0:
        return float("-inf")
    return float(norm.ppf(probability))


def threshold_adjacency(h: Tensor, probability: float) -> Tensor:
    """The official ``select_neighbors`` on the fc1 output h (B, C, H, W): (B, N, N) bool.

    L2-normalised nodes, d = |x|^2 - 2 x.x + |x|^2, s = -d z-scored per image over all N x N
    entries (unbiased std), edge where s' > Phi^-1(p) (compared in the tensor's dtype).
    """
    with torch.no_grad():
        b, c = h.shape[:2]
        x = F.normalize(h.reshape(b, c, -1, 1), p=2.0, dim=1).transpose(2, 1).squeeze(-1)
        inner = -2 * torch.matmul(x, x.transpose(2, 1))
        square = torch.sum(torch.mul(x, x), dim=-1, keepdim=True)
        similarity = -(square + inner + square.transpose(2, 1))
        mean = torch.mean(similarity, (1, 2), keepdim=True)
        std = torch.std(similarity, (1, 2), keepdim=True)
        return (similarity - mean) / std > threshold_z(probability)


class ThresholdMaxRelativeConv(nn.Module):
    """The official SViG ``MRConv2d``: scatter max of x_j - x_i over an edge list, then as 'mr'."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.nn = _basic_conv(2 * c_in, c_out)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        b, c, n, _ = x.shape
        flat = x.squeeze(-1).permute(1, 0, 2).reshape(c, -1).permute(1, 0)  # (B*N, C), row b*N + i
        rel = flat[edge_index[1]] - flat[edge_index[0]]
        index = edge_index[0].unsqueeze(-1).expand_as(rel)
        agg = torch.zeros_like(flat).scatter_reduce(0, index, rel, "amax", include_self=False)
        agg = agg.reshape(b, n, c).permute(0, 2, 1).unsqueeze(3)
        return self.nn(torch.cat([x.unsqueeze(2), agg.unsqueeze(2)], dim=2).reshape(b, 2 * c, n, 1))


class _ThresholdGraphConv(nn.Module):
    """Container giving the official key prefix ``graph_conv.gconv``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.gconv = ThresholdMaxRelativeConv(c_in, c_out)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.gconv(x, edge_index)


class ThresholdGrapher(nn.Module):
    """SViG's Grapher: fc1 -> threshold graph -> edge list + scatter max -> fc2, drop path, residual."""

    def __init__(self, channels: int, probability: float, drop_path: float = 0.0) -> None:
        super().__init__()
        self.probability = probability
        self.fc1 = _conv_bn(channels, channels)
        self.graph_conv = _ThresholdGraphConv(channels, 2 * channels)
        self.fc2 = _conv_bn(2 * channels, channels)
        self.drop_path = _drop_path(drop_path)

    def neighbours(self, x: Tensor) -> Tensor:
        """The adjacency (B, N, N) this block builds for input x (row i: the neighbours of node i)."""
        with torch.no_grad():
            return threshold_adjacency(self.fc1(x), self.probability)

    def neighbour_margin(self, x: Tensor, set_only: bool = False) -> Tensor:
        """Per node, the float64 distance of its row's z-scored similarities to the threshold (B, N).

        A node whose margin is below the numerical error of a comparison may legitimately get
        another neighbour set in another implementation. (``set_only`` is accepted for the kNN
        interface; here the set is all there is.)
        """
        with torch.no_grad():
            h = self.fc1(x).double()
            b, c = h.shape[:2]
            nodes = F.normalize(h.reshape(b, c, -1), p=2.0, dim=1).transpose(1, 2)
            similarity = 2 * nodes @ nodes.transpose(1, 2) - 2
            flat = similarity.reshape(b, -1)
            z = (similarity - flat.mean(1).view(b, 1, 1)) / flat.std(1).view(b, 1, 1)
            return (z - threshold_z(self.probability)).abs().min(dim=-1)[0]

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        b, c, height, width = h.shape
        n = height * width
        edges = torch.nonzero(threshold_adjacency(h, self.probability))  # (E, 3): b, i, j
        edge_index = torch.stack((edges[:, 0] * n + edges[:, 1], edges[:, 0] * n + edges[:, 2]))
        out = self.graph_conv(h.reshape(b, c, -1, 1).contiguous(), edge_index)
        out = self.fc2(out.reshape(b, -1, height, width).contiguous())
        return self.drop_path(out) + x


# --------------------------------------------------------------------------------------------
# GraphConvNet block (variants.md §2)
# --------------------------------------------------------------------------------------------

class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck (stride 1, no downsample) without the final ReLU."""

    def __init__(self, inplanes: int, planes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + x


class GraphConvBlock(nn.Module):
    """GraphConvNet's ``Block``: bn(res_block(FFN(grapher(x))) + x)."""

    def __init__(self, grapher: nn.Module, channels: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.grapher = grapher
        self.FFN = FFN(channels, 4 * channels, drop_path)
        self.res_block = Bottleneck(channels, channels // 4)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.res_block(self.FFN(self.grapher(x))) + x)


def _pyramid_graphconv_block(grapher: nn.Module, channels: int, drop_path: float) -> nn.Sequential:
    return nn.Sequential(GraphConvBlock(grapher, channels, drop_path))


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

class _ViG(nn.Module):
    """Shared forward pieces of the isotropic and pyramid models."""

    stem: Stem
    pos_embed: nn.Parameter
    backbone: nn.Sequential
    prediction: nn.Sequential

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_stem(self, images: Tensor) -> Tensor:
        """Stem plus pos_embed (resized bicubically when the stem output is not 224-sized)."""
        x = self.stem(images)
        pos = self.pos_embed
        if tuple(pos.shape[-2:]) != tuple(x.shape[-2:]):
            pos = F.interpolate(pos, size=tuple(x.shape[-2:]), mode="bicubic", align_corners=False)
        return x + pos

    def forward_entry(self, i: int, x: Tensor) -> Tensor:
        """Run backbone entry i (a (Grapher, FFN) block or a Downsample) alone."""
        return self.backbone[i](x)

    def forward_head(self, x: Tensor) -> Tensor:
        """Global average pool and the prediction head: (B, C, H, W) -> (B, classes)."""
        return self.prediction(F.adaptive_avg_pool2d(x, 1)).squeeze(-1).squeeze(-1)

    def forward(self, images: Tensor) -> Tensor:
        x = self.forward_stem(images)
        for entry in self.backbone:
            x = entry(x)
        return self.forward_head(x)

    def trace(self, images: Tensor) -> dict[str, object]:
        """Free-running forward keeping everything: stem, per-entry outputs and inputs, neighbours.

        Returns {'stem': Tensor, 'entries': [out_0, ...], 'neighbours': {entry: (B, N, k)},
        'logits': Tensor}; entry i's input is 'stem' for i = 0, else entries[i - 1].
        """
        x = self.forward_stem(images)
        out: dict[str, object] = {"stem": x, "entries": [], "neighbours": {}}
        graphers = set(self.grapher_entries())
        for i, entry in enumerate(self.backbone):
            if i in graphers:
                out["neighbours"][i] = self.neighbours(i, x)
            x = entry(x)
            out["entries"].append(x)
        out["logits"] = self.forward_head(x)
        return out

    def grapher_entries(self) -> list[int]:
        """Backbone indices that hold a (Grapher, FFN) block (all but the Downsamples)."""
        return [i for i, e in enumerate(self.backbone) if not isinstance(e, Downsample)]

    def grapher(self, i: int) -> Grapher:
        """The Grapher of backbone entry i (a Grapher or ThresholdGrapher, wherever the block holds it)."""
        return next(m for m in self.backbone[i].modules() if isinstance(m, (Grapher, ThresholdGrapher)))

    def neighbours(self, i: int, x: Tensor) -> Tensor:
        """kNN indices (B, N, k) of entry i's Grapher for the entry input x."""
        return self.grapher(i).neighbours(x)

    def neighbour_margins(self, images: Tensor, set_only: bool = False) -> dict[int, Tensor]:
        """Free-running float64 pass: ``Grapher.neighbour_margin`` (B, N) per Grapher entry.

        Use it to pick test images without near-ties (e.g. all margins > 1e-5) or to mask out
        ambiguous nodes when comparing neighbour lists of two implementations.
        """
        model = copy.deepcopy(self).double().eval()
        out: dict[int, Tensor] = {}
        with torch.no_grad():
            x = model.forward_stem(images.double())
            for i, entry in enumerate(model.backbone):
                if not isinstance(entry, Downsample):
                    out[i] = model.grapher(i).neighbour_margin(x, set_only)
                x = entry(x)
        return out

    def schedule(self) -> tuple[list[int], list[int]]:
        """Construction-time (k, dilation) per block, in block order."""
        gs = [self.grapher(i) for i in self.grapher_entries()]
        return [g.k for g in gs], [g.dilation for g in gs]


def _vig_block(grapher: nn.Module, channels: int, drop_path: float) -> nn.Sequential:
    """ViG's backbone entry: (Grapher, FFN), keys ``.0`` and ``.1``."""
    return nn.Sequential(grapher, FFN(channels, 4 * channels, drop_path))


class IsotropicViG(_ViG):
    """Isotropic ViG (vig.py): stem to C x H/16 x W/16, depth x (Grapher, FFN), head.

    ``thresholds`` (per-block probabilities) replaces the kNN Graphers by ``ThresholdGrapher``s
    (SViG); ``block(grapher, channels, drop_path)`` builds each entry (GraphConvNet).
    """

    def __init__(self, channels: int, ks: Sequence[int], dilations: Sequence[int],
                 num_classes: int = 1000, conv: str = "mr", drop_path_rate: float = 0.0,
                 drop_rate: float = 0.0, block=_vig_block,
                 thresholds: Sequence[float] | None = None) -> None:
        super().__init__()
        depth = len(ks) if thresholds is None else len(thresholds)
        dpr = _drop_path_rates(drop_path_rate, depth)
        self.n_blocks = depth
        self.stem = Stem([3, channels // 8, channels // 4, channels // 2, channels])
        self.pos_embed = nn.Parameter(torch.zeros(1, channels, 14, 14))

        def grapher(i: int) -> nn.Module:
            if thresholds is not None:
                return ThresholdGrapher(channels, thresholds[i], dpr[i])
            return Grapher(channels, ks[i], dilations[i], conv, 1, 196, dpr[i])

        self.backbone = nn.Sequential(*[block(grapher(i), channels, dpr[i]) for i in range(depth)])
        self.prediction = _head(channels, num_classes, drop_rate)
        self._init_weights()


class PyramidViG(_ViG):
    """Pyramid ViG (pyramid_vig.py): stem to C0 x H/4 x W/4, stages split by Downsamples."""

    def __init__(self, channels: Sequence[int], depths: Sequence[int], ks: Sequence[int],
                 dilations: Sequence[int], reduce_ratios: Sequence[int] = (4, 2, 1, 1),
                 num_classes: int = 1000, conv: str = "mr", drop_path_rate: float = 0.0,
                 block=_vig_block) -> None:
        super().__init__()
        total = int(sum(depths))
        dpr = _drop_path_rates(drop_path_rate, total)
        self.n_blocks = total
        self.stem = Stem([3, channels[0] // 2, channels[0]])
        self.pos_embed = nn.Parameter(torch.zeros(1, channels[0], 56, 56))
        entries: list[nn.Module] = []
        n224, idx = 56 * 56, 0
        for s, (c, depth) in enumerate(zip(channels, depths)):
            if s > 0:
                entries.append(Downsample(channels[s - 1], c))
                n224 //= 4
            for _ in range(depth):
                entries.append(block(
                    Grapher(c, ks[idx], dilations[idx], conv, reduce_ratios[s], n224, dpr[idx],
                            relative_pos=True), c, dpr[idx]))
                idx += 1
        self.backbone = nn.Sequential(*entries)
        self.prediction = _head(channels[-1], num_classes, 0.0)
        self._init_weights()


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------

def build_isotropic(channels: int = 192, depth: int = 12, k: int = 9, num_classes: int = 1000,
                    conv: str = "mr", img_size: int | Sequence[int] = 224, drop_path_rate: float = 0.0,
                    drop_rate: float = 0.0, ks: Sequence[int] | None = None,
                    dilations: Sequence[int] | None = None, block=_vig_block) -> IsotropicViG:
    """Isotropic ViG; (k, d) per block from ``isotropic_schedule`` at ``img_size`` (a side or (height,
    width)) unless given."""
    rule_ks, rule_ds = isotropic_schedule(k, depth, _node_count(img_size, 4))
    return IsotropicViG(channels, list(ks or rule_ks), list(dilations or rule_ds), num_classes,
                        conv, drop_path_rate, drop_rate, block=block)


def build_pyramid(channels: Sequence[int] = (48, 96, 240, 384), depths: Sequence[int] = (2, 2, 6, 2),
                  k: int = 9, reduce_ratios: Sequence[int] = (4, 2, 1, 1), num_classes: int = 1000,
                  conv: str = "mr", img_size: int | Sequence[int] = 224, drop_path_rate: float = 0.0,
                  ks: Sequence[int] | None = None,
                  dilations: Sequence[int] | None = None, block=_vig_block) -> PyramidViG:
    """Pyramid ViG; (k, d) per block from ``pyramid_schedule`` at ``img_size`` (a side or (height,
    width)) unless given."""
    rule_ks, rule_ds = pyramid_schedule(k, depths, _node_count(img_size, 2 + len(depths) - 1))
    return PyramidViG(channels, depths, list(ks or rule_ks), list(dilations or rule_ds),
                      reduce_ratios, num_classes, conv, drop_path_rate, block=block)


def build_official(name: str, num_classes: int = 1000, drop_path_rate: float = 0.0,
                   drop_rate: float = 0.0) -> IsotropicViG | PyramidViG:
    """One of the seven official variants with its hard-coded k / dilation lists (§1.1)."""
    if name not in OFFICIAL_CONFIGS:
        raise KeyError(f"unknown variant {name!r}; expected one of {sorted(OFFICIAL_CONFIGS)}")
    cfg = OFFICIAL_CONFIGS[name]
    ks, ds = OFFICIAL_SCHEDULES[name]
    if cfg["kind"] == "isotropic":
        return IsotropicViG(cfg["channels"], ks, ds, num_classes, "mr", drop_path_rate, drop_rate)
    return PyramidViG(cfg["channels"], cfg["depths"], ks, ds, (4, 2, 1, 1), num_classes, "mr",
                      drop_path_rate)


GRAPHCONVNET_CONFIGS: dict[str, str] = {  # GraphConvNet variant -> the ViG variant it extends
    "graphconvnet_ti": "vig_ti_224_gelu",
    "graphconvnet_s": "vig_s_224_gelu",
    "pgraphconvnet_ti": "pvig_ti_224_gelu",
    "pgraphconvnet_s": "pvig_s_224_gelu",
}


def build_graphconvnet(name: str, num_classes: int = 1000, drop_path_rate: float = 0.0) -> IsotropicViG | PyramidViG:
    """One of the four official GraphConvNet variants (the official factories fix drop path at 0)."""
    base = GRAPHCONVNET_CONFIGS[name]
    cfg, (ks, ds) = OFFICIAL_CONFIGS[base], OFFICIAL_SCHEDULES[base]
    if cfg["kind"] == "isotropic":
        return IsotropicViG(cfg["channels"], ks, ds, num_classes, "mr", drop_path_rate, 0.0, block=GraphConvBlock)
    return PyramidViG(cfg["channels"], cfg["depths"], ks, ds, (4, 2, 1, 1), num_classes, "mr", drop_path_rate,
                      block=_pyramid_graphconv_block)


def build_svig(start_thresh: float = 0.89, dec: float = 0.03, num_classes: int = 1000, channels: int = 192,
               depth: int = 12, drop_path_rate: float = 0.0, drop_rate: float = 0.0) -> IsotropicViG:
    """SViG (official: ViG-Ti, 192 channels, 12 blocks); p_i = start_thresh - dec * i."""
    return IsotropicViG(channels, [], [], num_classes, "mr", drop_path_rate, drop_rate,
                        thresholds=threshold_probabilities(start_thresh, dec, depth))


SVIG_NAME = "svig_ti_224_gelu"
NAMED_VARIANTS = (*OFFICIAL_CONFIGS, *GRAPHCONVNET_CONFIGS, SVIG_NAME)  # what ``build_named`` builds


def build_named(name: str, img_size: int | Sequence[int] = 224, num_classes: int = 1000) -> IsotropicViG | PyramidViG:
    """A variant by its model name for ``img_size`` inputs: the ViG / Pyramid ViG variants
    (``OFFICIAL_CONFIGS``), the GraphConvNets (``GRAPHCONVNET_CONFIGS``) and SViG (``SVIG_NAME``:
    ViG-Ti with threshold graphs, start_thresh 0.89, dec 0.03). (k, d) per block follow the official
    rule at ``img_size``, which at 224 gives the official lists."""
    if name == SVIG_NAME:
        return build_svig(num_classes=num_classes)
    graphconvnet = name in GRAPHCONVNET_CONFIGS
    base = GRAPHCONVNET_CONFIGS.get(name, name)
    if base not in OFFICIAL_CONFIGS:
        raise KeyError(f"no reference model named {name!r}; expected one of {sorted(NAMED_VARIANTS)}")
    if img_size in (224, (224, 224), [224, 224]):
        return build_graphconvnet(name, num_classes) if graphconvnet else build_official(name, num_classes)
    cfg = OFFICIAL_CONFIGS[base]
    if cfg["kind"] == "isotropic":
        return build_isotropic(cfg["channels"], cfg["depth"], num_classes=num_classes, img_size=img_size,
                               block=GraphConvBlock if graphconvnet else _vig_block)
    return build_pyramid(cfg["channels"], cfg["depths"], num_classes=num_classes, img_size=img_size,
                         block=_pyramid_graphconv_block if graphconvnet else _vig_block)


# --------------------------------------------------------------------------------------------
# Test helpers
# --------------------------------------------------------------------------------------------

def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, all) parameter element counts; 'all' includes the frozen relative_pos."""
    params = list(model.parameters())
    return (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def mindspore_param_dict(model: nn.Module) -> dict[str, np.ndarray]:
    """State dict as numpy with MindSpore BN names (gamma/beta/moving_*), num_batches_tracked dropped."""
    rename = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
              "running_var": "moving_variance"}
    bn_prefixes = {name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    out: dict[str, np.ndarray] = {}
    for key, value in model.state_dict().items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in bn_prefixes:
            if leaf == "num_batches_tracked":
                continue
            key = f"{prefix}.{rename[leaf]}"
        out[key] = value.detach().cpu().numpy().copy()
    return out


def calibrate_(model: nn.Module, images: Tensor | Iterable[Tensor], steps: int = 4,
               seed: int = 0) -> nn.Module:
    """Give a model well-conditioned weights in place (official_vig.md §6.1); returns it in eval.

    BN gamma = 1 + 0.1 N(0,1), beta = 0.1 N(0,1), pos_embed = 0.02 N(0,1) (seeded), then BN
    running statistics from ``steps`` train-mode forwards (only the BNs train; cumulative average,
    momentum=None) over ``images`` split into ``steps`` chunks (or an iterable of batches).
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def normal(like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=gen, dtype=torch.float64).to(like.dtype)

    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(1 + 0.1 * normal(bn.weight))
            bn.bias.copy_(0.1 * normal(bn.bias))
        if getattr(model, "pos_embed", None) is not None:
            model.pos_embed.copy_(0.02 * normal(model.pos_embed))
    batches = list(images.chunk(steps)) if isinstance(images, Tensor) else list(images)
    if any(b.shape[0] < 2 for b in batches):
        raise ValueError("calibration batches need at least 2 images (the head BN sees 1x1 maps)")
    model.eval()
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    return model.eval()


def structured_images(n: int, size: int | tuple[int, int] = 224, seed: int = 0) -> Tensor:
    """Smooth test images in [-1, 1]: low-frequency cosines plus soft-edged blobs, (n, 3, H, W) f32."""
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.RandomState(seed)
    yy, xx = np.meshgrid(np.linspace(0.0, 1.0, h), np.linspace(0.0, 1.0, w), indexing="ij")
    out = np.empty((n, 3, h, w), dtype=np.float64)
    for i in range(n):
        layers = []
        for _ in range(6):  # shared spatial layers, mixed per channel below
            fx, fy = rng.uniform(0.3, 3.0, size=2) * rng.choice([-1, 1], size=2)
            layers.append(np.cos(2 * math.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * math.pi)))
        for _ in range(4):
            cx, cy = rng.uniform(0.1, 0.9, size=2)
            radius, soft = rng.uniform(0.08, 0.3), rng.uniform(0.02, 0.08)
            dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
            layers.append(2.0 / (1.0 + np.exp((dist - radius) / soft)) - 1.0)
        stack = np.stack(layers)  # (10, H, W)
        mix = rng.normal(0.0, 1.0, size=(3, len(layers))) + rng.normal(0.0, 1.0, size=(1, len(layers)))
        img = np.tensordot(mix, stack, axes=1)
        lo, hi = img.min(), img.max()
        out[i] = 2.0 * (img - lo) / max(hi - lo, 1e-12) - 1.0
    return torch.from_numpy(out.astype(np.float32))
