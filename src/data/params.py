"""The data pipeline's settings as small frozen objects, with the pipeline's defaults.

``EvalTransformParams``: the evaluation transform (training shares its image_size, mean and std);
``TrainTransformParams``: training's random steps; ``MixParams``: mixup/cutmix and the targets they
make; ``DatasetParams``: how a split's files are read. The defaults are the ModelZoo ViG recipe's
(research/cv/ViG: ``src/configs/vig_s_patch16_224.yaml``, ``src/data/imagenet.py``), written here once:
the run configuration (``src/app/config.py``) takes its defaults for the keys of the same names from
here, as what a key absent from a config file means. A model's own evaluation settings (the official
mean/std and crop) are its default cfg (``src/models/registry.py``); which of the two an evaluation
uses is decided in one place, ``src/app/builders.py:resolve_transform``.
Values are checked where they are used (``create_transforms``, ``Mixup``, ``create_dataset``).
"""
from dataclasses import dataclass
from typing import Optional, Tuple

from .mixup import MIX_MODES

__all__ = ["EvalTransformParams", "TrainTransformParams", "MixParams", "DatasetParams", "DEFAULT_MAX_IMAGE_PIXELS"]

# Pillow's default decompression-bomb limit (it refuses images above 2 * Image.MAX_IMAGE_PIXELS).
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970


@dataclass(frozen=True)
class EvalTransformParams:
    """Evaluation: bicubic resize of the shorter side to floor(image_size / crop_pct), centre crop of
    image_size, (x / 255 - mean) / std. A checkpoint records these as the transform its weights are for."""
    image_size: int = 224
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet's
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875

    def record(self) -> dict:
        """As checkpoints (``meta.data``) and preprocess.py's labels.json store it."""
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "crop_pct": self.crop_pct}


@dataclass(frozen=True)
class TrainTransformParams:
    """Training's random steps (timm ``transforms_imagenet_train``): a random resized crop of crop_scale
    area and crop_ratio aspect, a horizontal flip, RandAugment (auto_augment; null: colour jitter of
    color_jitter instead), random erasing (re_*). ``interpolation`` serves the crop and RandAugment."""
    interpolation: str = "bicubic"
    crop_scale: Tuple[float, float] = (0.08, 1.0)
    crop_ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    auto_augment: Optional[str] = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.4
    re_prob: float = 0.25
    re_mode: str = "pixel"
    re_count: int = 1


@dataclass(frozen=True)
class MixParams:
    """Mixup (alpha ``mix_up``) and CutMix (alpha ``cutmix``) of training batches, and label smoothing,
    which the mixed targets carry when ``soft_labels`` and the loss applies otherwise."""
    mix_up: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    switch_prob: float = 0.5
    mixup_mode: str = "batch"
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if self.mixup_mode not in MIX_MODES:
            raise ValueError(f"unknown mixup mode {self.mixup_mode!r}; expected one of {MIX_MODES}")

    @property
    def soft_labels(self) -> bool:
        """Whether training labels are mixed one-hot targets (float32 (B, C), smoothing included) rather
        than class indices: the pipeline and the loss both follow this one decision."""
        return self.mix_up > 0 or self.cutmix > 0


@dataclass(frozen=True)
class DatasetParams:
    """Reading a split: ``num_parallel_workers`` decoding workers; ``repeated_aug`` copies of each training
    image per epoch (0 or 1: off); unreadable images are skipped, and more than ``max_bad_image_fraction``
    of them stop the run; images of more than ``max_image_pixels`` pixels count as unreadable."""
    num_parallel_workers: int = 8
    repeated_aug: int = 0
    max_bad_image_fraction: float = 0.001
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
