"""The ResNet-50 bottleneck (torchvision's, stride 1, no downsample) as GraphConvNet adds it to every block."""
from mindspore import nn

from .conv import Conv2d
from .form import NATIVE, Formulation
from .norm import BatchNorm2d


class Bottleneck(nn.Cell):
    """x + BN(conv1x1(ReLU(BN(conv3x3(ReLU(BN(conv1x1(x)))))))): C -> width -> width -> C, convs without bias.

    Unlike ResNet's, no ReLU follows the residual sum (GraphConvNet omits it). Attribute names (``conv1``,
    ``bn1``, ..., ``conv3``, ``bn3``) follow torchvision's so state dicts map one-to-one.

    Args:
        channels: C, input and output width.
        width: the inner width (C / 4 in GraphConvNet).
        form: the layers' formulation (``Formulation``), fixed here.
    """

    def __init__(self, channels: int, width: int, form: Formulation = NATIVE):
        super().__init__()
        self.conv1 = Conv2d(channels, width, 1, bias=False, form=form)
        self.bn1 = BatchNorm2d(width, form)
        self.conv2 = Conv2d(width, width, 3, padding=1, bias=False, form=form)
        self.bn2 = BatchNorm2d(width, form)
        self.conv3 = Conv2d(width, channels, 1, bias=False, form=form)
        self.bn3 = BatchNorm2d(channels, form)
        self.relu = nn.ReLU()

    def construct(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out)) + x
