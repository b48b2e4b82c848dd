"""Exact (erf) GELU, with an erf written in basic ops for exporters that lack Erf."""
from mindspore import nn, ops

# Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7 on the real line; evaluated in float32 about 1.5e-6.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erf_by_formula(z):
    """erf from Abs/Mul/Add/Div/Exp/Where only (MindSpore's ONNX converter has no Erf mapping)."""
    a = ops.abs(z)
    t = ops.ones_like(a) / (1.0 + _AS_P * a)
    poly = t * (_AS_A[0] + t * (_AS_A[1] + t * (_AS_A[2] + t * (_AS_A[3] + t * _AS_A[4]))))
    y = 1.0 - poly * ops.exp(-a * a)
    return ops.where(z < 0, -y, y)


class GELU(nn.Cell):
    """GELU(x) = x/2 (1 + erf(x / sqrt 2)), the exact form the official models use.

    ``use_erf_formula`` (set by ``set_export_mode``) swaps the erf kernel for
    ``erf_by_formula`` so that the graph exports to ONNX; results agree to ~1e-7.
    """

    def __init__(self):
        super().__init__()
        self.use_erf_formula = False

    def construct(self, x):
        if self.use_erf_formula:
            return 0.5 * x * (1.0 + erf_by_formula(x * 0.7071067811865476))
        return ops.gelu(x, approximate="none")


def set_export_mode(net: nn.Cell, onnx: bool) -> None:
    """Make ``net`` traceable by the ONNX exporter (True) or restore the native kernels (False)."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, GELU):
            cell.use_erf_formula = onnx


__all__ = ["GELU", "erf_by_formula", "set_export_mode"]
