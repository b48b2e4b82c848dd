"""Config -> the data package's parameter objects: one definition of each default, every key reaching its
object, and one decision for soft labels that the training pipeline and the loss both follow."""
from dataclasses import fields

import numpy as np
import pytest
from mindspore import Tensor

from src.app.builders import dataset_params, eval_transform, loss_fn, mix_params, train_dataset, train_transform
from src.app.config import OPTIONS, load_config
from src.data import DatasetParams, EvalTransformParams, MixParams, TrainTransformParams
from src.data.dataset import batches
from src.data.mixup import one_hot_smoothed

BUILDERS = (eval_transform, train_transform, mix_params, lambda cfg: dataset_params(cfg, training=True))
KINDS = (EvalTransformParams, TrainTransformParams, MixParams, DatasetParams)


def _objects(cfg):
    return [build(cfg) for build in BUILDERS]


def test_a_config_without_data_keys_builds_the_default_objects():
    """The schema's defaults for these keys are the objects' own (the ModelZoo recipe's)."""
    cfg = load_config(["--arch", "vig_ti_224_gelu"])
    assert _objects(cfg) == [kind() for kind in KINDS]
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.crop_pct == 0.875 and cfg.re_prob == 0.25
    assert cfg.auto_augment == "rand-m9-mstd0.5-inc1" and (cfg.mix_up, cfg.cutmix) == (0.8, 1.0)


def test_every_data_key_reaches_its_object():
    changed = {"image_size": "64", "mean": "0.4,0.4,0.4", "std": "0.3,0.3,0.3", "crop_pct": "0.95",
               "interpolation": "random", "crop_scale": "0.5,0.9", "hflip": "0.1", "auto_augment": "rand-m5",
               "color_jitter": "0.2", "re_prob": "0.5", "re_mode": "const", "re_count": "2", "mix_up": "0.3",
               "cutmix": "0.4", "mixup_prob": "0.6", "switch_prob": "0.7", "mixup_mode": "pair",
               "label_smoothing": "0.2", "num_parallel_workers": "3", "repeated_aug": "2",
               "max_bad_image_fraction": "0.01", "max_image_pixels": "1000"}
    cfg = load_config(["--arch", "vig_ti_224_gelu"] + [token for key, value in changed.items()
                                                       for token in (f"--{key}", value)])
    keyed = []
    for params in _objects(cfg):
        for field in fields(params):
            if field.name in OPTIONS:
                assert getattr(params, field.name) == cfg[field.name] != field.default, field.name
                keyed.append(field.name)
    assert sorted(keyed) == sorted(changed)
    # the only field without a config key: the crop's aspect range, the recipe's (3/4, 4/3) always
    assert [f.name for kind in KINDS for f in fields(kind) if f.name not in OPTIONS] == ["crop_ratio"]


@pytest.mark.parametrize("flags, soft", [
    (["--mix_up", "0", "--cutmix", "1.0"], True),  # cutmix alone mixes
    (["--mix_up", "0.8", "--cutmix", "0"], True),
    (["--mix_up", "0", "--cutmix", "0", "--label_smoothing", "0"], False),
    (["--mix_up", "0", "--cutmix", "0", "--label_smoothing", "0.1"], False),  # smoothing alone: the loss's
])
def test_the_pipeline_and_the_loss_agree_on_soft_labels(image_folder, flags, soft):
    cfg = load_config(["--arch", "vig_nano_gelu", "--image_size", "32", "--num_classes", "3", "--batch_size", "4",
                       "-j", "1", "--auto_augment", "none", "--re_prob", "0"] + flags)
    assert mix_params(cfg).soft_labels is soft
    _, labels = next(batches(train_dataset(cfg, image_folder, epoch=0)))
    labels = labels.asnumpy()
    assert labels.shape == ((4, 3) if soft else (4,))
    # the loss reads those labels as they are meant: smoothed once, by the targets or by the loss
    logits = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    targets = labels if soft else one_hot_smoothed(labels, 3, cfg.label_smoothing)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -(targets * log_probs).sum(1).mean()
    got = float(loss_fn(cfg)(Tensor(logits), Tensor(labels)).asnumpy())
    assert got == pytest.approx(expected, rel=1e-5)
