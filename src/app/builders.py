"""Objects built from a configuration: the data root, the model, the datasets, the optimisation step."""
import os
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

from mindspore import nn

from .config import COMMAND_LINE, OPTIONS, Config, ConfigError, read_yaml
from ..data import (DatasetError, DatasetParams, EvalTransformParams, MixParams, TrainTransformParams, class_names,
                    find_digits_dataset, write_digits_dataset)
from ..data.dataset import create_dataset
from ..data.digits import MARKER as DIGITS_MARKER
from ..data.files import imagenet_class_names
from ..engine.loss import create_loss
from ..engine.optim import create_optimizer
from ..engine.schedule import create_lr_schedule
from ..engine.train_step import build_train_step, create_loss_scale, mixed_precision
from ..models import canonical_name, create_model, model_cfg, resolve_kernel_impl
from ..utils.processes import wait_until
from ..weights.checkpoint import read_checkpoint, stored_data

DIGITS_WAIT_SECONDS = 600


def prepare_data(cfg: Config, rank: int, wait_seconds: float = DIGITS_WAIT_SECONDS) -> str:
    """The dataset root; the bundled digits are written there first when ``set`` is 'digits' (by rank 0;
    the other ranks wait for its finished tree, say so if it never comes, and stop at once on a folder
    the digits may not go to)."""
    def written() -> bool:
        return find_digits_dataset(cfg.data_url, image_size=cfg.image_size, seed=cfg.seed) is not None

    if cfg.set == "digits":
        if rank == 0:
            write_digits_dataset(cfg.data_url, image_size=cfg.image_size, seed=cfg.seed)
        elif not wait_until(written, wait_seconds):
            raise DatasetError(f"rank {rank} waited {wait_seconds:.0f} s for rank 0 to write the digits dataset to "
                               f"{cfg.data_url!r} ({DIGITS_MARKER} never appeared); check rank 0's log, or write the "
                               f"data first with set: digits on one process")
    return cfg.data_url


def kernel_impl(cfg: Config) -> str:
    """The model formulation for this run's device ('auto': CPU formulations on the CPU, native elsewhere).
    The CPU formulations (compiled C++ kernels among them) exist for the CPU only: never on Ascend or GPU."""
    if cfg.kernel_impl == "cpu" and cfg.device_target != "CPU":
        raise ConfigError(f"kernel_impl 'cpu' runs compiled CPU kernels, which cannot run on {cfg.device_target}; "
                          f"use kernel_impl auto or native")
    return resolve_kernel_impl(cfg.kernel_impl, cfg.device_target)


def graph_options(cfg: Config) -> dict:
    """The graph options set in ``cfg``, as model arguments; the model keeps its own for the others.

    A kNN model takes conv, k, use_stochastic, epsilon; a similarity-threshold model (SViG) takes conv,
    start_thresh, dec. Setting one the model does not take is an error.
    """
    given = {"conv": ("conv", cfg.conv), "k": ("k", cfg.k), "use_stochastic": ("stochastic", cfg.use_stochastic),
             "epsilon": ("epsilon", cfg.epsilon), "start_thresh": ("start_thresh", cfg.start_thresh),
             "dec": ("dec", cfg.dec)}
    graph = model_cfg(cfg.arch)["graph"]
    taken = ("conv", "k", "use_stochastic", "epsilon") if graph == "knn" else ("conv", "start_thresh", "dec")
    stray = [key for key, (_, value) in given.items() if value is not None and key not in taken]
    if stray:
        raise ConfigError(f"{cfg.arch} builds a {'kNN' if graph == 'knn' else 'similarity-threshold'} graph, which "
                          f"does not take {', '.join(stray)}; its graph options are {', '.join(taken)}")
    return {name: value for key, (name, value) in given.items() if value is not None}


def model_from_config(cfg: Config, training: bool = False, impl=None, reads_images: bool = True) -> nn.Cell:
    """The configured model; drop path, dropout and the fine-tuning freezes (frozen_stages, norm_eval) only
    when ``training``. ``impl`` (a kernel_impl name or a Formulation) overrides the configured formulation.
    A model that ``reads_images`` through the project's pipeline (all but an export) takes RGB: in_channel 3."""
    if cfg.mlp_ratio != 4.0:
        raise ConfigError(f"mlp_ratio {cfg.mlp_ratio} cannot be honoured: the ViG architectures (official and "
                          f"ModelZoo alike) fix the FFN ratio at 4, another ratio is another architecture")
    if reads_images and cfg.in_channel != 3:
        raise ConfigError(f"in_channel {cfg.in_channel}: the image pipeline decodes RGB images, so models that read "
                          f"images take in_channel 3 (other values only for export)")
    return create_model(cfg.arch, num_classes=cfg.num_classes, img_size=cfg.image_size, in_channels=cfg.in_channel,
                        drop_rate=cfg.drop_rate if training else 0.0,
                        drop_path_rate=cfg.drop_path_rate if training else 0.0,
                        frozen_stages=cfg.frozen_stages if training else 0, norm_eval=training and cfg.norm_eval,
                        kernel_impl=impl or kernel_impl(cfg), **graph_options(cfg))


def inference_net(cfg: Config, net: nn.Cell) -> nn.Cell:
    """``net`` at the evaluation precision (``eval_amp_level``, float32 unless asked)."""
    return mixed_precision(net, cfg.eval_amp_level, cfg.keep_bn_fp32)


# The evaluation transform's config keys, and the names of the same settings in a model's default cfg.
TRANSFORM_KEYS = {"image_size": "input_size", "mean": "mean", "std": "std", "crop_pct": "crop_pct"}


def resolve_transform(cfg: Config, checkpoint: Optional[str] = None) -> Tuple[Config, Dict[str, str]]:
    """``cfg`` with the evaluation transform's keys (image_size, mean, std, crop_pct) resolved, and where each
    value came from. The one rule, key by key, first match wins:

    1. the command line;
    2. the config file or one of its bases, where it writes the key (``crop_pct: null`` reads as not written);
    3. the checkpoint's record (``meta.data``: what its weights were trained or converted for);
    4. with a config file, the ModelZoo's value (a key absent from a file takes the ModelZoo's, so a ModelZoo
       YAML trains and evaluates the ModelZoo recipe); without one, the model's own default cfg (as timm's
       ``resolve_data_config``), e.g. mean = std = 0.5 and crop 0.9 for the official ViG weights.
    """
    given = {key: cfg.origins[key] for key in TRANSFORM_KEYS
             if cfg.origins.get(key) == COMMAND_LINE or (key in cfg.origins and cfg[key] is not None)}
    recorded = {}
    if checkpoint and len(given) < len(TRANSFORM_KEYS):  # the record is read only when it can matter
        recorded = stored_data(read_checkpoint(checkpoint, meta_only=True)) or {}
    defaults = model_cfg(cfg.arch)
    resolved, sources = {}, {}
    for key, cfg_name in TRANSFORM_KEYS.items():
        if key in given:
            sources[key] = given[key]
        elif key in recorded:
            value = recorded[key]
            resolved[key] = tuple(value) if isinstance(value, list) else value
            sources[key] = checkpoint
        elif cfg.file and key not in cfg.origins:
            sources[key] = OPTIONS[key].origin
        else:
            resolved[key] = defaults[cfg_name]
            sources[key] = f"{canonical_name(cfg.arch)} default cfg"
    return cfg.replace(**resolved), sources


def describe_transform(cfg: Config, sources: Dict[str, str]) -> str:
    """The evaluation transform in one line, with where each value came from."""
    def shown(value):
        return ",".join(f"{v:g}" for v in value) if isinstance(value, (list, tuple)) else f"{value:g}"
    return ", ".join(f"{key} {shown(cfg[key])} ({sources[key]})" for key in TRANSFORM_KEYS)


def eval_transform(cfg: Config) -> EvalTransformParams:
    """The evaluation preprocessing: mean/std, bicubic resize to image_size / crop_pct, centre crop (the keys as
    ``resolve_transform`` resolved them; a crop_pct left null is the model's default)."""
    return EvalTransformParams(image_size=cfg.image_size, mean=cfg.mean, std=cfg.std,
                               crop_pct=cfg.crop_pct or model_cfg(cfg.arch)["crop_pct"])


def train_transform(cfg: Config) -> TrainTransformParams:
    """Training's random steps (crop, flip, RandAugment or colour jitter, random erasing)."""
    return TrainTransformParams(interpolation=cfg.interpolation, crop_scale=cfg.crop_scale, hflip=cfg.hflip,
                                auto_augment=cfg.auto_augment, color_jitter=cfg.color_jitter, re_prob=cfg.re_prob,
                                re_mode=cfg.re_mode, re_count=cfg.re_count)


def mix_params(cfg: Config) -> MixParams:
    """Mixup/cutmix and label smoothing: the training batches' targets and the loss that reads them."""
    return MixParams(mix_up=cfg.mix_up, cutmix=cfg.cutmix, mixup_prob=cfg.mixup_prob, switch_prob=cfg.switch_prob,
                     mixup_mode=cfg.mixup_mode, label_smoothing=cfg.label_smoothing)


def image_policy(cfg: Config) -> DatasetParams:
    """What every reader of images does with unreadable and oversized ones (preprocess.py reads no other setting)."""
    return DatasetParams(max_bad_image_fraction=cfg.max_bad_image_fraction, max_image_pixels=cfg.max_image_pixels)


def dataset_params(cfg: Config, training: bool) -> DatasetParams:
    """How a pipeline reads a split: workers, unreadable and oversized images, and for ``training`` repeated
    augmentation."""
    return replace(image_policy(cfg), num_parallel_workers=cfg.num_parallel_workers,
                   repeated_aug=cfg.repeated_aug if training else DatasetParams.repeated_aug)


def data_record(cfg: Config, root: Optional[str] = None, split: str = "train") -> dict:
    """What a checkpoint records about the data its weights are for (``meta.data``): the evaluation
    transform and, given a dataset root, the class names of ``split`` in label order."""
    record = eval_transform(cfg).record()
    if root is not None:
        record["classes"] = class_names(root, split)
    return record


def prediction_class_names(cfg: Config, checkpoint: str) -> Tuple[List[str], str]:
    """Names of the model's classes and where they come from: the class list the checkpoint records
    (``meta.data``), else the training run's ``config.yaml`` beside it (its dataset's class folders), else
    ImageNet-1k's for 1000 classes (converted official weights), else 'class <i>'."""
    recorded = (stored_data(read_checkpoint(checkpoint, meta_only=True)) or {}).get("classes")
    if recorded and len(recorded) == cfg.num_classes:
        return list(recorded), f"the class list recorded in {checkpoint}"
    run_config = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "config.yaml")
    if os.path.isfile(run_config):
        try:
            data_url = read_yaml(run_config).get("data_url")
            names = class_names(data_url, "train") if data_url else []
        except (ConfigError, DatasetError, OSError):
            names = []
        if len(names) == cfg.num_classes:
            return names, f"the class folders of {data_url}/train ({run_config})"
    if cfg.num_classes == 1000:
        return imagenet_class_names(), "ImageNet-1k"
    return [f"class {i}" for i in range(cfg.num_classes)], "class indices (no class names found)"


def train_dataset(cfg: Config, root: str, epoch: int, rank: int = 0, world: int = 1):
    """This rank's training pipeline of ``epoch`` (order and augmentation seeded by (seed, epoch))."""
    return create_dataset(root, "train", eval_transform(cfg), batch_size=cfg.batch_size, augment=train_transform(cfg),
                          mix=mix_params(cfg), options=dataset_params(cfg, training=True), num_classes=cfg.num_classes,
                          num_shards=world, shard_id=rank, seed=cfg.seed, epoch=epoch)


def eval_dataset(cfg: Config, root: str, rank: int = 0, world: int = 1):
    """Batched validation split (this rank's shard)."""
    return create_dataset(root, "val", eval_transform(cfg), batch_size=cfg.batch_size,
                          options=dataset_params(cfg, training=False),
                          num_classes=cfg.num_classes, num_shards=world, shard_id=rank)


MAX_SCHEDULE_UPDATES = 10 ** 8  # the schedule holds a learning rate per update in memory (float32: 400 MB)


def learning_rates(cfg: Config, updates_per_epoch: int, world: int, log=None):
    """The learning rate of every optimizer update (at most ``MAX_SCHEDULE_UPDATES``). With ``lr_batch_size``
    the whole schedule (base_lr, warmup_lr, min_lr) is scaled by the total batch of an update over
    lr_batch_size, as the ModelZoo scales it by total / 512."""
    updates = (cfg.epochs + cfg.cooldown_epochs) * updates_per_epoch
    if updates > MAX_SCHEDULE_UPDATES:
        raise ConfigError(f"{cfg.epochs + cfg.cooldown_epochs} epochs (epochs + cooldown_epochs) of "
                          f"{updates_per_epoch} updates make {updates:,} optimizer updates, more than the "
                          f"{MAX_SCHEDULE_UPDATES:,} a learning-rate schedule may hold; lower epochs, or raise "
                          "batch_size or accumulation_step")
    total = cfg.batch_size * world * cfg.accumulation_step
    factor = total / cfg.lr_batch_size if cfg.lr_batch_size else 1.0
    if log and cfg.lr_batch_size:
        log.info("learning rates x %.4g: total batch %d (%d ranks x batch %d x accumulation %d) / lr_batch_size %d",
                 factor, total, world, cfg.batch_size, cfg.accumulation_step, cfg.lr_batch_size)
    return create_lr_schedule(cfg.lr_scheduler, cfg.base_lr * factor, updates_per_epoch, cfg.epochs,
                              cfg.warmup_length, cfg.warmup_lr * factor, cfg.min_lr * factor, cfg.cooldown_epochs,
                              cosine_style=cfg.cosine_style, lr_gamma=cfg.lr_gamma, lr_adjust=cfg.lr_adjust)


def loss_fn(cfg: Config) -> nn.Cell:
    """The training loss, for the labels ``train_dataset`` yields (``MixParams.soft_labels`` decides both)."""
    mix = mix_params(cfg)
    return create_loss(mix.label_smoothing, mix.soft_labels)


def train_step(cfg: Config, model: nn.Cell, lrs):
    """Optimizer, loss, loss scale, clipping and EMA around ``model``: the configured ``TrainOneStep``."""
    optimizer = create_optimizer(model.trainable_params(), cfg.optimizer, lrs, cfg.weight_decay, cfg.beta, cfg.eps,
                                 cfg.momentum)
    return build_train_step(model, optimizer, cfg.amp_level, loss_fn(cfg),
                            create_loss_scale(cfg.is_dynamic_loss_scale, cfg.loss_scale, cfg.loss_scale_window),
                            clip_norm=cfg.clip_global_norm_value, ema_decay=cfg.ema_decay,
                            keep_bn_fp32=cfg.keep_bn_fp32, accumulation=cfg.accumulation_step)
