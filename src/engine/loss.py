"""Classification losses of the recipe (timm semantics)."""
from mindspore import nn


def create_loss(label_smoothing: float, soft_targets: bool) -> nn.Cell:
    """Cross-entropy. With mixup/cutmix the targets arrive as soft labels that already carry the
    smoothing; otherwise integer labels are smoothed here (off = s / C, on = 1 - s + s / C, as timm)."""
    if soft_targets:
        return nn.CrossEntropyLoss()
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
