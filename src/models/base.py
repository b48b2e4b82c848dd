"""What the ViG families share: stem + position embedding in, pooled head out; sizes; head names;
backbone access.

Backbone use (timm's API on the model itself): ``feature_info`` describes the feature points (the
four stages of a pyramid model, every block of an isotropic one), ``forward_intermediates`` returns
their maps, ``set_features_only`` turns the model into a backbone whose forward returns them (the
head and the blocks after the last chosen point are dropped), and ``freeze_stages`` /
``set_norm_eval`` prepare it for fine-tuning with mmpretrain's meaning.
"""
import numbers
from typing import List, Optional, Sequence, Tuple, Union

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import initializer

from .errors import ModelError
from .layers import BicubicResize, Conv2d, Downsample, DropPath, Grapher

REFERENCE_SIZE = 224  # position tables have the 224 grid's shapes; other sizes resize them
HEAD = "prediction"
CLASSIFIER = "prediction.4"  # the last 1x1 conv of the head (classifier_head), the only class-count-sized layer
FIRST_CONV = "stem.convs.0"  # the conv that reads the image


def to_2tuple(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def image_grid(img_size, stride: int, what: str) -> Tuple[int, int]:
    """(height, width) of ``img_size`` (an int or a pair), refused unless both are positive multiples of
    ``stride`` (``what`` names that stride)."""
    pair = (img_size, img_size) if _is_int(img_size) else tuple(img_size) if isinstance(img_size, (tuple, list)) \
        else ()
    if len(pair) != 2 or not all(_is_int(side) and side > 0 and side % stride == 0 for side in pair):
        raise ModelError(f"img_size must be a positive multiple of the {what} {stride} (an int, or (height, width)), "
                         f"got {img_size!r}")
    return int(pair[0]), int(pair[1])


class GraphClassifier(nn.Cell):
    """Base of the ViG classifiers. Subclasses set ``num_features``, ``stem``, ``backbone`` and ``prediction``
    and call ``_init_pos_embed``; the forward pass is stem + pos_embed -> backbone -> mean pool -> head, or,
    after ``set_features_only``, stem + pos_embed -> backbone with the chosen feature maps out.

    ``num_features`` has timm's meaning: the channels of ``forward_features``' output, which the head reads
    (its hidden width, 1024, is the classifier's input)."""

    def __init__(self):
        super().__init__()
        self.features_only = False
        self.out_entries: Tuple[int, ...] = ()  # backbone entries whose outputs a features-only model returns
        self.dropped_prefixes: Tuple[str, ...] = ()  # parameter-name prefixes a features-only model dropped
        self.frozen_stages = 0
        self.norm_eval = False

    def _init_pos_embed(self, channels: int, table_grid: Tuple[int, int], grid: Tuple[int, int]) -> None:
        """Zero-initialised, trainable, shaped for the 224 grid; resized bicubically to ``grid``."""
        self.pos_embed = Parameter(initializer("zeros", (1, channels) + tuple(table_grid), ms.float32),
                                   name="pos_embed")
        self.resize_pos_embed = tuple(grid) != tuple(table_grid)
        if self.resize_pos_embed:
            self.pos_embed_resize = BicubicResize(table_grid, grid)

    def get_classifier(self) -> Conv2d:
        """The layer named ``CLASSIFIER`` (the default cfg's ``classifier``)."""
        return dict(self.cells_and_names())[CLASSIFIER]

    def reset_classifier(self, num_classes: int) -> None:
        """A freshly initialised classifier for ``num_classes`` classes, under the same parameter names."""
        if num_classes < 1:
            raise ModelError(f"num_classes must be at least 1, got {num_classes}")
        parent, index = CLASSIFIER.rsplit(".", 1)
        getattr(self, parent)[int(index)] = Conv2d(self.get_classifier().in_channels, num_classes, 1)

    def embed(self, x):
        """Stem output plus the position embedding: the input of the first block."""
        pos = self.pos_embed_resize(self.pos_embed) if self.resize_pos_embed else self.pos_embed
        x = self.stem(x)
        return x + pos.astype(x.dtype)

    def forward_features(self, x):
        return self.backbone(self.embed(x))

    def forward_head(self, x):
        # flatten: Squeeze has no Ascend (310) entry in the MindSpore Lite operator list (and a final Reshape loses the
        # output's name in MindSpore's ONNX export); start_dim by keyword, as its default becomes 0 after 2.9.0
        return ops.flatten(self.prediction(x.mean(axis=(2, 3), keep_dims=True)), start_dim=1)

    def construct(self, x):
        if self.features_only:
            return self._run_backbone(self.embed(x), self.out_entries, self.out_entries[-1])
        return self.forward_head(self.forward_features(x))

    # ----- backbone structure

    def stages(self) -> List[List[int]]:
        """Backbone entry indices per stage: a pyramid stage is its Downsample (if any) and its blocks;
        in an isotropic model every block is a stage of its own (mmpretrain's grouping)."""
        stages: List[List[int]] = []
        pyramid = self.is_pyramid
        for index, entry in enumerate(self.backbone):
            if not stages or not pyramid or isinstance(entry, Downsample):
                stages.append([])
            stages[-1].append(index)
        return stages

    def graphers(self) -> List[Tuple[int, Grapher]]:
        """(backbone entry index, Grapher) of every block, in order: the blocks whose graphs can be inspected."""
        found = []
        for index, entry in enumerate(self.backbone):
            found += [(index, cell) for _, cell in entry.cells_and_names() if isinstance(cell, Grapher)]
        return found

    @property
    def feature_info(self) -> List[dict]:
        """One entry per feature point (stage end): its backbone entry (``index``, ``module``), channels
        (``num_chs``), stride (``reduction``) and node grid (``grid``) at the model's input size."""
        graphers = dict(self.graphers())
        stride = self.stem.stride
        info = []
        for stage in self.stages():
            if isinstance(self.backbone[stage[0]], Downsample):
                stride *= 2
            grapher = graphers[stage[-1]]
            info.append({"index": stage[-1], "module": f"backbone.{stage[-1]}", "num_chs": grapher.channels,
                         "reduction": stride, "grid": grapher.grid})
        return info

    def feature_entries(self, indices: Union[None, int, Sequence[int]] = None) -> Tuple[int, ...]:
        """Backbone entries of the feature points ``indices`` (timm's meaning: None = all, an int n = the
        last n, a sequence = those points, negative values counting from the end)."""
        entries = [item["index"] for item in self.feature_info]
        count = len(entries)
        if not (indices is None or _is_int(indices) or (isinstance(indices, (tuple, list))
                                                        and all(_is_int(i) for i in indices))):
            raise ModelError(f"out_indices takes None (all feature points), an int n (the last n) or a sequence of "
                             f"ints (those points, 0..{count - 1}), got {indices!r}")
        if indices is None:
            chosen = list(range(count))
        elif _is_int(indices):
            if not 0 < indices <= count:
                raise ModelError(f"cannot take the last {indices} feature points: the model has {count}")
            chosen = list(range(count - indices, count))
        else:
            chosen = []
            for i in indices:
                if not -count <= int(i) < count:
                    raise ModelError(f"feature index {i} is out of range: this model has {count} feature points "
                                     f"(0..{count - 1}, or -{count}..-1 from the end); "
                                     f"{'stages' if self.is_pyramid else 'blocks'} are numbered from 0")
                chosen.append(int(i) % count)
            if not chosen or len(set(chosen)) != len(chosen):
                raise ModelError(f"feature indices {tuple(indices)} must be distinct and not empty")
        return tuple(entries[i] for i in sorted(chosen))

    @property
    def is_pyramid(self) -> bool:
        """Stages of several blocks at growing strides (Downsample entries between them)."""
        return any(isinstance(entry, Downsample) for entry in self.backbone)

    def _run_backbone(self, x, take: Tuple[int, ...], stop: int):
        """The outputs of backbone entries ``take`` (ascending), running the entries up to ``stop``."""
        outs = ()
        for index, entry in enumerate(self.backbone):
            if index <= stop:
                x = entry(x)
                if index in take:
                    outs = outs + (x,)
        return outs

    def forward_intermediates(self, x, indices: Union[None, int, Sequence[int]] = None, stop_early: bool = False,
                              intermediates_only: bool = False):
        """timm's ``forward_intermediates``: the feature maps of the chosen points (see ``feature_entries``),
        NCHW; with ``intermediates_only`` False also the final features (those of the last block run,
        which stops at the last chosen point when ``stop_early``)."""
        take = self.feature_entries(indices)
        stop = take[-1] if stop_early or intermediates_only else len(self.backbone) - 1
        if stop not in take:
            take = take + (stop,)
            outs = self._run_backbone(self.embed(x), take, stop)
            return outs[-1], list(outs[:-1])
        outs = list(self._run_backbone(self.embed(x), take, stop))
        return outs if intermediates_only else (outs[-1], outs)

    # ----- backbone use

    def set_features_only(self, out_indices: Union[None, int, Sequence[int]] = None) -> "GraphClassifier":
        """Make the forward return the maps of ``out_indices`` (a tuple, shallow to deep). The head and the
        blocks after the last chosen point are removed; ``dropped_prefixes`` names their parameters, which
        checkpoint loading then skips (so a full checkpoint loads into the backbone)."""
        if self.features_only:
            raise ModelError("the model is already a features-only backbone")
        take = self.feature_entries(out_indices)
        total = len(self.backbone)
        keep = take[-1] + 1
        self.backbone = nn.SequentialCell(list(self.backbone)[:keep])
        delattr(self, HEAD)
        self.dropped_prefixes = (HEAD + ".",) + tuple(f"backbone.{i}." for i in range(keep, total))
        self.out_entries = take
        self.features_only = True
        return self

    def freeze_stages(self, frozen_stages: int) -> "GraphClassifier":
        """mmpretrain's ``frozen_stages``: with n > 0 the stem, ``pos_embed`` and the first n stages (pyramid)
        or blocks (isotropic) stop learning. Their parameters leave ``trainable_params()`` (so no optimizer
        updates them), their BatchNorms keep their statistics and their drop path is off, in any mode."""
        stages = self.stages()
        if not (_is_int(frozen_stages) and 0 <= frozen_stages <= len(stages)):
            raise ModelError(f"frozen_stages must be an integer in 0..{len(stages)} for this model "
                             f"({len(stages)} {'stages' if self.is_pyramid else 'blocks'}), got {frozen_stages}")
        if frozen_stages == 0:
            return self
        self.pos_embed.requires_grad = False
        frozen = [self.stem] + [self.backbone[i] for stage in stages[:frozen_stages] for i in stage]
        for cell in frozen:
            for param in cell.get_parameters():
                param.requires_grad = False
            for _, sub in cell.cells_and_names():
                if isinstance(sub, nn.BatchNorm2d):
                    sub.use_batch_statistics = False
                elif isinstance(sub, DropPath):
                    sub.rate = 0.0
        self.frozen_stages = frozen_stages
        return self

    def set_norm_eval(self, norm_eval: bool = True) -> "GraphClassifier":
        """mmpretrain's ``norm_eval``: every BatchNorm of the stem and backbone normalises with its running
        statistics and never updates them, whatever the training mode (the head's BatchNorm trains)."""
        for cell in (self.stem, self.backbone):
            for _, sub in cell.cells_and_names():
                if isinstance(sub, nn.BatchNorm2d):
                    sub.use_batch_statistics = False if norm_eval else None
        self.norm_eval = norm_eval
        if not norm_eval and self.frozen_stages:
            self.freeze_stages(self.frozen_stages)  # frozen stages keep their statistics regardless
        return self


def first_and_last_blocks(net: GraphClassifier) -> GraphClassifier:
    """``net`` with only the first block and the last block of every stage (a pyramid's first stage keeps its first),
    and the downsampling between stages: every layer and branch of the family (both kinds of dilation, each stage's
    pooled keys and resized relative-position term) in a fraction of the graph, for quick checks of what compiles
    (the self-test's --quick, tools/ascend_graph.py --quick). Parameter names are kept."""
    stages = [[]]
    for entry in net.backbone:
        if isinstance(entry, Downsample):
            stages += [[entry], []]
        else:
            stages[-1].append(entry)
    kept = [stages[0][0]]
    for i, stage in enumerate(stages):
        if (i > 0 or len(stages) == 1) and stage[-1] is not kept[-1]:
            kept.append(stage[-1])  # a downsampling is a stage of its own
    net.backbone = nn.SequentialCell(kept)
    return net


def backbone_options(model: GraphClassifier, features_only: bool = False,
                     out_indices: Optional[Sequence[int]] = None, frozen_stages: int = 0,
                     norm_eval: bool = False) -> GraphClassifier:
    """Apply ``create_model``'s backbone arguments to a built model."""
    if out_indices is not None and not features_only:
        raise ModelError("out_indices chooses the maps of a features-only model: pass features_only=True too")
    if features_only:
        model.set_features_only(out_indices)
    if frozen_stages:
        model.freeze_stages(frozen_stages)
    if norm_eval:
        model.set_norm_eval(True)
    return model
