"""Realistic weights without training: structured images and BatchNorm statistics calibrated on them.

A freshly initialised network in eval mode has BN statistics 0/1, its activations reach ~1e7 and
exact GELU then produces float32 denormals that slow CPU kernels several-fold; and with random
features nearly all kNN distances tie. Benchmarks and implementation comparisons therefore use
non-trivial BN affine parameters, a small position embedding, and BN statistics measured on
smooth images (see ``calibrate``).
"""
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from .base import to_2tuple


def structured_images(count: int, size, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Smooth float32 NCHW images in [-1, 1]: low-frequency cosines plus soft-edged blobs."""
    height, width = to_2tuple(size)
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    images = np.zeros((count, channels, height, width))
    for img in images:
        for c in range(channels):
            for _ in range(4):
                fy, fx = rng.uniform(0.5, 4.0, 2)
                img[c] += rng.uniform(0.2, 1.0) * np.cos(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi))
            for _ in range(3):
                cy, cx = rng.uniform(0, 1, 2)
                radius = rng.uniform(0.05, 0.3)
                img[c] += rng.uniform(-1.5, 1.5) / (1 + np.exp(((yy - cy) ** 2 + (xx - cx) ** 2 - radius ** 2) / 0.01))
    images /= np.abs(images).max(axis=(1, 2, 3), keepdims=True)
    return images.astype(np.float32)


def randomize_affine(net: nn.Cell, seed: int = 0) -> None:
    """BN gamma = 1 + 0.1 N(0,1), beta = 0.1 N(0,1), pos_embed = 0.02 N(0,1): weights that are not
    degenerate (trained models are not), so comparisons are well conditioned."""
    rng = np.random.default_rng(seed)
    for param in net.get_parameters():
        leaf = param.name.rsplit(".", 1)[-1]
        if leaf == "gamma":
            param.set_data(Tensor(1 + 0.1 * rng.standard_normal(param.shape), ms.float32))
        elif leaf == "beta":
            param.set_data(Tensor(0.1 * rng.standard_normal(param.shape), ms.float32))
        elif leaf == "pos_embed":
            param.set_data(Tensor(0.02 * rng.standard_normal(param.shape), ms.float32))


def calibration_images(batch_size: int, size, seed: int = 0) -> np.ndarray:
    """Images to calibrate on, of which a measurement uses the first ``batch_size``: at least two, since the
    head's BatchNorm sees one value per image and channel, and the moving (unbiased) variance of one value
    is NaN."""
    return structured_images(max(2, batch_size), size, seed=seed)


def calibrate(net: nn.Cell, images: np.ndarray, seed: int = 0) -> nn.Cell:
    """Randomise the affine parameters, then set every BN's moving statistics to the batch
    statistics of ``images`` (one train-mode pass with momentum 1), and leave ``net`` in eval mode."""
    randomize_affine(net, seed)
    norms = [cell for _, cell in net.cells_and_names() if isinstance(cell, nn.BatchNorm2d)]
    saved = [bn.bn_train for bn in norms]
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        for bn in norms:  # moving = (1 - m) * moving + m * batch with m = 1: the batch statistics
            bn.bn_train = ops.BatchNorm(is_training=True, epsilon=bn.eps, momentum=1.0, data_format=bn.format)
        net.set_train(True)
        net(Tensor(images))
    finally:
        for bn, op in zip(norms, saved):
            bn.bn_train = op
        net.set_train(False)
        ms.set_context(mode=mode)
    return net


def knn_margins(net: nn.Cell, images: np.ndarray) -> list:
    """Per Grapher (in order), each node's smallest float64 gap between adjacent ranked candidate
    distances that decides its neighbour list, shape (B, N); for a similarity-threshold graph (SViG),
    the smallest distance of the node's z-scored similarities to the threshold.

    Two float32 implementations (another runtime, another GEMM) can only disagree on a node's
    neighbours when this gap is near float32 rounding; comparisons pick inputs whose gaps are
    all clear of it. Runs ``net`` (eval mode) block by block in PyNative mode.
    """
    from .layers import Grapher

    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net.set_train(False)
    margins = []
    try:
        x = net.embed(Tensor(images))
        for entry in net.backbone:
            grapher = next((cell for _, cell in entry.cells_and_names() if isinstance(cell, Grapher)), None)
            if grapher is not None:  # wherever the family's block holds it; its input is the entry's input
                margins.append(_grapher_margin(grapher, x))
            x = entry(x)
    finally:
        ms.set_context(mode=mode)
    return margins


def _grapher_margin(grapher, x) -> np.ndarray:
    nodes, keys, _ = grapher.graph_conv.graph(grapher.fc1(x), None)
    nodes, keys = nodes.asnumpy().astype(np.float64), keys.asnumpy().astype(np.float64)
    nodes /= np.maximum(np.linalg.norm(nodes, axis=-1, keepdims=True), 1e-12)
    keys /= np.maximum(np.linalg.norm(keys, axis=-1, keepdims=True), 1e-12)
    dist = (nodes ** 2).sum(-1)[..., None] - 2 * nodes @ keys.transpose(0, 2, 1) + (keys ** 2).sum(-1)[:, None]
    table = grapher.position_bias()
    if table is not None:
        dist = dist + table.asnumpy().astype(np.float64)
    return grapher.graph_spec.margin(dist)
