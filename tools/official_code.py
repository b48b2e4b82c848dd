"""The official PyTorch code as a benchmark anchor: the model files of a clone of github
huawei-noah/Efficient-AI-Backbones, folder ``vig_pytorch/`` (``vig.py``: ViG-Ti/S/B, ``pyramid_vig.py``: Pyramid
ViG-Ti/S/M/B), run unchanged.

Those files import five names from timm (``IMAGENET_DEFAULT_MEAN``/``STD``, ``load_pretrained``, ``DropPath``,
``to_2tuple``, ``trunc_normal_``, ``register_model``). timm needs torchvision, and torchvision's Linux wheels on PyPI
are built against PyPI's CUDA PyTorch: beside a CPU-only PyTorch they fail at import. Where ``import timm`` fails,
``official_builders`` supplies those names as timm defines them (``timm_stand_in``): none of them takes part in
the measured computation (DropPath is the identity at the rate 0 the official builders use; the other names
initialise, register or hold constants), so the measured model is the official code's.

This module imports PyTorch only inside its functions (the MindSpore workers import it too).
"""
import importlib.util
import os
import sys
import types
from typing import Callable, Dict

OFFICIAL_FILES = ("vig.py", "pyramid_vig.py")


def timm_stand_in() -> Dict[str, types.ModuleType]:
    """The modules ``timm``, ``timm.data``, ``timm.models``, ``timm.models.helpers``, ``timm.models.layers`` and
    ``timm.models.registry`` holding only the names the official model files import, defined as timm defines
    them."""
    import torch
    from torch import nn

    def drop_path(x, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True):
        """timm's stochastic depth: a sample's residual branch dropped with ``drop_prob``, the kept ones scaled."""
        if drop_prob == 0.0 or not training:
            return x
        keep_prob = 1 - drop_prob
        random_tensor = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
        if keep_prob > 0.0 and scale_by_keep:
            random_tensor.div_(keep_prob)
        return x * random_tensor

    class DropPath(nn.Module):
        def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
            super().__init__()
            self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep

        def forward(self, x):
            return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (list, tuple)) else (x, x)

    def load_pretrained(*args, **kwargs):
        raise RuntimeError("the official code's pretrained download needs timm itself; the benchmark loads the "
                           "weights it measures")

    names = ("timm", "timm.data", "timm.models", "timm.models.helpers", "timm.models.layers", "timm.models.registry")
    modules = {name: types.ModuleType(name) for name in names}
    modules["timm.data"].IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
    modules["timm.data"].IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
    modules["timm.models.helpers"].load_pretrained = load_pretrained
    layers = modules["timm.models.layers"]
    layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = DropPath, to_2tuple, torch.nn.init.trunc_normal_
    modules["timm.models.registry"].register_model = lambda fn: fn
    for name, module in modules.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    return modules


def official_builders(folder: str) -> Dict[str, Callable]:
    """The model builders of the official ``vig_pytorch`` folder, by model name (``vig_ti_224_gelu``, ...).
    Its folder goes on ``sys.path`` (the files import ``gcn_lib`` from it); timm is the installed one if it
    imports, else ``timm_stand_in``."""
    folder = os.path.abspath(os.path.expanduser(folder))
    missing = [f for f in OFFICIAL_FILES + ("gcn_lib",) if not os.path.exists(os.path.join(folder, f))]
    if missing:
        raise FileNotFoundError(f"{folder!r} is not the official vig_pytorch folder (no {', '.join(missing)}); "
                                f"pass the vig_pytorch folder of a clone of github huawei-noah/Efficient-AI-Backbones")
    try:
        import timm.models.layers  # noqa: F401  (the real timm, where it imports)
    except Exception:  # noqa: BLE001  (torchvision built for another PyTorch fails in many ways)
        for name in [n for n in sys.modules if n == "timm" or n.startswith("timm.")]:
            del sys.modules[name]
        sys.modules.update(timm_stand_in())
    sys.path.insert(0, folder)
    builders = {}
    for file in OFFICIAL_FILES:
        spec = importlib.util.spec_from_file_location(f"official_{file[:-3]}", os.path.join(folder, file))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        builders.update({name: getattr(module, name) for name in dir(module)
                         if name.endswith("_224_gelu") and callable(getattr(module, name))})
    return builders
