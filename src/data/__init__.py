"""Data pipeline: ImageNet-layout folders -> timm 0.3.2-style augmented batches for MindSpore.

Modules: ``params`` (the pipeline's settings and their defaults), ``dataset`` (``create_dataset``,
``batches``), ``files`` (what a split holds, the bad-image policy), ``transforms``
(``create_transforms``), ``staging`` (folders written whole or not at all), ``rand_augment``,
``random_erasing``, ``mixup``, ``samplers``, ``digits`` (demo data), ``rng`` (per-process random
generators for worker processes), ``errors`` (``DatasetError``).

Only ``dataset`` and ``samplers`` import MindSpore; they are imported from their modules
(``from src.data.dataset import create_dataset``), so that the configuration can read the parameters'
defaults through this package without MindSpore.
"""
from .digits import find_digits_dataset, write_digits_dataset
from .errors import DatasetError
from .files import class_names
from .mixup import Mixup, one_hot_smoothed
from .params import DatasetParams, EvalTransformParams, MixParams, TrainTransformParams
from .rand_augment import RandAugment, parse_rand_augment
from .random_erasing import RandomErasing
from .transforms import create_transforms

__all__ = [
    "class_names", "DatasetError", "create_transforms", "write_digits_dataset", "find_digits_dataset", "Mixup",
    "EvalTransformParams", "TrainTransformParams", "MixParams", "DatasetParams", "one_hot_smoothed", "RandAugment",
    "parse_rand_augment", "RandomErasing",
]
