"""Stochastic depth (drop path) with timm semantics: per sample, x / keep * Bernoulli(keep)."""
import numpy as np
from mindspore import nn, ops


class DropPath(nn.Cell):
    """Zeroes whole samples of a residual branch in training; identity in eval or at rate 0.

    Args:
        rate: probability of dropping a sample's branch, in [0, 1).
    """

    def __init__(self, rate: float = 0.0):
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
        self.rate = float(rate)

    def construct(self, x):
        if self.rate == 0.0 or not self.training:
            return x
        # Dropout of a ones tensor is exactly Bernoulli(keep) / keep, one value per sample.
        mask = ops.dropout(ops.ones((x.shape[0],) + (1,) * (x.ndim - 1), x.dtype), p=self.rate)
        return x * mask


def drop_path_schedule(rate: float, depth: int) -> list:
    """Per-block rates linspace(0, rate, depth) in float32, as the official models compute them."""
    return [float(r) for r in np.linspace(0.0, rate, depth, dtype=np.float32)]
