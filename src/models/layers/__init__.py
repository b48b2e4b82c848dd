"""The graph library every ViG family is built from."""
from .activation import GELU, erf_by_formula
from .blocks import FFN, DyGraphConv2d, Grapher, graphs_in_float32, vig_block
from .bottleneck import Bottleneck
from .conv import Conv2d, conv_bn, conv_bn_layers
from .drop import DropPath, drop_path_schedule
from .fold import fold_batch_norms
from .form import (KERNEL_IMPLS, NATIVE, Formulation, compiled_batch_norm, compiled_gather_max, compiled_gelu,
                   compiled_masked_max, compiled_topk, cpu_formulation, export_formulation, formulation,
                   resolve_kernel_impl)
from .gcn import GRAPH_CONVS, create_graph_conv
from .graph import DilatedKnnGraph, MaxOverRows, NeighbourMax, cap_knn, gather_rows, l2_normalize, negative_sq_distance
from .graph_spec import GraphSpec, KnnGraphSpec, ThresholdGraphSpec, knn_specs, threshold_specs
from .norm import BatchNorm2d
from .pos_embed import relative_pos_table, sincos_2d
from .resize import BicubicResize, bicubic_resize_np, bicubic_taps
from .stem import Downsample, Stem, classifier_head
from .threshold_graph import (MaskedNeighbourMax, SimilarityThresholdGraph, probability_to_z,
                              threshold_probabilities)

__all__ = [
    "GELU",
    "erf_by_formula",
    "FFN",
    "DyGraphConv2d",
    "Grapher",
    "graphs_in_float32",
    "vig_block",
    "Bottleneck",
    "Conv2d",
    "conv_bn",
    "conv_bn_layers",
    "DropPath",
    "drop_path_schedule",
    "fold_batch_norms",
    "KERNEL_IMPLS",
    "NATIVE",
    "Formulation",
    "compiled_batch_norm",
    "compiled_gather_max",
    "compiled_gelu",
    "compiled_masked_max",
    "compiled_topk",
    "cpu_formulation",
    "export_formulation",
    "formulation",
    "resolve_kernel_impl",
    "BatchNorm2d",
    "GRAPH_CONVS",
    "create_graph_conv",
    "GraphSpec",
    "KnnGraphSpec",
    "ThresholdGraphSpec",
    "knn_specs",
    "threshold_specs",
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
