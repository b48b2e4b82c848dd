"""Isotropic Vision GNN (ViG-Ti/S/B): a conv stem to a 1/16 node grid, then a constant-width stack
of (Grapher, FFN) blocks with a growing, increasingly dilated kNN graph.

Module tree and parameter names follow the official ``vig.py`` (``stem.convs.N``, ``pos_embed``,
``backbone.I.0`` Grapher, ``backbone.I.1`` FFN, ``prediction.N``) so checkpoints map one-to-one.
"""
from functools import partial
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
from mindspore import nn

from .base import REFERENCE_SIZE, GraphClassifier, image_grid
from .layers import Formulation, Grapher, Stem, classifier_head, drop_path_schedule, formulation, vig_block
from .registry import default_cfg, register_model

STEM_STRIDE = 16

# Per-block k and dilation of the official models, exactly as their float32 linspace rule yields them.
_K_12 = [9, 9, 10, 11, 12, 13, 13, 14, 15, 16, 17, 18]
_D_12 = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
_K_16 = [9, 9, 10, 10, 11, 12, 12, 13, 13, 14, 15, 15, 16, 16, 17, 18]
_D_16 = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4]

ARCHS = {
    "vig_ti_224_gelu": dict(channels=192, k=_K_12, dilation=_D_12, alias="vig_ti_patch16_224"),
    "vig_s_224_gelu": dict(channels=320, k=_K_16, dilation=_D_16, alias="vig_s_patch16_224"),
    "vig_b_224_gelu": dict(channels=640, k=_K_16, dilation=_D_16, alias="vig_b_patch16_224"),
}
# The official release files (GitHub release "vig"). SHA-256 prefixes as torch.hub loaders of these URLs check them.
_RELEASE = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/vig/"
RELEASES = {
    "vig_ti_224_gelu": dict(url=_RELEASE + "vig_ti_74.5.pth", sha256="61872146"),
    "vig_s_224_gelu": dict(url=_RELEASE + "vig_s_80.6.pth", sha256="081bb44c"),
    "vig_b_224_gelu": dict(url=_RELEASE + "vig_b_82.6.pth", sha256="40b0685d"),
}
# A small member of the family for quick runs on small images (the one-command demo): 6 blocks of 64
# channels, k from 4 to 8 by the official rule.
SMALL_ARCHS = {
    "vig_nano_gelu": dict(channels=64, k=[4, 4, 5, 6, 7, 8], dilation=[1, 1, 1, 1, 2, 2]),
}


def knn_schedule(depth: int, k: int = 9, num_nodes: int = 196) -> Tuple[list, list]:
    """The official rule: k_i = int(linspace(k, 2k, depth)[i]) in float32, d_i = min(i//4 + 1, N // max k)."""
    ks = [int(v) for v in np.linspace(k, 2 * k, depth, dtype=np.float32)]
    max_dilation = num_nodes // max(ks)
    return ks, [min(i // 4 + 1, max_dilation) for i in range(depth)]


class VisionGNN(GraphClassifier):
    """Isotropic ViG. ``k`` and ``dilation`` are per-block lists (their length is the depth);
    ``kernel_impl`` names the layers' formulation ('native', 'cpu') or is a ``Formulation``.

    Other families reuse it: ``threshold`` (per-block probabilities) gives every Grapher the
    similarity-threshold graph instead of the kNN (SViG; k and dilation entries are then None), and
    ``block(grapher, channels, drop_path, form)`` builds each backbone entry around its Grapher
    (default: ViG's (Grapher, FFN)).
    """

    def __init__(self, channels: int, k: Sequence[Optional[int]], dilation: Sequence[Optional[int]],
                 num_classes: int = 1000, img_size: Union[int, Sequence[int]] = 224, in_channels: int = 3,
                 drop_path_rate: float = 0.0, drop_rate: float = 0.0, conv: str = "mr", stochastic: bool = False,
                 epsilon: float = 0.2, kernel_impl: Union[str, Formulation] = "native",
                 threshold: Optional[Sequence[float]] = None, block: Callable[..., nn.Cell] = vig_block):
        super().__init__()
        if len(k) != len(dilation):
            raise ValueError(f"k has {len(k)} entries but dilation has {len(dilation)}")
        height, width = image_grid(img_size, STEM_STRIDE, "stem stride")
        grid = (height // STEM_STRIDE, width // STEM_STRIDE)
        table_grid = (REFERENCE_SIZE // STEM_STRIDE,) * 2
        form = formulation(kernel_impl)
        self.num_features = channels
        self.stem = Stem([channels // 8, channels // 4, channels // 2, channels], in_channels, form)
        self._init_pos_embed(channels, table_grid, grid)
        rates = drop_path_schedule(drop_path_rate, len(k))
        self.backbone = nn.SequentialCell([
            block(Grapher(channels, k[i], dilation[i], grid, conv=conv, drop_path=rates[i], stochastic=stochastic,
                          epsilon=epsilon, form=form, threshold=None if threshold is None else threshold[i]),
                  channels, rates[i], form)
            for i in range(len(k))])
        self.prediction = classifier_head(channels, num_classes, drop_rate, form=form)


def build_arch(arch: str, k: Optional[int] = None, **kwargs) -> VisionGNN:
    """The arch's official per-block k and dilation, or those the official rule gives for base ``k``."""
    spec = {**ARCHS, **SMALL_ARCHS}[arch]
    ks, dilation = (spec["k"], spec["dilation"]) if k is None else knn_schedule(len(spec["k"]), k)
    return VisionGNN(spec["channels"], ks, dilation, **kwargs)


for _name, _spec in ARCHS.items():
    register_model(_name, partial(build_arch, _name), default_cfg(**RELEASES[_name]), aliases=(_spec["alias"],))
for _name in SMALL_ARCHS:
    register_model(_name, partial(build_arch, _name), default_cfg(input_size=64))
