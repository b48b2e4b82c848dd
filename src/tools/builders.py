"""What the entry points build from a configuration: the data root, the model, the datasets."""
import os
import time

from mindspore import nn

from ..config import Config
from ..data import create_dataset, write_digits_dataset
from ..models import create_model, model_cfg, resolve_kernel_impl


def prepare_data(cfg: Config, rank: int) -> str:
    """The dataset root; the bundled digits are written there first when ``set`` is 'digits'."""
    if cfg.set == "digits":
        marker = os.path.join(cfg.data_url, "val")
        if rank == 0:
            write_digits_dataset(cfg.data_url, image_size=cfg.image_size, seed=cfg.seed)
        else:  # other ranks wait for rank 0's tree
            deadline = time.time() + 600
            while not os.path.isdir(marker) and time.time() < deadline:
                time.sleep(1)
    return cfg.data_url


def model_from_config(cfg: Config, training: bool = False, kernel_impl=None) -> nn.Cell:
    """The configured model; drop path only when ``training``. The formulation is ``kernel_impl`` if
    given, else the configured one ('auto': by ``device_target``)."""
    return create_model(cfg.arch, num_classes=cfg.num_classes, img_size=cfg.image_size, drop_rate=cfg.drop_rate,
                        drop_path_rate=cfg.drop_path_rate if training else 0.0,
                        kernel_impl=kernel_impl or resolve_kernel_impl(cfg.kernel_impl, cfg.device_target))


def eval_transform_args(cfg: Config) -> dict:
    """The model's evaluation preprocessing: mean/std, bicubic resize to image_size / crop_pct, centre crop."""
    defaults = model_cfg(cfg.arch)
    return dict(image_size=cfg.image_size, mean=defaults["mean"], std=defaults["std"],
                crop_pct=cfg.crop_pct or defaults["crop_pct"])


def train_dataset_args(cfg: Config) -> dict:
    """Keyword arguments of ``create_dataset`` for training (augmentation and mixing from the config)."""
    return dict(eval_transform_args(cfg), batch_size=cfg.batch_size, num_parallel_workers=cfg.num_parallel_workers,
                num_classes=cfg.num_classes, seed=cfg.seed, repeated_aug=cfg.repeated_aug,
                interpolation=cfg.interpolation, scale=cfg.crop_scale, hflip=cfg.hflip,
                auto_augment=cfg.auto_augment, color_jitter=cfg.color_jitter, re_prob=cfg.re_prob,
                re_mode=cfg.re_mode, re_count=cfg.re_count, mix_up=cfg.mix_up, cutmix=cfg.cutmix,
                mixup_prob=cfg.mixup_prob, switch_prob=cfg.switch_prob, mixup_mode=cfg.mixup_mode,
                label_smoothing=cfg.label_smoothing)


def eval_dataset(cfg: Config, root: str, rank: int = 0, world: int = 1):
    """Batched validation split (this rank's shard)."""
    return create_dataset(root, "val", is_training=False, batch_size=cfg.batch_size,
                          num_parallel_workers=cfg.num_parallel_workers, num_classes=cfg.num_classes,
                          num_shards=world, shard_id=rank, **eval_transform_args(cfg))
