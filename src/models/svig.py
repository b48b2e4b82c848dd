"""SViG (Elsharkawi, Sharara, Rafea, IEEE Access 2025): ViG-Ti with a similarity-thresholded graph.

Block i connects every pair of nodes whose per-image z-scored similarity exceeds Phi^-1(p_i), with
p_i = start_thresh - dec * i (the official ``--start-thresh`` / ``--dec``); the graph gets denser in
deeper blocks. Everything else, module names included, is ViG-Ti's, so the official checkpoints (a
plain and an EMA state dict in one file) convert one-to-one. See ``layers/threshold_graph.py``.
"""
from functools import partial

from .errors import ModelError
from .layers import threshold_probabilities
from .registry import default_cfg, register_model
from .vig import VisionGNN

START_THRESH, DEC = 0.89, 0.03  # the best published setting (74.6% top-1, plain weights)
ARCHS = {"svig_ti_224_gelu": dict(channels=192, depth=12)}
KNN_OPTIONS = ("k", "stochastic", "epsilon")


def _build(arch: str, start_thresh: float = START_THRESH, dec: float = DEC, **kwargs) -> VisionGNN:
    spec = ARCHS[arch]
    for name in KNN_OPTIONS:
        if name in kwargs:
            raise ModelError(f"{arch} builds a similarity-threshold graph: the kNN option {name!r} does not apply "
                             "(set start_thresh and dec instead)")
    depth = spec["depth"]
    return VisionGNN(spec["channels"], [None] * depth, [None] * depth,
                     threshold=threshold_probabilities(start_thresh, dec, depth), **kwargs)


for _name in ARCHS:
    register_model(_name, partial(_build, _name), default_cfg(graph="threshold"))
