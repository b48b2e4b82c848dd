"""Classification metrics on host arrays (shared by evaluation and the offline flow)."""
from typing import Dict

import numpy as np


def topk_correct(logits: np.ndarray, labels: np.ndarray, ks=(1, 5)) -> Dict[int, int]:
    """Number of samples whose label is among the k highest logits (ties broken by index)."""
    order = np.argsort(-logits, axis=1, kind="stable")
    hits = order == labels[:, None]
    return {k: int(hits[:, :k].any(axis=1).sum()) for k in ks}


def cross_entropy_sum(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].sum())
