"""The training job: configuration in, trained checkpoints, logs and curves out.

Per step: ``TrainOneStep`` (loss scale, gradient reduction, overflow skip, clipping, AdamW, EMA).
Per epoch: validation of the model and of its EMA, checkpoints (every ``save_every`` epochs, the
best by validation top-1, and ``last.ckpt``), written atomically by rank 0. A checkpoint holds the
model, the EMA, the training state (optimizer moments and step, loss scale and its counters) and
the run's metadata, so ``resume`` continues with the same learning rate at the same step, the same
moments and the same EMA; each epoch's data order is a function of (seed, epoch).
"""
import glob
import json
import os
import re
import time
from typing import Dict, Optional

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from ..config import Config, save_config
from ..data import batches, create_dataset
from ..tools.checkpoint import (EMA_PREFIX, META_PREFIX, STATE_PREFIX, CheckpointError, check_fits,
                                load_model_weights, model_entries, read_checkpoint, save_checkpoint)
from ..tools.device import init_device
from ..tools.logger import get_logger
from ..tools.loss import create_loss
from ..tools.optim import create_optimizer
from ..tools.plot import plot_training_curves
from ..tools.schedule import create_lr_schedule
from ..tools.builders import eval_dataset, model_from_config, prepare_data, train_dataset_args
from .evaluate import copy_weights, evaluate
from .train_step import TrainOneStep, build_train_step, create_loss_scale

PERIODIC = re.compile(r"epoch_(\d{4,})\.ckpt$")
CLASSIFIER = "prediction.4."


def checkpoint_entries(step: TrainOneStep, model: nn.Cell, meta: Dict[str, float]) -> Dict[str, object]:
    """Model under its own names, EMA under ``ema.``, the rest of the step's state under ``train_state.``."""
    model_names = {p.name for p in model.get_parameters()}
    entries = {}
    for param in step.get_parameters():
        if param.name in model_names or param.name.startswith(EMA_PREFIX):
            entries[param.name] = param
        elif param.name != "learning_rate":  # derived from the configuration
            entries[STATE_PREFIX + param.name] = param
    entries.update({META_PREFIX + k: v for k, v in meta.items()})
    return entries


def restore(step: TrainOneStep, model: nn.Cell, checkpoint: Dict[str, Tensor]) -> Dict[str, float]:
    """Put a checkpoint's model, EMA and training state back into ``step``; returns its metadata."""
    targets = checkpoint_entries(step, model, {})
    missing = [name for name in targets if name not in checkpoint]
    if missing:
        raise CheckpointError(f"cannot resume: the checkpoint lacks {len(missing)} entries of this run "
                              f"(first: {missing[:3]}); is it a checkpoint of another arch or optimizer?")
    check_fits(model, model_entries(checkpoint), "the resume checkpoint")
    for name, param in targets.items():
        value = checkpoint[name]
        if tuple(value.shape) != tuple(param.shape):
            raise CheckpointError(f"cannot resume: {name!r} has shape {tuple(value.shape)} in the checkpoint but "
                                  f"{tuple(param.shape)} in this run")
        param.set_data(Tensor(value.asnumpy(), param.dtype))
    return {k[len(META_PREFIX):]: float(v.asnumpy()) for k, v in checkpoint.items() if k.startswith(META_PREFIX)}


def find_resume(train_url: str, resume: Optional[str]) -> Optional[str]:
    """The checkpoint to resume from: an explicit path, or with 'auto' the newest one in ``train_url``."""
    if resume is None:
        return None
    if resume != "auto":
        if not os.path.isfile(resume):
            raise FileNotFoundError(f"resume checkpoint {resume!r} does not exist")
        return resume
    last = os.path.join(train_url, "last.ckpt")
    return last if os.path.isfile(last) else None


class MetricsLog:
    """JSON lines of step and epoch metrics (the source of the curves plot)."""

    def __init__(self, path: Optional[str]):
        self.path = path

    def write(self, record: dict) -> None:
        if self.path:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


def format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train(cfg: Config) -> Dict[str, float]:
    """Run the training job described by ``cfg``; returns the final and best validation results."""
    rank, world = init_device(cfg.device_target, cfg.device_id, cfg.graph_mode, cfg.distribute)
    ms.set_seed(cfg.seed)
    is_main = rank == 0
    resume_path = find_resume(cfg.train_url, cfg.resume)
    if resume_path is None and glob.glob(os.path.join(cfg.train_url, "*.ckpt")):  # every rank stops alike
        raise ValueError(f"{cfg.train_url!r} already holds checkpoints; pass --resume auto to continue that run "
                         f"or choose another --train_url")
    log = get_logger("train", cfg.train_url, rank)
    if is_main:  # a resumed run keeps the first run's config.yaml and records its own beside it
        os.makedirs(cfg.train_url, exist_ok=True)
        name = "config.yaml" if resume_path is None else time.strftime("config-resumed-%Y%m%d-%H%M%S.yaml")
        save_config(cfg, os.path.join(cfg.train_url, name))
    root = prepare_data(cfg, rank)
    train_kwargs = dict(train_dataset_args(cfg), num_shards=world, shard_id=rank)

    model = model_from_config(cfg, training=True)
    if cfg.pretrained and load_model_weights(model, cfg.pretrained, cfg.use_ema, cfg.arch, new_classifier=CLASSIFIER):
        log.info("the pretrained classifier has another class count: %s re-initialised", CLASSIFIER)
    eval_net = model_from_config(cfg)
    if cfg.amp_level != "O0":
        eval_net = ms.amp.auto_mixed_precision(eval_net, cfg.amp_level)
    val_ds = eval_dataset(cfg, root, rank, world)
    train_ds = create_dataset(root, "train", is_training=True, epoch=0, **train_kwargs)
    steps_per_epoch = train_ds.get_dataset_size()
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has fewer images than one batch of {cfg.batch_size}; lower batch_size")

    base_lr = cfg.base_lr
    if cfg.lr_batch_size:
        base_lr = cfg.base_lr * cfg.batch_size * world / cfg.lr_batch_size
        log.info("base_lr %.3g scaled to %.3g for a total batch of %d (lr_batch_size %d)", cfg.base_lr, base_lr,
                 cfg.batch_size * world, cfg.lr_batch_size)
    lrs = create_lr_schedule(cfg.lr_scheduler, base_lr, steps_per_epoch, cfg.epochs, cfg.warmup_length,
                             cfg.warmup_lr, cfg.min_lr, cfg.cooldown_epochs)
    total_epochs = cfg.epochs + cfg.cooldown_epochs
    optimizer = create_optimizer(model.trainable_params(), cfg.optimizer, lrs, cfg.weight_decay, cfg.beta, cfg.eps,
                                 cfg.momentum)
    mixing = cfg.mix_up > 0 or cfg.cutmix > 0
    step = build_train_step(model, optimizer, cfg.amp_level, create_loss(cfg.label_smoothing, soft_targets=mixing),
                            create_loss_scale(cfg.is_dynamic_loss_scale, cfg.loss_scale, cfg.loss_scale_window),
                            clip_norm=cfg.clip_global_norm_value, ema_decay=cfg.ema_decay)

    meta = {"epoch": 0, "step": 0, "best_top1": -1.0, "best_epoch": -1}
    if cfg.resume == "auto" and resume_path is None:
        log.info("--resume auto: no last.ckpt in %s, starting a new run", cfg.train_url)
    if resume_path:
        meta.update(restore(step, model, read_checkpoint(resume_path)))
        log.info("resumed from %s at epoch %d (step %d)", resume_path, meta["epoch"], meta["step"])
    start_epoch = int(meta["epoch"])
    if start_epoch >= total_epochs:
        log.info("the run in %s already finished its %d epochs: nothing left to train", cfg.train_url, total_epochs)
        return {"best_top1": meta["best_top1"], "best_epoch": meta["best_epoch"]}
    metrics = MetricsLog(os.path.join(cfg.train_url, "metrics.jsonl") if is_main else None)
    log.info("%s: %d ranks x batch %d, %d steps/epoch, epochs %d..%d, amp %s, %s kernels", cfg.arch, world,
             cfg.batch_size, steps_per_epoch, start_epoch + 1, total_epochs, cfg.amp_level, cfg.kernel_impl)

    results = {}
    timed_steps, timed_seconds = 0, 0.0  # step-to-step time incl. data loading, for images/s and the ETA
    for epoch in range(start_epoch, total_epochs):
        if epoch > 0:  # each epoch's order and augmentation are seeded by (seed, epoch)
            train_ds = create_dataset(root, "train", is_training=True, epoch=epoch, **train_kwargs)
        model.set_train(True)
        epoch_start, overflows, losses, last_done = time.time(), 0, [], None
        for i, (images, labels) in enumerate(batches(train_ds)):
            loss, overflow, scale = step(images, labels)
            loss_value = float(loss.asnumpy())
            overflows += int(overflow.asnumpy())
            losses.append(loss_value)
            meta["step"] += 1
            done = time.time()
            if last_done is not None:  # an epoch's first step includes pipeline start-up (and compilation)
                timed_steps += 1
                timed_seconds += done - last_done
            last_done = done
            if (i + 1) % cfg.log_every == 0 or i + 1 == steps_per_epoch:
                lr = float(lrs[min(int(meta["step"]) - 1, len(lrs) - 1)])
                per_step = timed_seconds / timed_steps if timed_steps else 0.0
                speed = cfg.batch_size * world / per_step if per_step else 0.0
                remaining = (total_epochs - epoch) * steps_per_epoch - (i + 1)
                log.info("epoch %d/%d step %d/%d loss %.4f lr %.3e scale %g img/s %.1f eta %s", epoch + 1,
                         total_epochs, i + 1, steps_per_epoch, loss_value, lr, float(scale.asnumpy()), speed,
                         format_eta(remaining * per_step))
                metrics.write({"type": "step", "epoch": epoch + 1, "step": meta["step"], "loss": loss_value,
                               "lr": lr, "loss_scale": float(scale.asnumpy()), "images_per_s": speed})
        meta["epoch"] = epoch + 1
        if world > 1:
            average_batchnorm_statistics(step, world)
        record = {"type": "epoch", "epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                  "overflow_steps": overflows, "time_s": time.time() - epoch_start}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == total_epochs:
            record.update(validate(step, model, eval_net, val_ds, world > 1, cfg.ema_decay > 0))
            top1 = max(record["top1"], record.get("ema_top1", -1.0))
            if top1 > meta["best_top1"]:
                meta["best_top1"], meta["best_epoch"] = top1, epoch + 1
                if is_main:
                    save_checkpoint(checkpoint_entries(step, model, meta), os.path.join(cfg.train_url, "best.ckpt"))
            record.update(best_top1=meta["best_top1"], best_epoch=meta["best_epoch"])
            log.info("epoch %d val top1 %.2f top5 %.2f loss %.4f%s | best top1 %.2f (epoch %d) | overflow steps %d | "
                     "%.0fs", epoch + 1, record["top1"], record["top5"], record["loss"],
                     (" | ema top1 %.2f top5 %.2f" % (record["ema_top1"], record["ema_top5"]))
                     if "ema_top1" in record else "", meta["best_top1"], meta["best_epoch"], overflows,
                     record["time_s"])
            results = record
        metrics.write(record)
        if is_main and ((epoch + 1) % cfg.save_every == 0 or epoch + 1 == total_epochs):
            entries = checkpoint_entries(step, model, meta)
            save_checkpoint(entries, os.path.join(cfg.train_url, f"epoch_{epoch + 1:04d}.ckpt"))
            save_checkpoint(entries, os.path.join(cfg.train_url, "last.ckpt"))
            prune_checkpoints(cfg.train_url, cfg.keep_last)
    if is_main and metrics.path:
        plot_training_curves(metrics.path, os.path.join(cfg.train_url, "training_curves.png"))
        log.info("done: best top1 %.2f at epoch %d; checkpoints, log and curves in %s", meta["best_top1"],
                 meta["best_epoch"], cfg.train_url)
    return {**results, "best_top1": meta["best_top1"], "best_epoch": meta["best_epoch"]}


def validate(step: TrainOneStep, model: nn.Cell, eval_net: nn.Cell, val_ds, distributed: bool,
             with_ema: bool) -> Dict[str, float]:
    """Validation results of the model and, if kept, of its EMA (copied into the evaluation network)."""
    params = {p.name: p for p in step.get_parameters()}
    copy_weights(eval_net, params)
    out = evaluate(eval_net, val_ds, distributed)
    if with_ema:  # frozen tables have no EMA copy: they come from the model
        copy_weights(eval_net, params, prefix=EMA_PREFIX, fallback=params)
        ema = evaluate(eval_net, val_ds, distributed)
        out.update({f"ema_{k}": v for k, v in ema.items() if k != "count"})
    return out


def average_batchnorm_statistics(step: TrainOneStep, world: int) -> None:
    """Give every rank the mean BatchNorm statistics (and EMA copies) of all ranks, as timm's
    ``distribute_bn`` does: each rank only saw its shard, and validation and checkpoints must use
    one set of weights."""
    allreduce = ops.AllReduce()
    for param in step.get_parameters():
        if param.name.endswith(("moving_mean", "moving_variance")):
            param.set_data(allreduce(param.value()) / world)


def prune_checkpoints(train_url: str, keep_last: int) -> None:
    """Delete the oldest periodic checkpoints beyond ``keep_last`` (best.ckpt and last.ckpt stay)."""
    periodic = sorted((int(m.group(1)), path) for path in glob.glob(os.path.join(train_url, "epoch_*.ckpt"))
                      if (m := PERIODIC.search(path)))
    for _, path in periodic[:max(len(periodic) - keep_last, 0)]:
        os.remove(path)
