"""Bicubic resizing with PyTorch's semantics (A = -0.75, align_corners=False, edge clamping).

The official models resize their relative-position tables with ``F.interpolate(mode='bicubic')``
and our models resize ``pos_embed`` the same way for non-224 inputs. Writing the resize as four
gathers and a weighted sum per axis keeps the result independent of the backend's bicubic kernel,
makes it exportable (ONNX has no mapping for MindSpore's ResizeBicubic) and lets the numpy form
(``bicubic_resize_np``) build the same tables at construction time.
"""
import math
from typing import Tuple

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

_A = -0.75


def _cubic_near(x: float) -> float:
    return ((_A + 2) * x - (_A + 3)) * x * x + 1


def _cubic_far(x: float) -> float:
    return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A


def bicubic_taps(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Source indices (out, 4) and weights (out, 4) of a 1-D bicubic resize."""
    scale = in_size / out_size
    index = np.empty((out_size, 4), np.int32)
    weight = np.empty((out_size, 4), np.float64)
    for o in range(out_size):
        src = (o + 0.5) * scale - 0.5
        base = math.floor(src)
        t = src - base
        index[o] = np.clip(np.arange(base - 1, base + 3), 0, in_size - 1)
        weight[o] = (_cubic_far(t + 1), _cubic_near(t), _cubic_near(1 - t), _cubic_far(2 - t))
    return index, weight


def bicubic_resize_np(x: np.ndarray, out_hw: Tuple[int, int]) -> np.ndarray:
    """Resize the last two axes of ``x`` (float64 arithmetic, result in x's dtype)."""
    out = x.astype(np.float64)
    for axis, size in ((-2, out_hw[0]), (-1, out_hw[1])):
        if out.shape[axis] == size:
            continue
        index, weight = bicubic_taps(out.shape[axis], size)
        taken = np.take(out, index, axis=axis)  # axis -> (size, 4)
        w_shape = [1] * taken.ndim
        pos = taken.ndim + axis - 1  # taken has one extra trailing-tap axis right after `axis`
        w_shape[pos], w_shape[pos + 1] = size, 4
        out = (taken * weight.reshape(w_shape)).sum(axis=pos + 1)
    return out.astype(x.dtype)


class BicubicResize(nn.Cell):
    """Resize the last two axes from ``in_hw`` to ``out_hw``; an unchanged axis is left exact.

    Args:
        in_hw: (rows, columns) of the input's last two axes.
        out_hw: (rows, columns) of the output's.
    """

    def __init__(self, in_hw: Tuple[int, int], out_hw: Tuple[int, int]):
        super().__init__()
        self.in_hw = tuple(in_hw)
        self.out_hw = tuple(out_hw)
        self.resize_h = self.in_hw[0] != self.out_hw[0]
        self.resize_w = self.in_hw[1] != self.out_hw[1]
        idx_h, w_h = bicubic_taps(self.in_hw[0], self.out_hw[0])
        idx_w, w_w = bicubic_taps(self.in_hw[1], self.out_hw[1])
        self.idx_h = Tensor(idx_h.reshape(-1), ms.int32)
        self.w_h = Tensor(w_h.reshape(self.out_hw[0], 4, 1), ms.float32)
        self.idx_w = Tensor(idx_w.reshape(-1), ms.int32)
        self.w_w = Tensor(w_w.reshape(self.out_hw[1], 4), ms.float32)

    def construct(self, x):
        return self.rows(x, 0, self.out_hw[0])

    def rows(self, x, start: int, stop: int):
        """Rows ``start:stop`` of the resized x alone, with the same values as in the whole result: what a
        caller needs of a large output, one block of rows at a time."""
        lead = x.shape[:-2]
        whole = start == 0 and stop == self.out_hw[0]
        if self.resize_h:
            idx_h, w_h = (self.idx_h, self.w_h) if whole else (self.idx_h[start * 4:stop * 4], self.w_h[start:stop])
            x = ops.gather(x, idx_h, x.ndim - 2)
            x = x.reshape(lead + (stop - start, 4, x.shape[-1]))
            x = (x * w_h.astype(x.dtype)).sum(-2)
        elif not whole:
            x = x[..., start:stop, :]
        if self.resize_w:
            x = ops.gather(x, self.idx_w, x.ndim - 1)
            x = x.reshape(lead + (stop - start, self.out_hw[1], 4))
            x = (x * self.w_w.astype(x.dtype)).sum(-1)
        return x
