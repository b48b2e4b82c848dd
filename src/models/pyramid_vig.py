"""Pyramid Vision GNN (Pyramid ViG-Ti/S/M/B): a stride-4 stem, four stages of (Grapher, FFN)
blocks at strides 4/8/16/32 separated by conv downsampling, keys average-pooled by r = 4/2/1/1,
and a frozen relative-position term in every kNN distance.

Module tree and names follow the official ``pyramid_vig.py``: ``backbone`` is one flat sequence
where the Downsample cells sit between stages (``backbone.2``, ``backbone.5``, ...).
"""
from functools import partial
from typing import Callable, Optional, Sequence, Tuple, Union

from mindspore import nn

from .base import REFERENCE_SIZE, GraphClassifier, image_grid
from .layers import (Downsample, Formulation, Grapher, GraphSpec, Stem, classifier_head, drop_path_schedule,
                     formulation, knn_specs, vig_block)
from .registry import default_cfg, register_model

STEM_STRIDE = 4
TOTAL_STRIDE = 32
REDUCE_RATIOS = (4, 2, 1, 1)

# Dilation per block over the global block index (never reset per stage): min(idx // 4 + 1, 49 // 9).
_D_12 = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
_D_22 = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5]
_D_24 = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5]

ARCHS = {
    "pvig_ti_224_gelu": dict(channels=(48, 96, 240, 384), depths=(2, 2, 6, 2), dilation=_D_12),
    "pvig_s_224_gelu": dict(channels=(80, 160, 400, 640), depths=(2, 2, 6, 2), dilation=_D_12),
    "pvig_m_224_gelu": dict(channels=(96, 192, 384, 768), depths=(2, 2, 16, 2), dilation=_D_22),
    "pvig_b_224_gelu": dict(channels=(128, 256, 512, 1024), depths=(2, 2, 18, 2), dilation=_D_24,
                            crop_pct=0.95),
}

# The official release files (GitHub release "pyramid-vig"), as the timm pull request's default_cfgs list them.
_RELEASE = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/pyramid-vig/"
RELEASES = {
    "pvig_ti_224_gelu": dict(url=_RELEASE + "pvig_ti_78.5.pth.tar"),
    "pvig_s_224_gelu": dict(url=_RELEASE + "pvig_s_82.1.pth.tar"),
    "pvig_m_224_gelu": dict(url=_RELEASE + "pvig_m_83.1.pth.tar"),
    "pvig_b_224_gelu": dict(url=_RELEASE + "pvig_b_83.66.pth.tar"),
}


def knn_schedule(depths: Sequence[int], k: int = 9, last_stage_nodes: int = 49) -> Tuple[list, list]:
    """The official rule: constant k; d = min(idx // 4 + 1, N_last // k) over the global index."""
    total = sum(depths)
    return [k] * total, [min(i // 4 + 1, last_stage_nodes // k) for i in range(total)]


class PyramidVisionGNN(GraphClassifier):
    """Pyramid ViG: a stride-4 stem, then stages of blocks at strides 4/8/16/32 with a Downsample between
    stages; every Grapher adds the frozen relative-position term to its kNN distances.

    The family's builder chooses the graphs and the block; the model builds them as given.

    Args:
        channels: width of each stage (the last one is ``num_features``).
        depths: blocks per stage.
        graphs: one graph spec per block over all stages, in order (length sum(depths)); the pyramid's kNN
            graphs (``knn_specs``), as the threshold graph takes no relative-position term.
        num_classes: classifier outputs.
        img_size: input height and width (an int or (h, w)), multiples of 32. Position tables keep their 224
            shapes and are resized in the forward pass.
        in_channels: input image channels.
        drop_path_rate: stochastic depth of the last block; the rates grow linearly from 0 over all blocks.
        drop_rate: dropout before the classifier's last conv.
        reduce_ratios: per stage, the r x r pooling of the keys each graph compares the nodes with (official
            4, 2, 1, 1: fewer keys where the grid is large).
        kernel_impl: the layers' formulation: 'native', 'cpu' or a ``Formulation`` (see ``form``).
        block: ``block(grapher, channels, drop_path, form)`` builds each backbone entry around its Grapher
            (ViG's (Grapher, FFN) by default; Pyramid GraphConvNet passes its own).
    """

    def __init__(self, channels: Sequence[int], depths: Sequence[int], graphs: Sequence[GraphSpec],
                 num_classes: int = 1000, img_size: Union[int, Sequence[int]] = 224, in_channels: int = 3,
                 drop_path_rate: float = 0.0, drop_rate: float = 0.0, reduce_ratios: Sequence[int] = REDUCE_RATIOS,
                 kernel_impl: Union[str, Formulation] = "native", block: Callable[..., nn.Cell] = vig_block):
        super().__init__()
        total = sum(depths)
        if not len(channels) == len(depths) == len(reduce_ratios):
            raise ValueError("channels, depths and reduce_ratios need one entry per stage")
        if len(graphs) != total:
            raise ValueError(f"graphs needs {total} entries (one per block), got {len(graphs)}")
        height, width = image_grid(img_size, TOTAL_STRIDE, "total stride")
        grid = (height // STEM_STRIDE, width // STEM_STRIDE)
        table_side = REFERENCE_SIZE // STEM_STRIDE
        form = formulation(kernel_impl)
        self.num_features = channels[-1]
        self.stem = Stem([channels[0] // 2, channels[0]], in_channels, form)
        self._init_pos_embed(channels[0], (table_side, table_side), grid)
        rates = drop_path_schedule(drop_path_rate, total)
        entries = []
        idx = 0
        for stage, depth in enumerate(depths):
            if stage > 0:
                entries.append(Downsample(channels[stage - 1], channels[stage], form))
                grid = (grid[0] // 2, grid[1] // 2)
                table_side //= 2
            for _ in range(depth):
                entries.append(block(
                    Grapher(channels[stage], graphs[idx], grid, reduce_ratio=reduce_ratios[stage], relative_pos=True,
                            table_grid=table_side, drop_path=rates[idx], form=form),
                    channels[stage], rates[idx], form))
                idx += 1
        self.backbone = nn.SequentialCell(entries)
        self.prediction = classifier_head(self.num_features, num_classes, drop_rate, form=form)


def build_arch(arch: str, k: Optional[int] = None, conv: str = "mr", stochastic: bool = False, epsilon: float = 0.2,
               **kwargs) -> PyramidVisionGNN:
    """The arch with kNN graphs: its official per-block k and dilation, or those the official rule gives for
    base ``k``; ``conv``, ``stochastic``, ``epsilon`` as in ``KnnGraphSpec``; other arguments go to
    ``PyramidVisionGNN``."""
    spec = ARCHS[arch]
    ks, dilation = ([9] * sum(spec["depths"]), spec["dilation"]) if k is None else knn_schedule(spec["depths"], k)
    return PyramidVisionGNN(spec["channels"], spec["depths"], knn_specs(ks, dilation, conv, stochastic, epsilon),
                            **kwargs)


for _name, _spec in ARCHS.items():
    register_model(_name, partial(build_arch, _name),
                   default_cfg(crop_pct=_spec.get("crop_pct", 0.9), **RELEASES[_name]))
