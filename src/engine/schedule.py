"""Per-update learning-rate arrays (the optimizer indexes them by its global step)."""
import math

import numpy as np

from ..choices import COSINE_STYLES, SCHEDULERS


def create_lr_schedule(name: str, base_lr: float, steps_per_epoch: int, epochs: int, warmup_length: int = 0,
                       warmup_lr: float = 0.0, min_lr: float = 0.0, cooldown_epochs: int = 0,
                       cosine_style: str = "timm", lr_gamma: float = 0.97, lr_adjust: float = 30.0) -> np.ndarray:
    """Learning rate of every step of ``epochs + cooldown_epochs`` epochs (a step is one optimizer update).

    Warm-up rises linearly from ``warmup_lr`` towards ``base_lr`` over ``warmup_length`` epochs, then:

    * ``cosine_lr``, ``cosine_style`` 'timm' (the official recipe, evaluated per step):
      min_lr + (base_lr - min_lr)(1 + cos(pi t / T)) / 2 with t the step and T = epochs * steps_per_epoch;
      'modelzoo' (the MindSpore ModelZoo's): base_lr (1 + cos(pi (t - W) / (T - W))) / 2 after the W warm-up
      steps, never below ``min_lr``;
    * ``constant_lr``: base_lr;
    * ``exp_lr`` (ModelZoo): base_lr * lr_gamma ** epoch, never below ``min_lr``;
    * ``multistep_lr`` (ModelZoo, no warm-up): base_lr * lr_gamma ** (epoch / lr_adjust), never below ``min_lr``;

    with epoch fractional (t / steps_per_epoch). Every rule but timm's cosine is the ModelZoo's, which floors the
    whole schedule at ``min_lr``, its warm-up included (a warmup_lr below min_lr starts at min_lr). The
    ``cooldown_epochs`` after ``epochs`` stay at the last rule's floor (min_lr; base_lr for constant_lr).
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown lr_scheduler {name!r}; choose one of {SCHEDULERS}")
    if cosine_style not in COSINE_STYLES:
        raise ValueError(f"unknown cosine_style {cosine_style!r}; choose one of {COSINE_STYLES}")
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError("the learning-rate schedule needs at least one epoch of at least one step")
    total = epochs * steps_per_epoch
    warmup = 0 if name == "multistep_lr" else warmup_length * steps_per_epoch
    lrs = np.empty(total + cooldown_epochs * steps_per_epoch, np.float64)
    for t in range(total):
        epoch = t / steps_per_epoch
        if t < warmup:
            lrs[t] = warmup_lr + t * (base_lr - warmup_lr) / warmup
        elif name == "cosine_lr" and cosine_style == "timm":
            lrs[t] = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t / total))
        elif name == "cosine_lr":
            lrs[t] = max(0.5 * base_lr * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))), min_lr)
        elif name == "exp_lr":
            lrs[t] = max(base_lr * lr_gamma ** epoch, min_lr)
        elif name == "multistep_lr":
            lrs[t] = max(base_lr * lr_gamma ** (epoch / lr_adjust), min_lr)
        else:
            lrs[t] = base_lr
    if not (name == "cosine_lr" and cosine_style == "timm"):
        lrs[:total] = np.maximum(lrs[:total], min_lr)
    lrs[total:] = base_lr if name == "constant_lr" else min_lr
    return lrs.astype(np.float32)
