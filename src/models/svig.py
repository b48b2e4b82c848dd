"""SViG (Elsharkawi, Sharara, Rafea, IEEE Access 2025): ViG-Ti with a similarity-thresholded graph.

Block i connects every pair of nodes whose per-image z-scored similarity exceeds Phi^-1(p_i), with
p_i = start_thresh - dec * i (the official ``--start-thresh`` / ``--dec``); the graph gets denser in
deeper blocks. Everything else, module names included, is ViG-Ti's, so the official checkpoints (a
plain and an EMA state dict in one file) convert one-to-one. See ``layers/threshold_graph.py``.
"""
from functools import partial

from .errors import ModelError
from .layers import threshold_specs
from .registry import default_cfg, register_model
from .vig import VisionGNN

START_THRESH, DEC = 0.89, 0.03  # the best published setting (74.6% top-1, plain weights)
ARCHS = {"svig_ti_224_gelu": dict(channels=192, depth=12)}
KNN_OPTIONS = ("k", "stochastic", "epsilon")

# The official checkpoint of the default setting (0.89 / 0.03, its plain weights give 74.6%), a Git LFS file
# of the official repository at a fixed commit, with the SHA-256 and size its LFS pointer records.
RELEASES = {"svig_ti_224_gelu": dict(
    url="https://github.com/IsmaelElsharkawi/SViG/raw/e19f06ef199dbbe9ce6da6be1bd369d65cccd64c/"
        "SViG%20Model%20Checkpoints/_0_89_0_03_checkpoint-304.pth.tar",
    sha256="8380c0ab89824cb47a92db52d25143cbc66ef51a24fb1f776684c99b60d31ddc", num_bytes=115_820_289)}


def _build(arch: str, start_thresh: float = START_THRESH, dec: float = DEC, conv: str = "mr", **kwargs) -> VisionGNN:
    """The arch with threshold graphs p_i = start_thresh - dec * i; other arguments go to ``VisionGNN``."""
    spec = ARCHS[arch]
    for name in KNN_OPTIONS:
        if name in kwargs:
            raise ModelError(f"{arch} builds a similarity-threshold graph: the kNN option {name!r} does not apply "
                             "(set start_thresh and dec instead)")
    if conv != "mr":
        raise ModelError(f"{arch} aggregates its similarity-threshold graph with the max-relative conv: "
                         f"use conv 'mr', not {conv!r}")
    return VisionGNN(spec["channels"], threshold_specs(start_thresh, dec, spec["depth"]), **kwargs)


for _name in ARCHS:
    register_model(_name, partial(_build, _name), default_cfg(graph="threshold", **RELEASES[_name]))
