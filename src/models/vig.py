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
from .layers import (Formulation, Grapher, GraphSpec, Stem, classifier_head, drop_path_schedule, formulation, knn_specs,
                     vig_block)
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
    """Isotropic ViG: a stem to a 1/16 node grid, then one block per entry of ``graphs`` at constant width.

    The family's builder chooses the graphs (ViG and GraphConvNet: ``knn_specs``, SViG: ``threshold_specs``)
    and the block; the model builds them as given.

    Args:
        channels: C, the width of the stem output and of every block (``num_features``).
        graphs: one graph spec per block (``KnnGraphSpec`` or ``ThresholdGraphSpec``); their count is the depth.
        num_classes: classifier outputs.
        img_size: input height and width (an int or (h, w)), multiples of 16: the node grid is img_size / 16.
            The position embedding keeps its 224 shape and is resized to it in the forward pass.
        in_channels: input image channels.
        drop_path_rate: stochastic depth of the last block; the rates grow linearly from 0 over the blocks.
        drop_rate: dropout before the classifier's last conv.
        kernel_impl: the layers' formulation: 'native', 'cpu' or a ``Formulation`` (see ``form``).
        block: ``block(grapher, channels, drop_path, form)`` builds each backbone entry around its Grapher
            (ViG's (Grapher, FFN) by default; GraphConvNet passes its own).
    """

    def __init__(self, channels: int, graphs: Sequence[GraphSpec], num_classes: int = 1000,
                 img_size: Union[int, Sequence[int]] = 224, in_channels: int = 3, drop_path_rate: float = 0.0,
                 drop_rate: float = 0.0, kernel_impl: Union[str, Formulation] = "native",
                 block: Callable[..., nn.Cell] = vig_block):
        super().__init__()
        height, width = image_grid(img_size, STEM_STRIDE, "stem stride")
        grid = (height // STEM_STRIDE, width // STEM_STRIDE)
        table_grid = (REFERENCE_SIZE // STEM_STRIDE,) * 2
        form = formulation(kernel_impl)
        self.num_features = channels
        self.stem = Stem([channels // 8, channels // 4, channels // 2, channels], in_channels, form)
        self._init_pos_embed(channels, table_grid, grid)
        rates = drop_path_schedule(drop_path_rate, len(graphs))
        self.backbone = nn.SequentialCell([
            block(Grapher(channels, graph, grid, drop_path=rate, form=form), channels, rate, form)
            for graph, rate in zip(graphs, rates)])
        self.prediction = classifier_head(self.num_features, num_classes, drop_rate, form=form)


def build_arch(arch: str, k: Optional[int] = None, conv: str = "mr", stochastic: bool = False, epsilon: float = 0.2,
               **kwargs) -> VisionGNN:
    """The arch with kNN graphs: its official per-block k and dilation, or those the official rule gives for
    base ``k``; ``conv``, ``stochastic``, ``epsilon`` as in ``KnnGraphSpec``; other arguments go to
    ``VisionGNN``."""
    spec = {**ARCHS, **SMALL_ARCHS}[arch]
    ks, dilation = (spec["k"], spec["dilation"]) if k is None else knn_schedule(len(spec["k"]), k)
    return VisionGNN(spec["channels"], knn_specs(ks, dilation, conv, stochastic, epsilon), **kwargs)


for _name, _spec in ARCHS.items():
    register_model(_name, partial(build_arch, _name), default_cfg(**RELEASES[_name]), aliases=(_spec["alias"],))
for _name in SMALL_ARCHS:
    register_model(_name, partial(build_arch, _name), default_cfg(input_size=64))
