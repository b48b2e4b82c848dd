"""Export the inference network: MINDIR (any device), AIR (Ascend only), ONNX.

The network is built in its export formulation (``export_formulation``): MindSpore's own operators
by default, since an export is meant for the device that runs it (Ascend 310, or onnxruntime);
``kernel_impl: cpu`` gives a MINDIR tuned for MindSpore on the CPU. No export holds the compiled CPU
kernels, whose library exists only in this host's cache. For ONNX, exact GELU is written with basic
ops (MindSpore's converter has no Erf).
"""
import os

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from .errors import DeployError

EXTENSIONS = {"MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}
INPUT_NAME, OUTPUT_NAME = "image", "logits"


def export_network(net: nn.Cell, file_format: str, file_name: str, batch_size: int, image_size: int) -> str:
    """Write ``net`` (built in its export formulation) for a (batch_size, 3, image_size, image_size)
    float32 input; returns the file path.

    The file is written under a temporary name and renamed, and an existing file is never replaced.
    """
    if file_format not in EXTENSIONS:
        raise DeployError(f"file_format must be one of {sorted(EXTENSIONS)}, got {file_format!r}")
    if file_format == "AIR" and ms.get_context("device_target") != "Ascend":
        raise DeployError("AIR export needs the Ascend backend (MindSpore writes AIR only with device_target "
                         "Ascend); run on an Ascend host with --device_target Ascend, or export MINDIR/ONNX here")
    path = os.path.abspath(file_name + EXTENSIONS[file_format])
    if os.path.exists(path):
        raise DeployError(f"{path} already exists; choose another --file_name or move the old file")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(file_name)}.tmp{os.getpid()}")
    dummy = Tensor(np.zeros((batch_size, 3, image_size, image_size), np.float32))
    net.set_train(False)
    try:
        if file_format == "ONNX":
            ms.onnx.export(net, dummy, file_name=tmp + ".onnx", input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
        else:
            ms.export(net, dummy, file_name=tmp, file_format=file_format)
        os.replace(tmp + EXTENSIONS[file_format], path)
    finally:
        if os.path.exists(tmp + EXTENSIONS[file_format]):
            os.remove(tmp + EXTENSIONS[file_format])
    return path
