"""Vision GNN models for MindSpore: ``create_model(name, ...)`` and ``list_models()``."""
from . import graphconvnet, pyramid_vig, svig, vig  # noqa: F401  (registers the families)
from .errors import ModelError
from .layers import (KERNEL_IMPLS, Formulation, KnnGraphSpec, ThresholdGraphSpec, export_formulation,
                     fold_batch_norms, knn_specs, resolve_kernel_impl, threshold_specs)
from .pyramid_vig import PyramidVisionGNN
from .registry import canonical_name, create_model, family_representatives, list_models, model_cfg
from .vig import VisionGNN

__all__ = ["ModelError", "create_model", "list_models", "model_cfg", "canonical_name", "family_representatives",
           "KERNEL_IMPLS", "resolve_kernel_impl", "export_formulation", "fold_batch_norms", "Formulation", "VisionGNN",
           "PyramidVisionGNN", "KnnGraphSpec", "ThresholdGraphSpec", "knn_specs", "threshold_specs"]
