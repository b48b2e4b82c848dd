"""BatchNorm folded into the convolution before it, for an exported inference graph.

MindSpore's CPU runtime runs each BatchNorm of a MINDIR as its own pass after the convolution (onnxruntime
folds the pair itself: "Conv BatchNorm Fusion" in its documented basic graph optimizations), so the CPU-form
MINDIR (``export_formulation``: ``fold_batch_norm``) holds the folded convolutions instead: the same function in
inference, with the running statistics, to float32 rounding.
"""
import numpy as np
from mindspore import Parameter, Tensor, nn

from .bottleneck import Bottleneck
from .conv import Conv2d


def _fold(conv: Conv2d, bn: nn.BatchNorm2d) -> None:
    """conv's weight and bias become those of bn(conv(x)) with bn's running statistics (float64, then float32)."""
    gamma, beta, mean, var = (p.asnumpy().astype(np.float64) for p in
                              (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    scale = gamma / np.sqrt(var + bn.eps)
    bias = conv.bias.asnumpy().astype(np.float64) if conv.has_bias else np.zeros_like(mean)
    conv.weight.set_data(Tensor((conv.weight.asnumpy() * scale.reshape(-1, 1, 1, 1)).astype(np.float32)))
    folded = Tensor(((bias - mean) * scale + beta).astype(np.float32))
    if conv.has_bias:
        conv.bias.set_data(folded)
    else:
        conv.bias = Parameter(folded, name=conv.weight.name[:-len("weight")] + "bias")
        conv.has_bias = True


def fold_batch_norms(net: nn.Cell) -> int:
    """Fold every BatchNorm that directly follows a ``Conv2d`` (in a sequence, or a bottleneck's convN -> bnN)
    into it, the BatchNorm replaced by the identity; for inference only (the statistics stop updating) and in
    place. Returns how many were folded; a BatchNorm after a sum (GraphConvNet's block) stays."""
    folded = 0
    for _, cell in list(net.cells_and_names()):
        if isinstance(cell, nn.SequentialCell):
            for i in range(1, len(cell)):
                if isinstance(cell[i - 1], Conv2d) and isinstance(cell[i], nn.BatchNorm2d):
                    _fold(cell[i - 1], cell[i])
                    cell[i] = nn.Identity()
                    folded += 1
        elif isinstance(cell, Bottleneck):
            for n in (1, 2, 3):
                _fold(getattr(cell, f"conv{n}"), getattr(cell, f"bn{n}"))
                setattr(cell, f"bn{n}", nn.Identity())
                folded += 1
    return folded
