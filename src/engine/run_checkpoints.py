"""A training run's checkpoints: what goes into them, where they go, which one a resume reads.

A run owns its output folder. It writes ``epoch_NNNN.ckpt`` every ``save_every`` epochs (the newest
``keep_last`` are kept), ``last.ckpt`` beside them and ``best.ckpt`` at each new best validation top-1.
Every file holds the model under its own names, the EMA copy under ``ema.``, the rest of the train
step's state (optimizer moments and step, loss scale and its counters) under ``train_state.`` and the
run's metadata under ``meta.`` (epoch, step, best top-1 and its epoch, and ``best_is_ema``: whether
the best top-1 came from the EMA weights), so a resume continues with the same learning rate at the
same step, the same moments and the same EMA. Files are written atomically by rank 0 only.
"""
import glob
import os
import re
from typing import Dict, Optional

from mindspore import Tensor, nn

from ..weights.checkpoint import (EMA_PREFIX, META_PREFIX, STATE_PREFIX, CheckpointError, check_fits, model_entries,
                                  read_checkpoint, save_checkpoint)

PERIODIC = re.compile(r"epoch_(\d{4,})\.ckpt$")


def new_run_meta() -> Dict[str, float]:
    """Metadata of a run that has not trained yet."""
    return {"epoch": 0, "step": 0, "best_top1": -1.0, "best_epoch": -1, "best_is_ema": 0}


class RunCheckpoints:
    """The checkpoints of one run in ``folder``; only ``writer`` (rank 0) writes files."""

    def __init__(self, folder: str, keep_last: int, writer: bool):
        self.folder = folder
        self.keep_last = keep_last
        self.writer = writer

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def existing(self) -> list:
        return glob.glob(self.path("*.ckpt"))

    def find_resume(self, resume: Optional[str]) -> Optional[str]:
        """The checkpoint to resume from: an explicit path, or with 'auto' this run's ``last.ckpt``."""
        if resume is None:
            return None
        if resume != "auto":
            if not os.path.isfile(resume):
                raise FileNotFoundError(f"resume checkpoint {resume!r} does not exist")
            return resume
        last = self.path("last.ckpt")
        return last if os.path.isfile(last) else None

    @staticmethod
    def entries(step: nn.Cell, model: nn.Cell, meta: Dict[str, float]) -> Dict[str, object]:
        """Model under its own names, EMA under ``ema.``, the rest of the step's state under ``train_state.``."""
        model_names = {p.name for p in model.get_parameters()}
        entries = {}
        for param in step.get_parameters():
            if param.name in model_names or param.name.startswith(EMA_PREFIX):
                entries[param.name] = param
            elif param.name != "learning_rate" and not param.name.startswith("accumulated."):  # derived, or
                # transient (gradient sums, zero between updates)
                entries[STATE_PREFIX + param.name] = param
        entries.update({META_PREFIX + k: v for k, v in meta.items()})
        return entries

    def restore(self, step: nn.Cell, model: nn.Cell, path: str) -> Dict[str, float]:
        """Put a checkpoint's model, EMA and training state back into ``step``; returns its metadata."""
        checkpoint = read_checkpoint(path)
        targets = self.entries(step, model, {})
        missing = [name for name in targets if name not in checkpoint]
        if missing:
            raise CheckpointError(f"cannot resume from {path!r}: it lacks {len(missing)} entries of this run "
                                  f"(first: {missing[:3]}); is it a checkpoint of another arch or optimizer?")
        check_fits(model, model_entries(checkpoint), "the resume checkpoint")
        for name, param in targets.items():
            value = checkpoint[name]
            if tuple(value.shape) != tuple(param.shape):
                raise CheckpointError(f"cannot resume: {name!r} has shape {tuple(value.shape)} in the checkpoint "
                                      f"but {tuple(param.shape)} in this run")
            param.set_data(Tensor(value.asnumpy(), param.dtype))
        meta = new_run_meta()
        meta.update({k[len(META_PREFIX):]: float(v.asnumpy()) for k, v in checkpoint.items()
                     if k.startswith(META_PREFIX)})
        return meta

    def save_best(self, step: nn.Cell, model: nn.Cell, meta: Dict[str, float]) -> None:
        if self.writer:
            save_checkpoint(self.entries(step, model, meta), self.path("best.ckpt"))

    def save_epoch(self, step: nn.Cell, model: nn.Cell, meta: Dict[str, float]) -> None:
        """``epoch_NNNN.ckpt`` and ``last.ckpt``, then the oldest periodic files beyond ``keep_last`` go."""
        if not self.writer:
            return
        entries = self.entries(step, model, meta)
        save_checkpoint(entries, self.path(f"epoch_{int(meta['epoch']):04d}.ckpt"))
        save_checkpoint(entries, self.path("last.ckpt"))
        periodic = sorted((int(m.group(1)), path) for path in glob.glob(self.path("epoch_*.ckpt"))
                          if (m := PERIODIC.search(path)))
        for _, path in periodic[:max(len(periodic) - self.keep_last, 0)]:
            os.remove(path)
