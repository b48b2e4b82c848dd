"""Top-1 / top-5 / loss over a dataset; distributed runs sum the counts over ranks."""
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from ..data import DatasetError
from ..data.dataset import batches
from ..utils.metrics import cross_entropy_sum, topk_correct


def evaluate(net: nn.Cell, dataset, distributed: bool = False,
             columns: Optional[Sequence[int]] = None) -> Dict[str, float]:
    """Run ``net`` (eval mode) over ``dataset`` (columns image, integer label; label -1 marks an
    unreadable image, which is left out; none left is a DatasetError). ``columns``: the output of ``net``
    that scores each dataset label (the same classes in another order), if not the identity."""
    net.set_train(False)
    totals = np.zeros(4, np.float64)  # top-1 hits, top-5 hits, loss sum, samples
    for images, labels in batches(dataset):
        logits = net(images).asnumpy().astype(np.float64)
        if columns is not None:
            logits = logits[:, columns]
        labels = labels.asnumpy().astype(np.int64)
        keep = labels >= 0
        logits, labels = logits[keep], labels[keep]
        hits = topk_correct(logits, labels)
        totals += (hits[1], hits[5], cross_entropy_sum(logits, labels), len(labels))
    if distributed:
        totals = ops.AllReduce()(Tensor(totals, ms.float32)).asnumpy().astype(np.float64)
    count = totals[3]
    if count == 0:
        raise DatasetError("no image could be evaluated: every image of the validation split was skipped as "
                           "unreadable (each is named in a warning); replace them, or point data_url at readable "
                           "images")
    return {"top1": 100.0 * totals[0] / count, "top5": 100.0 * totals[1] / count,
            "loss": totals[2] / count, "count": int(count)}


def copy_weights(dst: nn.Cell, source: Mapping[str, ms.Parameter], prefix: str = "",
                 fallback: Optional[Mapping[str, ms.Parameter]] = None) -> None:
    """dst's parameters <- ``source[prefix + name]`` (or ``fallback[name]`` where the source has none)."""
    for param in dst.get_parameters():
        value = source.get(prefix + param.name)
        if value is None and fallback is not None:
            value = fallback[param.name]
        param.set_data(Tensor(value.asnumpy()))
