"""GraphConvNet (Li, Dai, Yi, DSIT 2024): every ViG block followed by a ResNet bottleneck, an outer
residual and BatchNorm.

Block: y = FFN(Grapher(x)); y = Bottleneck(y) (no final ReLU); out = BN(y + x). GraphConvNet-Ti/S
are ViG-Ti/S with these blocks (same stem, k and dilation schedules, head), Pyramid GraphConvNet-Ti/S
are Pyramid ViG-Ti/S with them. Names follow the official ``models/GraphConvNet.py``
(``backbone.I.grapher``, ``.FFN``, ``.res_block``, ``.bn``; in the pyramid every block sits one
level deeper, ``backbone.I.0.*``), so its checkpoints map one-to-one. Its models were trained and
are evaluated with the ImageNet mean/std, not ViG's 0.5.
"""
from functools import partial

from mindspore import nn

from . import pyramid_vig, vig
from .layers import FFN, NATIVE, BatchNorm2d, Bottleneck, Formulation, Grapher
from .registry import IMAGENET_MEAN, IMAGENET_STD, default_cfg, register_model


class GraphConvBlock(nn.Cell):
    """BN(Bottleneck(FFN(Grapher(x))) + x); the bottleneck's width is C / 4.

    Args:
        grapher: the block's Grapher, built by the model (``grapher``, the official name).
        channels: C, the block's width.
        drop_path: stochastic-depth rate of the FFN's residual branch (the Grapher has its own).
        form: the layers' formulation (``Formulation``), fixed here.
    """

    def __init__(self, grapher: Grapher, channels: int, drop_path: float = 0.0, form: Formulation = NATIVE):
        super().__init__()
        self.grapher = grapher
        self.FFN = FFN(channels, channels * 4, drop_path=drop_path, form=form)  # the official attribute name
        self.res_block = Bottleneck(channels, channels // 4, form)
        self.bn = BatchNorm2d(channels, form)

    def construct(self, x):
        return self.bn(self.res_block(self.FFN(self.grapher(x))) + x)


def pyramid_block(grapher: Grapher, channels: int, drop_path: float = 0.0,
                  form: Formulation = NATIVE) -> nn.SequentialCell:
    """A ``GraphConvBlock`` (same arguments) in a one-element sequence, as the official pyramid wraps each block
    (names ``backbone.I.0.*``)."""
    return nn.SequentialCell([GraphConvBlock(grapher, channels, drop_path, form)])


ARCHS = {  # name: (the ViG arch it extends, its block, official alias)
    "graphconvnet_ti": ("vig_ti_224_gelu", GraphConvBlock, None),
    "graphconvnet_s": ("vig_s_224_gelu", GraphConvBlock, None),
    "pgraphconvnet_ti": ("pvig_ti_224_gelu", pyramid_block, "graphconvnetp_ti"),
    "pgraphconvnet_s": ("pvig_s_224_gelu", pyramid_block, "graphconvnetp_s"),
}

for _name, (_base, _block, _alias) in ARCHS.items():
    _family = pyramid_vig if _base in pyramid_vig.ARCHS else vig
    register_model(_name, partial(_family.build_arch, _base, block=_block),
                   default_cfg(mean=IMAGENET_MEAN, std=IMAGENET_STD), aliases=(_alias,) if _alias else ())
