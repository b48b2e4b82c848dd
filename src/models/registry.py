"""Model registry: builders registered by name, with their evaluation settings."""
import difflib
import fnmatch
from typing import Callable, Dict, List, Optional, Union

from mindspore import nn

from .base import CLASSIFIER, FIRST_CONV
from .errors import ModelError
from .layers import Formulation

_BUILDERS: Dict[str, Callable[..., nn.Cell]] = {}
_ALIASES: Dict[str, str] = {}
_DEFAULT_CFGS: Dict[str, dict] = {}


def default_cfg(**overrides) -> dict:
    """Evaluation settings of the official ViG models (mean = std = 0.5, bicubic, crop 0.9), the
    names of their first convolution and classifier (what fine-tuning and conversion look for), and
    the model's graph: 'knn' (options k, conv, stochastic, epsilon) or 'threshold' (start_thresh, dec)."""
    cfg = {"input_size": 224, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
           "crop_pct": 0.9, "interpolation": "bicubic", "first_conv": FIRST_CONV, "classifier": CLASSIFIER,
           "graph": "knn"}
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
                 kernel_impl: Union[str, Formulation] = "native", **kwargs) -> nn.Cell:
    """Build a registered model.

    ``img_size`` (int or (h, w)) sets the node grid; position tables keep their 224 shapes and are
    resized in the forward pass. ``kernel_impl`` is the layers' formulation, fixed here: 'native'
    (MindSpore's kernels, for Ascend/GPU), 'cpu' (the CPU formulations; compiles the CPU kernels on
    first use), or a ``Formulation`` (e.g. ``export_formulation(...)``); a device-dependent choice
    is the caller's (``resolve_kernel_impl``). Other keyword arguments go to the family's
    constructor (e.g. ``drop_rate``, ``conv``, ``stochastic``).
    """
    builder = _BUILDERS[canonical_name(name)]
    return builder(num_classes=num_classes, drop_path_rate=drop_path_rate, img_size=img_size,
                   kernel_impl=kernel_impl, **kwargs)
