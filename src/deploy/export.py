"""Export the inference network: MINDIR (any device), AIR (Ascend only), ONNX.

The network is built in its export formulation (``export_formulation``): MindSpore's own operators
by default, since an export is meant for the device that runs it (Ascend 310, or onnxruntime);
``kernel_impl: cpu`` gives a MINDIR tuned for MindSpore on the CPU. No export holds the compiled CPU
kernels, whose library exists only in this host's cache. For ONNX, exact GELU is written with basic
ops (MindSpore's converter has no Erf) and each such erf is then turned into one Erf node (``onnx_graph``).

The file is written under a temporary name beside its final one (``utils.files``) and renamed;
an export interrupted before (a kill, a full disk) left such a temporary, which the next export
into the folder removes once its process is gone.
"""
import os
from typing import Tuple, Union

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from ..choices import EXTENSIONS
from ..models import fold_batch_norms
from ..models.base import to_2tuple
from ..utils.files import atomic_path, check_free_space, check_writable, remove_stale_temporaries
from .errors import DeployError
from .onnx_graph import optimize_onnx_file

INPUT_NAME, OUTPUT_NAME = "image", "logits"


def export_network(net: nn.Cell, file_format: str, file_name: str, batch_size: int,
                   image_size: Union[int, Tuple[int, int]], fold_batch_norm: bool = False) -> str:
    """Write ``net`` (built in its export formulation) for a (batch_size, 3, image_size, image_size)
    float32 input (or (batch_size, 3, height, width) for a pair); returns the file path. ``fold_batch_norm``
    (the export formulation's): each BatchNorm after a convolution is folded into it first (``net`` changes).

    The folder must be writable with room for the weights (checked first); the file is written under a
    temporary name and renamed, and an existing file is never replaced.
    """
    if file_format not in EXTENSIONS:
        raise DeployError(f"file_format must be one of {sorted(EXTENSIONS)}, got {file_format!r}")
    if file_format == "AIR" and ms.get_context("device_target") != "Ascend":
        raise DeployError("AIR export needs the Ascend backend (MindSpore writes AIR only with device_target "
                          "Ascend); run on an Ascend host with --device_target Ascend, or export MINDIR/ONNX here")
    path = os.path.abspath(file_name + EXTENSIONS[file_format])
    if os.path.exists(path):
        raise DeployError(f"{path} already exists; choose another --file_name or move the old file")
    folder = os.path.dirname(path)
    check_writable(folder, "export folder", "file_name")
    remove_stale_temporaries(folder, [ext[1:] for ext in EXTENSIONS.values()])
    check_free_space(folder, sum(p.nbytes for p in net.get_parameters()), "export folder", "file_name",
                     f"the {file_format} file")
    height, width = to_2tuple(image_size)
    dummy = Tensor(np.zeros((batch_size, 3, height, width), np.float32))
    if fold_batch_norm:
        fold_batch_norms(net)
    net.set_train(False)
    try:
        with atomic_path(path) as tmp:
            if file_format == "ONNX":
                ms.onnx.export(net, dummy, file_name=tmp, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
                optimize_onnx_file(tmp)
            else:  # MindSpore's exporter adds the extension
                ms.export(net, dummy, file_name=tmp[:-len(EXTENSIONS[file_format])], file_format=file_format)
    except OSError as err:
        raise DeployError(f"cannot write {path} ({err.strerror or err}); nothing was written under that name") from None
    return path
