"""The graph library every ViG family is built from."""
from .activation import GELU, erf_by_formula, set_export_mode
from .blocks import FFN, DyGraphConv2d, Grapher, conv_bn, vig_block
from .bottleneck import Bottleneck
from .conv import Conv2d, resolve_kernel_impl, set_kernel_impl
from .drop import DropPath, drop_path_schedule
from .gcn import GRAPH_CONVS, create_graph_conv
from .graph import DilatedKnnGraph, MaxOverRows, NeighbourMax, cap_knn, gather_rows, l2_normalize, negative_sq_distance
from .pos_embed import relative_pos_table, sincos_2d
from .resize import BicubicResize, bicubic_resize_np, bicubic_taps
from .stem import Downsample, Stem, classifier_head
from .threshold_graph import (MaskedNeighbourMax, SimilarityThresholdGraph, probability_to_z,
                              threshold_probabilities)

__all__ = [
    "GELU",
    "erf_by_formula",
    "set_export_mode",
    "FFN",
    "DyGraphConv2d",
    "Grapher",
    "conv_bn",
    "vig_block",
    "Bottleneck",
    "Conv2d",
    "resolve_kernel_impl",
    "set_kernel_impl",
    "DropPath",
    "drop_path_schedule",
    "GRAPH_CONVS",
    "create_graph_conv",
    "DilatedKnnGraph",
    "MaxOverRows",
    "NeighbourMax",
    "cap_knn",
    "gather_rows",
    "l2_normalize",
    "negative_sq_distance",
    "relative_pos_table",
    "sincos_2d",
    "BicubicResize",
    "bicubic_resize_np",
    "bicubic_taps",
    "Downsample",
    "Stem",
    "classifier_head",
    "MaskedNeighbourMax",
    "SimilarityThresholdGraph",
    "probability_to_z",
    "threshold_probabilities",
]
