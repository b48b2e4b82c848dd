"""What the ViG families share: stem + position embedding in, pooled head out; sizes; head names."""
from typing import Sequence, Tuple, Union

import mindspore as ms
from mindspore import Parameter, nn
from mindspore.common.initializer import initializer

from .errors import ModelError
from .layers import BicubicResize, Conv2d

REFERENCE_SIZE = 224  # position tables have the 224 grid's shapes; other sizes resize them
CLASSIFIER = "prediction.4"  # the last 1x1 conv of the head (classifier_head), the only class-count-sized layer
FIRST_CONV = "stem.convs.0"  # the conv that reads the image


def to_2tuple(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class GraphClassifier(nn.Cell):
    """Base of the ViG classifiers. Subclasses set ``stem``, ``backbone`` and ``prediction`` and call
    ``_init_pos_embed``; the forward pass is stem + pos_embed -> backbone -> mean pool -> head."""

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
        return self.prediction(x.mean(axis=(2, 3), keep_dims=True)).squeeze((2, 3))

    def construct(self, x):
        return self.forward_head(self.forward_features(x))
