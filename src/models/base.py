"""What the ViG families share: stem + position embedding in, pooled head out."""
from typing import Tuple

import mindspore as ms
from mindspore import Parameter, nn
from mindspore.common.initializer import initializer

from .layers import BicubicResize


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
