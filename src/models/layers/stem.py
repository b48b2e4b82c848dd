"""Stems, the pyramid Downsample and the classification head shared by the ViG families."""
from typing import Sequence

from mindspore import nn

from .conv import Conv2d, conv_bn, conv_bn_layers
from .form import NATIVE, Formulation


class Stem(nn.Cell):
    """Overlapping conv stem: a 3x3 stride-2 conv + BN + GELU per entry of ``widths``, then a
    3x3 stride-1 conv + BN with no activation. Children are indexed like the official
    ``stem.convs`` (activations included), so parameter names map one-to-one.

    Args:
        widths: output channels of the stride-2 convs, in order; the last is also the final conv's width.
            Their count sets the stride (``stride`` = 2 ** len(widths): 16 in ViG, 4 in Pyramid ViG).
        in_channels: input image channels.
        form: the layers' formulation (``Formulation``), fixed here.
    """

    def __init__(self, widths: Sequence[int], in_channels: int = 3, form: Formulation = NATIVE):
        super().__init__()
        layers = []
        prev = in_channels
        for width in widths:
            layers += conv_bn_layers(prev, width, 3, stride=2, act=True, form=form)
            prev = width
        layers += conv_bn_layers(prev, prev, 3, form=form)
        self.convs = nn.SequentialCell(layers)
        self.stride = 2 ** len(widths)

    def construct(self, x):
        return self.convs(x)


class Downsample(nn.Cell):
    """3x3 stride-2 conv + BN between pyramid stages (no activation): halves the grid, changes the width.

    Args:
        in_channels: width of the stage before.
        out_channels: width of the stage after.
        form: the layers' formulation (``Formulation``), fixed here.
    """

    def __init__(self, in_channels: int, out_channels: int, form: Formulation = NATIVE):
        super().__init__()
        self.conv = conv_bn(in_channels, out_channels, kernel_size=3, stride=2, form=form)

    def construct(self, x):
        return self.conv(x)


def classifier_head(in_channels: int, num_classes: int, drop_rate: float = 0.0, hidden_channels: int = 1024,
                    form: Formulation = NATIVE) -> nn.SequentialCell:
    """1x1 conv -> BN -> GELU -> Dropout -> 1x1 conv on the pooled (B, C, 1, 1) features (the official
    ``prediction``; index 4 is the classifier).

    Args:
        in_channels: C, the pooled features' width (the model's ``num_features``).
        num_classes: outputs of the classifier.
        drop_rate: dropout probability before the classifier.
        hidden_channels: width of the hidden 1x1 conv (1024 in every official model).
        form: the layers' formulation (``Formulation``), fixed here.
    """
    return nn.SequentialCell(conv_bn_layers(in_channels, hidden_channels, act=True, form=form) + [
        nn.Dropout(p=drop_rate),
        Conv2d(hidden_channels, num_classes, 1, form=form),
    ])
