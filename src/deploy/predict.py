"""Classify image files: the top-k classes of each readable file, a reason for each unreadable one.

Every file goes through the evaluation transform (the project's one decoder: grey, palette, RGBA,
CMYK and 16-bit images become RGB, damaged files are refused with the reason), readable ones are
batched through the network, and the softmax probabilities give the top k. A file that cannot be
read never stops the others.
"""
from typing import Callable, List, Sequence

import numpy as np
from mindspore import Tensor, nn

from ..data.transforms import UndecodableImage


def _read(path: str, transform: Callable[[bytes], np.ndarray]) -> np.ndarray:
    with open(path, "rb") as handle:
        return transform(handle.read())


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def classify_files(net: nn.Cell, paths: Sequence[str], transform: Callable[[bytes], np.ndarray],
                   class_names: Sequence[str], topk: int = 5, batch_size: int = 8) -> List[dict]:
    """One result per path, in order: {"file", "top": [{"class", "name", "probability"}, ...]} or
    {"file", "error"}. Batches keep one shape (the last is padded), so a compiled network compiles once."""
    results: List[dict] = [{"file": path} for path in paths]
    inputs = {}
    for index, path in enumerate(paths):
        try:
            inputs[index] = _read(path, transform)
        except UndecodableImage as err:
            results[index]["error"] = str(err)
        except OSError as err:
            results[index]["error"] = f"cannot be read ({err.strerror or err})"
    readable = sorted(inputs)
    if not readable:
        return results
    batch_size = min(batch_size, len(readable))
    k = min(topk, len(class_names))
    net.set_train(False)
    for start in range(0, len(readable), batch_size):
        chunk = readable[start:start + batch_size]
        batch = np.stack([inputs[i] for i in chunk] + [inputs[chunk[0]]] * (batch_size - len(chunk)))
        probs = softmax(net(Tensor(batch)).asnumpy().astype(np.float64))[:len(chunk)]
        for index, row in zip(chunk, probs):
            order = np.argsort(-row, kind="stable")[:k]
            results[index]["top"] = [{"class": int(c), "name": class_names[c], "probability": float(row[c])}
                                     for c in order]
    return results
