"""Parameters and multiply-accumulates (MACs) per image of a registered model at an input size.

Counted on the built model: one forward pass of a zero image (batch 1, PyNative) with hooks on its
layers, which see every layer's real input and output shapes at that size. Two totals:

* ``conv+matmul``: convolutions (output elements x input channels per group x kernel area) and the
  kNN distance matmul of every Grapher (N queries x M keys x C channels).
* ``official``: the rule of the official ViG README and paper, whose "FLOPs" are MACs counted by
  torchprofile 0.0.4 (``profile_macs``, run by the official train.py). On top of the above it counts
  one MAC per output element of every affine BatchNorm and every average pooling (the pyramid's key
  pooling, the head's global pooling), and of the products in the official distance code
  (-2 x x.y^T: N x M; squared norms: N x C, and M x C when the keys are pooled). Activations, additions,
  maxima and gathers count zero. This reproduces the published figures (ViG-Ti 1.3G ... Pyramid ViG-B
  16.8G); the official index arithmetic of its neighbour gather adds a few MACs per block that are
  left out.

The counts are per image and do not depend on the kernel formulation; the SViG threshold graph is
counted like a kNN distance over all N x N pairs.
"""
from typing import Dict, List

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from src.models import create_model
from src.models.layers import Conv2d, DyGraphConv2d


def _numel(shape) -> int:
    return int(np.prod(shape))


def count_macs(net: nn.Cell, image_size: int) -> Dict[str, int]:
    """MACs per image of ``net`` for a square ``image_size`` input: {'conv', 'matmul', 'other'}."""
    totals = {"conv": 0, "matmul": 0, "other": 0}

    def conv(cell, args, out):
        totals["conv"] += _numel(out.shape[1:]) * (cell.in_channels // cell.groups) * cell.kernel_size ** 2

    def batch_norm(cell, args, out):
        totals["other"] += _numel(out.shape[1:])

    def graph(cell, args, out):
        _, channels, height, width = args[0].shape
        queries = height * width
        keys = queries // cell.reduce_ratio ** 2
        totals["matmul"] += queries * keys * channels
        totals["other"] += queries * keys + queries * channels  # -2 x inner products, squared norms of the queries
        if cell.reduce_ratio > 1:
            totals["other"] += 2 * keys * channels  # average pooling of the keys, their squared norms

    hooks = []
    for _, cell in net.cells_and_names():
        if isinstance(cell, Conv2d):
            hooks.append(cell.register_forward_hook(conv))
        elif isinstance(cell, nn.BatchNorm2d):
            hooks.append(cell.register_forward_hook(batch_norm))
        elif isinstance(cell, DyGraphConv2d):
            hooks.append(cell.register_forward_hook(graph))
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)  # hooks run in PyNative mode only
    try:
        net.set_train(False)
        net(Tensor(np.zeros((1, 3, image_size, image_size), np.float32)))
    finally:
        ms.set_context(mode=previous)
        for hook in hooks:
            hook.remove()
    if not getattr(net, "features_only", False):
        totals["other"] += net.num_features  # the head's global average pooling
    return totals


def model_size(arch: str, image_size: int = 224, num_classes: int = 1000) -> Dict[str, float]:
    """Parameters (trainable, and all including frozen tables; BatchNorm statistics in neither) and MACs."""
    net = create_model(arch, num_classes=num_classes, img_size=image_size, kernel_impl="native")
    params = [p for p in net.get_parameters() if not p.name.endswith(("moving_mean", "moving_variance"))]
    macs = count_macs(net, image_size)
    return {"arch": arch, "size": image_size,
            "params_trainable": sum(_numel(p.shape) for p in params if p.requires_grad),
            "params_all": sum(_numel(p.shape) for p in params), "macs_conv_matmul": macs["conv"] + macs["matmul"],
            "macs_official": macs["conv"] + macs["matmul"] + macs["other"]}


def format_sizes(rows: List[Dict[str, float]]) -> str:
    """A table: GMACs rounded as the official README prints them, and the exact counts."""
    lines = ["| model | input | params (trainable) | params (all) | GMACs | MACs (official rule) "
             "| MACs (conv+matmul) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['size']} | {r['params_trainable']:,} | {r['params_all']:,} | "
                     f"{r['macs_official'] / 1e9:.1f} | {r['macs_official']:,} | {r['macs_conv_matmul']:,} |")
    return "\n".join(lines)
