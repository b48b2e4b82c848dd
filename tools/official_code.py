"""The official PyTorch code as a benchmark anchor: the model files of the families' own repositories, run
unchanged from a folder of a clone:

* ViG and Pyramid ViG: github huawei-noah/Efficient-AI-Backbones, folder ``vig_pytorch/`` (``vig.py``,
  ``pyramid_vig.py``, ``gcn_lib/``), builders named as ours (``vig_ti_224_gelu``, ``pvig_s_224_gelu``, ...);
* GraphConvNet: github yuan0038/GraphConvNet, its root (``models/GraphConvNet.py``): ``graphconvnet_ti``/``_s``,
  and ``graphconvnetp_ti``/``_s`` for our ``pgraphconvnet_ti``/``_s``.

SViG's code (github IsmaelElsharkawi/SViG) does not run on a CPU-only machine: its ``gcn_lib`` imports cupy (CUDA)
and torch_scatter (an extension built from source against a CUDA PyTorch) at import. Its anchor stays the reference
(``tools/torch_reference.py``), whose threshold graph the fidelity tests hold ours to.

``official_models`` reads which folder builds which of our models from the files' text (no PyTorch needed);
``build_official`` imports and builds one. The files import a few names from timm (``IMAGENET_DEFAULT_MEAN``/
``STD``, ``load_pretrained``, ``DropPath``, ``to_2tuple``, ``trunc_normal_``, ``register_model``). timm needs
torchvision, and torchvision's Linux wheels on PyPI are built against PyPI's CUDA PyTorch: beside a CPU-only
PyTorch they fail at import. Where ``import timm`` fails, those names come from ``timm_stand_in``, defined as timm
defines them; none takes part in the measured computation (DropPath is the identity at the rate 0 the official
builders use; the other names initialise, register or hold constants), so the measured model is the official
code's. So are NumPy's aliases of the builtins (``np.float``) the official code uses and NumPy 1.24 removed.
"""
import importlib
import importlib.util
import os
import re
import sys
import types
from typing import Dict, Sequence, Tuple

# layout: (files that identify it, the files holding the builders, the builders named as ours, our name -> the
# official builder's name where the names differ)
LAYOUTS = {
    "vig_pytorch": (("vig.py", "pyramid_vig.py", "gcn_lib"), ("vig.py", "pyramid_vig.py"), r"p?vig_\w+_224_gelu", {}),
    "GraphConvNet": (("models/GraphConvNet.py", "models/gcn_lib"), ("models/GraphConvNet.py",), r"graphconvnet_(ti|s)",
                     {"pgraphconvnet_ti": "graphconvnetp_ti", "pgraphconvnet_s": "graphconvnetp_s"}),
}
WHERE = ("the vig_pytorch folder of github huawei-noah/Efficient-AI-Backbones or the root of github "
         "yuan0038/GraphConvNet")


def layout_of(folder: str) -> str:
    """Which official repository ``folder`` is (LAYOUTS), from its files."""
    for name, (marks, *_) in LAYOUTS.items():
        if all(os.path.exists(os.path.join(folder, mark)) for mark in marks):
            return name
    raise FileNotFoundError(f"{folder!r} is none of the official code's folders: pass {WHERE}")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def official_models(folders: Sequence[str]) -> Dict[str, Tuple[str, str, str]]:
    """Our model name -> (folder, layout, the official builder's name), for every builder the folders define
    (read as text: this imports no framework)."""
    found = {}
    for folder in folders:
        folder = os.path.abspath(os.path.expanduser(folder))
        layout = layout_of(folder)
        _, files, same_name, renames = LAYOUTS[layout]
        defined = {name for file in files for name in re.findall(r"^def (\w+)\(", _read(os.path.join(folder, file)),
                                                                 re.M)}
        official = {ours: theirs for ours, theirs in renames.items() if theirs in defined}
        official.update({name: name for name in defined if re.fullmatch(same_name, name)})
        found.update({ours: (folder, layout, theirs) for ours, theirs in official.items()})
    return found


def build_official(name: str, folders: Sequence[str]):
    """Our model ``name`` as the official code builds it (a torch.nn.Module, 1000 classes, its own
    initialisation)."""
    models = official_models(folders)
    if name not in models:
        raise KeyError(f"no official builder of {name} in {', '.join(folders)}; they build {', '.join(sorted(models))}")
    folder, layout, builder = models[name]
    _use_timm_or_its_stand_in()
    # the files import gcn_lib (GraphConvNet: the models package) from their folder; two repositories' packages
    # share that name, so another folder's are forgotten first
    for loaded in [n for n in sys.modules if n.split(".")[0] in ("gcn_lib", "models")]:
        del sys.modules[loaded]
    sys.path.insert(0, folder)
    if layout == "GraphConvNet":
        module = importlib.import_module("models.GraphConvNet")
    else:
        file = "pyramid_vig.py" if name.startswith("pvig") else "vig.py"
        spec = importlib.util.spec_from_file_location(f"official_{layout}_{file[:-3]}", os.path.join(folder, file))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return getattr(module, builder)()


def _use_timm_or_its_stand_in() -> None:
    """timm, or ``timm_stand_in`` where it does not import; and NumPy's aliases of the builtins (``np.float``, ...),
    which the official code uses and NumPy 1.24 removed, as NumPy before 1.24 defined them."""
    import builtins
    import numpy as np
    for alias in ("bool", "int", "float", "complex", "object", "str"):
        if alias not in np.__dict__:
            setattr(np, alias, getattr(builtins, alias))
    try:
        import timm.models.layers  # noqa: F401  (the real timm, where it imports)
    except Exception:  # noqa: BLE001  (torchvision built for another PyTorch fails in many ways)
        for name in [n for n in sys.modules if n == "timm" or n.startswith("timm.")]:
            del sys.modules[name]
        sys.modules.update(timm_stand_in())


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

