"""Model registry: builders registered by name, with their evaluation settings."""
import difflib
import fnmatch
from typing import Callable, Dict, List, Optional, Union

from mindspore import nn

from .base import CLASSIFIER, FIRST_CONV, backbone_options
from .errors import ModelError
from .layers import Formulation

# The input normalisations of the official models: ViG/Pyramid ViG/SViG used timm's "inception" values, GraphConvNet
# ImageNet's statistics.
INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_BUILDERS: Dict[str, Callable[..., nn.Cell]] = {}
_ALIASES: Dict[str, str] = {}
_DEFAULT_CFGS: Dict[str, dict] = {}


def default_cfg(**overrides) -> dict:
    """Evaluation settings of the official ViG models (mean = std = 0.5, bicubic, crop 0.9; evaluation uses
    them where neither the command line, a config file nor the checkpoint says otherwise), the
    names of their first convolution and classifier (what fine-tuning and conversion look for), and
    the model's graph: 'knn' (options k, conv, stochastic, epsilon) or 'threshold' (start_thresh, dec), and
    the released weights: ``url`` of the official checkpoint file (None: none is downloadable), with
    its ``sha256`` (hex digest or prefix) and ``num_bytes`` where known."""
    cfg = {"input_size": 224, "mean": INCEPTION_MEAN, "std": INCEPTION_STD,
           "crop_pct": 0.9, "interpolation": "bicubic", "first_conv": FIRST_CONV, "classifier": CLASSIFIER,
           "graph": "knn", "url": None, "sha256": None, "num_bytes": None}
    cfg.update(overrides)
    return cfg


def register_model(name: str, builder: Callable[..., nn.Cell], cfg: dict, aliases=()) -> None:
    if name in _BUILDERS or name in _ALIASES:
        raise ModelError(f"model {name!r} is registered twice")
    _BUILDERS[name] = builder
    _DEFAULT_CFGS[name] = cfg
    for alias in aliases:
        _ALIASES[alias] = name


def list_models(pattern: Optional[str] = None, include_aliases: bool = False) -> List[str]:
    names = sorted(_BUILDERS) + (sorted(_ALIASES) if include_aliases else [])
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def family_representatives() -> Dict[str, str]:
    """The smallest registered model of each family (name prefix: vig, pvig, svig, graphconvnet, ...), by family:
    what covers every family cheaply (a 'nano' model first, then 'ti')."""
    reps = {}
    for name in list_models():
        family = name.split("_")[0]
        rank = (0 if "nano" in name else 1 if "_ti" in name else 2, name)
        if family not in reps or rank < reps[family][0]:
            reps[family] = (rank, name)
    return {family: name for family, (_, name) in sorted(reps.items())}


def canonical_name(name: str) -> str:
    """The registered name for ``name`` (aliases resolved); a clear error for unknown names."""
    if name in _BUILDERS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    known = list_models(include_aliases=True)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ModelError(f"Unknown model {name!r}.{hint} Registered models: {', '.join(known)}")


def model_cfg(name: str) -> dict:
    """Default cfg of a registered model: evaluation settings (input size, mean, std, crop_pct,
    interpolation), ``classifier`` and ``first_conv``."""
    return dict(_DEFAULT_CFGS[canonical_name(name)])


def create_model(name: str, num_classes: int = 1000, drop_path_rate: float = 0.0, img_size=224,
                 kernel_impl: Union[str, Formulation] = "native", features_only: bool = False, out_indices=None,
                 frozen_stages: int = 0, norm_eval: bool = False, **kwargs) -> nn.Cell:
    """Build a registered model.

    ``img_size`` (int or (h, w)) sets the node grid; position tables keep their 224 shapes and are
    resized in the forward pass. ``kernel_impl`` is the layers' formulation, fixed here: 'native'
    (MindSpore's kernels, for Ascend/GPU), 'cpu' (the CPU formulations; compiles the CPU kernels on
    first use), or a ``Formulation`` (e.g. ``export_formulation(...)``); a device-dependent choice
    is the caller's (``resolve_kernel_impl``). Other keyword arguments go to the family's
    builder: its graph options (kNN families: ``k``, ``conv``, ``stochastic``, ``epsilon``; SViG:
    ``start_thresh``, ``dec``), which it turns into the blocks' graph specs, and the model's own (e.g.
    ``drop_rate``, ``in_channels``).

    Backbone use: ``features_only`` makes the forward return a tuple of feature maps, those of the
    feature points ``out_indices`` (pyramid: stages 0-3 at strides 4/8/16/32; isotropic: blocks;
    default all); ``frozen_stages`` and ``norm_eval`` as in mmpretrain (see ``GraphClassifier``).
    """
    builder = _BUILDERS[canonical_name(name)]
    model = builder(num_classes=num_classes, drop_path_rate=drop_path_rate, img_size=img_size,
                    kernel_impl=kernel_impl, **kwargs)
    return backbone_options(model, features_only, out_indices, frozen_stages, norm_eval)
