"""Per-step learning-rate arrays (the optimizer indexes them by its global step)."""
import math

import numpy as np

SCHEDULERS = ("cosine_lr", "constant_lr")


def create_lr_schedule(name: str, base_lr: float, steps_per_epoch: int, epochs: int, warmup_length: int = 0,
                       warmup_lr: float = 0.0, min_lr: float = 0.0, cooldown_epochs: int = 0) -> np.ndarray:
    """Learning rate of every step of ``epochs + cooldown_epochs`` epochs.

    Warm-up rises linearly from ``warmup_lr`` towards ``base_lr`` over ``warmup_length`` epochs. The cosine
    (timm's rule, evaluated per step) is  min_lr + (base_lr - min_lr)(1 + cos(pi t / T)) / 2  with t the
    step and T = epochs * steps_per_epoch, so it reaches ``min_lr`` at the end of ``epochs``; the
    ``cooldown_epochs`` after it stay at ``min_lr``. ``constant_lr`` keeps ``base_lr`` after warm-up.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown lr_scheduler {name!r}; choose one of {SCHEDULERS}")
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError("the learning-rate schedule needs at least one epoch of at least one step")
    total = epochs * steps_per_epoch
    warmup = warmup_length * steps_per_epoch
    lrs = np.empty(total + cooldown_epochs * steps_per_epoch, np.float64)
    for t in range(total):
        if t < warmup:
            lrs[t] = warmup_lr + t * (base_lr - warmup_lr) / warmup
        elif name == "cosine_lr":
            lrs[t] = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t / total))
        else:
            lrs[t] = base_lr
    lrs[total:] = min_lr if name == "cosine_lr" else base_lr
    return lrs.astype(np.float32)
