"""Relative-position term of the pyramid models' kNN distance, built as the official code does.

For a g x g grid with C channels: P = 2-D sin-cos embedding (MAE style, float64), table =
2 P P^T / C cast to float32, bicubic-resized from (n, n) to (n, n / r^2) along the *flattened*
node index (a quirk the trained weights expect), then negated so that near nodes come closer.
"""
import numpy as np

from .resize import bicubic_resize_np


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """(len(positions), dim): [sin(p w_i), cos(p w_i)] with w_i = 1 / 10000^(i / (dim/2))."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid_size: int) -> np.ndarray:
    """(g*g, dim): first half encodes the column (x) coordinate, second half the row (y)."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs channels divisible by 4, got {dim}")
    coords = np.arange(grid_size, dtype=np.float32)
    cols, rows = np.meshgrid(coords, coords)
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)


def relative_pos_table(channels: int, grid_size: int, reduce_ratio: int) -> np.ndarray:
    """The frozen ``relative_pos`` of one pyramid Grapher: (1, n, n // r^2), float32."""
    emb = sincos_2d(channels, grid_size)
    table = (2 * emb @ emb.T / emb.shape[1]).astype(np.float32)
    n = grid_size * grid_size
    table = bicubic_resize_np(table, (n, n // (reduce_ratio * reduce_ratio)))
    return -table[None]
