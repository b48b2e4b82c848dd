"""The training loop: a built ``TrainJob`` in, trained checkpoints, logs and curves out.

Per step: ``TrainOneStep`` (loss scale, gradient reduction, overflow skip, clipping, AdamW, EMA).
Per epoch: BatchNorm statistics averaged over ranks, validation of the model and of its EMA,
checkpoints (``run_checkpoints``). Each epoch's data order and augmentation are a function of
(seed, epoch), so a resumed run continues as the uninterrupted one would; a run stopped mid-epoch
resumes by drawing the epoch's first batches again without training on them (they keep the
augmentation streams in step).

A run ends early in two ways, each with one line in the log and an exit status (``RunStopped``):
* a stop request (``TrainJob.stop``: SIGINT/SIGTERM, see ``app.signals``) is taken between two
  steps: ``last.ckpt`` records the state and the position in the epoch, exit status 128 + signal;
* a diverged run: a training loss that is not finite or above ``TrainJob.loss_bound`` (see
  ``loss_bound``), a validation loss that is not finite, or too many updates skipped for
  non-finite loss or gradients (``OverflowWatch``). Nothing more is saved: the checkpoints written
  so far are the last good ones (``best.ckpt`` is never one whose validation was not finite);
  exit status 1.
"""
import collections
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import numpy as np
from mindspore import Tensor, nn, ops

from ..data.dataset import batches
from .evaluate import copy_weights, evaluate
from .plot import plot_training_curves
from .run_checkpoints import RunCheckpoints
from .train_step import TrainOneStep
from ..weights.checkpoint import EMA_PREFIX
from ..utils.files import write_text


@dataclass
class TrainJob:
    """Everything one training run needs, built by the application layer from a configuration (whose schema
    holds the defaults of the run's policies: logging, validation, saving, the overflow rule)."""
    model: nn.Cell                             # the trained network (float32 master weights)
    step: TrainOneStep                         # one optimisation step on a batch
    eval_net: nn.Cell                          # a second instance of the model for validation
    train_data: Callable[[int], object]        # epoch -> this rank's training pipeline for that epoch
    val_data: object                           # this rank's validation pipeline
    lrs: np.ndarray                            # learning rate of every optimizer update
    steps_per_epoch: int
    total_epochs: int
    checkpoints: RunCheckpoints
    log: logging.Logger
    images_per_step: int                       # over all ranks
    log_every: int                             # steps
    eval_every: int                            # epochs
    save_every: int                            # epochs
    max_overflow_fraction: float               # stop when more of the last overflow_window steps were skipped
    overflow_window: int
    world: int = 1
    with_ema: bool = False
    metrics_path: Optional[str] = None         # JSON lines of step and epoch records (rank 0)
    curves_path: Optional[str] = None          # PNG of the curves, written at the end (rank 0)
    stop: Optional[Callable[[], int]] = None   # the signal number of a pending stop request, else 0
    loss_bound: float = math.inf               # stop when a training loss is above it (``loss_bound``)


class RunStopped(Exception):
    """The run ended before its last epoch; the message has been logged. ``exit_code``: the process's status."""
    exit_code = 1


class RunInterrupted(RunStopped):
    """Stopped by a signal between two steps, after saving ``last.ckpt``."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class TrainingDiverged(RunStopped):
    """A non-finite or exploding loss, or too many skipped (non-finite) steps."""


LOSS_BOUND_FACTOR = 100
MIN_JUDGED_UPDATES = 10  # the overflow rule judges a run once it has counted this many updates (or overflow_window)


def loss_bound(num_classes: int) -> float:
    """The training loss past which a run has diverged: ``LOSS_BOUND_FACTOR`` times the cross-entropy of a
    uniform guess, ln(num_classes) (ln 2 at least). A learning model's mean loss stays far below it: it
    would need its true-class probability at num_classes ** -100 on average."""
    return LOSS_BOUND_FACTOR * math.log(max(num_classes, 2))


class OverflowWatch:
    """The overflow rule: the run has diverged when more than ``max_fraction`` of the latest ``window``
    updates were skipped for non-finite loss or gradients, judged as soon as min(window,
    ``MIN_JUDGED_UPDATES``) updates are counted, so that a run shorter than its window is judged too.
    A dynamic loss scale's first skips, while it halves from its initial value to one the gradients
    fit (before this process's first applied update, at a scale still above 1), are not counted: from
    the ModelZoo's 2^24 that takes about ten steps of a healthy run."""

    def __init__(self, max_fraction: float, window: int, dynamic: bool):
        self.max_fraction = max_fraction
        self.flags = collections.deque(maxlen=window)
        self.settled = not dynamic

    def add(self, skipped: bool, scale: float) -> None:
        """One update: whether it was skipped, and the loss scale after it."""
        self.settled = self.settled or not skipped or scale <= 1
        if self.settled:
            self.flags.append(skipped)

    def exceeded(self) -> bool:
        counted = len(self.flags)
        return (counted >= min(self.flags.maxlen, MIN_JUDGED_UPDATES)
                and sum(self.flags) > self.max_fraction * counted)


def format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def applied_lr(job: TrainJob) -> float:
    """The learning rate of the optimizer's latest update: the schedule is indexed by updates, and
    skipped (overflow) steps are not updates."""
    updates = int(job.step.optimizer.global_step.asnumpy().reshape(-1)[0])
    return float(job.lrs[min(max(updates - 1, 0), len(job.lrs) - 1)])


def fit(job: TrainJob, meta: Dict[str, float]) -> Dict[str, float]:
    """Train from ``meta['epoch']`` (``meta['batch']`` batches into it) to ``job.total_epochs``;
    returns the last validation and the best result."""
    results = {}
    clock = _StepClock()
    window = overflow_watch(job)
    _keep_metrics_until(job.metrics_path, meta)
    _check_stop(job, meta, saved=True, where="before training started (nothing trained, nothing saved)")
    for epoch in range(int(meta["epoch"]), job.total_epochs):
        record = train_epoch(job, epoch, meta, clock, window)
        meta.update(epoch=epoch + 1, batch=0)
        if job.world > 1:
            average_batchnorm_statistics(job.step, job.world)
        if (epoch + 1) % job.eval_every == 0 or epoch + 1 == job.total_epochs:
            record.update(validate(job.step, job.model, job.eval_net, job.val_data, job.world > 1, job.with_ema))
            bad = [f"the {'EMA' if k.startswith('ema') else 'model'} validation loss is {record[k]}"
                   for k in ("loss", "ema_loss") if k in record and not math.isfinite(record[k])]
            if bad:
                _diverged(job, f"after epoch {epoch + 1}", " and ".join(bad))
            ema_better = record.get("ema_top1", -1.0) > record["top1"]
            top1 = record["ema_top1"] if ema_better else record["top1"]
            if top1 > meta["best_top1"]:
                meta.update(best_top1=top1, best_epoch=epoch + 1, best_is_ema=int(ema_better))
                job.checkpoints.save_best(job.step, job.model, meta)
            record.update(best_top1=meta["best_top1"], best_epoch=meta["best_epoch"])
            job.log.info("epoch %d val top1 %.2f top5 %.2f loss %.4f%s | best top1 %.2f (epoch %d, %s weights) | "
                         "overflow steps %d | %.0fs", epoch + 1, record["top1"], record["top5"], record["loss"],
                         (" | ema top1 %.2f top5 %.2f" % (record["ema_top1"], record["ema_top5"]))
                         if "ema_top1" in record else "", meta["best_top1"], meta["best_epoch"],
                         "EMA" if meta["best_is_ema"] else "model", record["overflow_steps"], record["time_s"])
            results = record
        _append_json(job.metrics_path, record)
        saved = (epoch + 1) % job.save_every == 0 or epoch + 1 == job.total_epochs
        if saved:
            job.checkpoints.save_epoch(job.step, job.model, meta)
        if epoch + 1 < job.total_epochs:
            _check_stop(job, meta, saved, where=f"after epoch {epoch + 1}")
    if job.metrics_path and job.curves_path:
        plot_training_curves(job.metrics_path, job.curves_path)
    updates = int(meta["step"]) // job.step.accumulation  # meta counts micro-batches
    job.log.info("done: best top1 %.2f at epoch %d (%s weights); %d of %d updates skipped for overflow; checkpoints, "
                 "log and curves in %s", meta["best_top1"], meta["best_epoch"],
                 "EMA" if meta["best_is_ema"] else "model", meta["overflow_steps"], updates,
                 job.checkpoints.location)
    return {**results, "best_top1": meta["best_top1"], "best_epoch": meta["best_epoch"],
            "best_is_ema": bool(meta["best_is_ema"]), "overflow_steps": int(meta["overflow_steps"])}


def overflow_watch(job: TrainJob) -> OverflowWatch:
    return OverflowWatch(job.max_overflow_fraction, job.overflow_window, job.step.loss_scaling_manager is not None)


def _diverged(job: TrainJob, where: str, what: str) -> None:
    """Log the one line of a diverged run and raise TrainingDiverged."""
    message = (f"training stopped {where}: {what}; the run diverged. The checkpoints saved so far are kept and "
               f"nothing more was saved. Lower base_lr or check the data, then start again (--resume auto "
               f"continues from the newest checkpoint)")
    job.log.info(message)
    raise TrainingDiverged(message)


def _check_stop(job: TrainJob, meta: Dict[str, float], saved: bool, where: str) -> None:
    """Between two steps: on a stop request, save ``last.ckpt`` (unless ``saved`` already holds this
    state), log one line and raise RunInterrupted. Every rank stops at the same step."""
    signum = job.stop() if job.stop else 0
    if job.world > 1:  # SIGTERM on any rank wins, then SIGINT
        asked = sum_over_ranks([signum == signal.SIGINT, signum == signal.SIGTERM], job.world)
        signum = signal.SIGTERM if asked[1] else signal.SIGINT if asked[0] else 0
    if not signum:
        return
    name = signal.Signals(signum).name
    if saved:
        message = f"stopped by {name} {where}"
    else:
        path = job.checkpoints.save_last(job.step, job.model, meta)
        message = (f"stopped by {name} {where}: saved {path} (epoch {int(meta['epoch']) + 1}, "
                   f"{int(meta['batch'])} of {job.steps_per_epoch} batches done, step {int(meta['step'])})")
    if meta["step"] > 0:
        message += "; continue with --resume auto"
    job.log.info(message)
    raise RunInterrupted(message, signum)


class _StepClock:
    """Step-to-step time including data loading, for images/s and the ETA. An epoch's first step
    (pipeline start-up, compilation) is not timed."""

    def __init__(self):
        self.steps, self.seconds, self.last = 0, 0.0, None

    def tick(self, first_of_epoch: bool) -> float:
        now = time.time()
        if not first_of_epoch and self.last is not None:
            self.steps += 1
            self.seconds += now - self.last
        self.last = now
        return self.seconds / self.steps if self.steps else 0.0


def train_epoch(job: TrainJob, epoch: int, meta: Dict[str, float], clock: _StepClock,
                window: Optional[OverflowWatch] = None) -> dict:
    """One pass over this epoch's training data from batch ``meta['batch']`` on; returns the epoch
    record (loss and overflow count of the batches trained here, time). ``window``: the overflow rule's
    record of the latest updates, carried over from the previous epochs."""
    window = overflow_watch(job) if window is None else window
    job.model.set_train(True)
    start, overflows, losses, first = time.time(), 0, [], int(meta["batch"])
    batches_left = job.steps_per_epoch - first
    for i, (images, labels) in enumerate(batches(job.train_data(epoch)) if batches_left > 0 else ()):
        if i < first:  # already trained before the run was stopped: drawn, not trained on
            continue
        loss, overflow, scale = job.step(images, labels)
        loss_value = float(loss.asnumpy())
        skipped = bool(overflow.asnumpy())
        overflows += skipped
        if job.step.update_done:  # with gradient accumulation: once per update, at its last micro-batch
            window.add(skipped, float(scale.asnumpy()))
        losses.append(loss_value)
        meta["step"] += 1
        meta["batch"] = i + 1
        meta["overflow_steps"] += skipped
        per_step = clock.tick(first_of_epoch=i == first)
        if (i + 1) % job.log_every == 0 or i + 1 == job.steps_per_epoch:
            lr = applied_lr(job)
            speed = job.images_per_step / per_step if per_step else 0.0
            remaining = (job.total_epochs - epoch) * job.steps_per_epoch - (i + 1)
            job.log.info("epoch %d/%d step %d/%d loss %.4f lr %.3e scale %g img/s %.1f eta %s", epoch + 1,
                         job.total_epochs, i + 1, job.steps_per_epoch, loss_value, lr, float(scale.asnumpy()),
                         speed, format_eta(remaining * per_step))
            _append_json(job.metrics_path, {"type": "step", "epoch": epoch + 1, "step": meta["step"],
                                            "loss": loss_value, "lr": lr, "loss_scale": float(scale.asnumpy()),
                                            "images_per_s": speed})
        where = f"at epoch {epoch + 1} step {i + 1}/{job.steps_per_epoch}"
        exploded = not math.isfinite(loss_value) or loss_value > job.loss_bound
        bound = f"{job.loss_bound:.4g} = {LOSS_BOUND_FACTOR} x ln(num_classes)"
        if job.world > 1:  # every rank stops at the same step
            anywhere = bool(sum_over_ranks([exploded], job.world)[0])
        else:
            anywhere = exploded
        if anywhere:
            own = f"the training loss is {loss_value:.4g}" + (f", above {bound}" if math.isfinite(loss_value) else "")
            _diverged(job, where, own if exploded else f"the training loss of another rank is not finite or above "
                                                       f"{bound}")
        if window.exceeded():
            _diverged(job, where, f"{sum(window.flags)} of the last {len(window.flags)} updates were skipped for "
                                  f"non-finite loss or gradients, more than max_overflow_fraction "
                                  f"{job.max_overflow_fraction:g} (loss scale now {float(scale.asnumpy()):g})")
        if i + 1 < job.steps_per_epoch and job.step.update_done:  # never inside an accumulated update
            _check_stop(job, meta, saved=False, where=where)
    return {"type": "epoch", "epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else None,
            "overflow_steps": overflows, "time_s": time.time() - start}


def _keep_metrics_until(path: Optional[str], meta: Dict[str, float]) -> None:
    """``metrics.jsonl`` continues from the run's checkpoint (``meta``): the records that a killed run wrote
    after its newest checkpoint, which the resumed run writes again, are dropped (as is a line cut short)."""
    if not path or not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    kept = [line if line.endswith("\n") else line + "\n" for line in lines if _before(line, meta)]
    if kept != lines:
        write_text(path, "".join(kept))


def _before(line: str, meta: Dict[str, float]) -> bool:
    try:
        record = json.loads(line)
        return record["step"] <= meta["step"] if record["type"] == "step" else record["epoch"] <= meta["epoch"]
    except (ValueError, KeyError, TypeError):
        return False


def _append_json(path: Optional[str], record: dict) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


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


def sum_over_ranks(values, world: int) -> np.ndarray:
    """``values`` summed over all ranks (counts every rank must agree on; the CPU backend reduces by sum only)."""
    values = np.asarray(values, np.float32)
    if world == 1:
        return values
    return ops.AllReduce()(Tensor(values)).asnumpy()


def average_batchnorm_statistics(step: TrainOneStep, world: int) -> None:
    """Give every rank the mean BatchNorm statistics (and EMA copies) of all ranks, as timm's
    ``distribute_bn`` does: each rank only saw its shard, and validation and checkpoints must use
    one set of weights."""
    allreduce = ops.AllReduce()
    for param in step.get_parameters():
        if param.name.endswith(("moving_mean", "moving_variance")):
            param.set_data(allreduce(param.value()) / world)
