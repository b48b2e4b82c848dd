"""A training run's checkpoints: what goes into them, where they go, which one a resume reads.

A run owns its output folder (``files.FolderLock``, taken by the application layer). It writes
``epoch_NNNN.ckpt`` every ``save_every`` epochs (the newest ``keep_last`` are kept), ``last.ckpt``
beside them, ``best.ckpt`` at each new best validation top-1, and ``last.ckpt`` again when it is
stopped between two steps. Every file holds the model under its own names, the EMA copy under
``ema.``, the rest of the train step's state (optimizer moments and step, loss scale and its
counters) under ``train_state.`` and the run's metadata under ``meta.``: epoch (completed epochs),
step, batch (batches of the next epoch already trained: a run stopped mid-epoch resumes there),
best top-1 and its epoch, ``best_is_ema`` (whether the best top-1 came from the EMA weights),
overflow_steps (steps skipped so far) and ``data`` (the classes and evaluation transform, see
``weights.checkpoint``). So a resume continues with the same learning rate at the same step, the
same moments and the same EMA. Files are written atomically by rank 0 only.

``--resume auto`` continues from the newest complete checkpoint of the folder, whatever its name:
the one whose stored step is highest (a crash before the first ``last.ckpt`` still leaves
``best.ckpt`` or ``epoch_NNNN.ckpt``); files that cannot be read are skipped and reported.
"""
import glob
import json
import os
import re
from typing import Dict, List, Optional, Tuple

from mindspore import Tensor, nn

from ..weights.checkpoint import (CHECKPOINT_TEMPORARIES, DATA_KEY, EMA_PREFIX, META_PREFIX, STATE_PREFIX,
                                  CheckpointError, check_fits, data_differences, model_entries, read_checkpoint,
                                  save_checkpoint, stored_data)
from ..utils.files import remove_stale_temporaries

PERIODIC = re.compile(r"epoch_(\d{4,})\.ckpt$")
_PREFERENCE = {"last.ckpt": 2, "best.ckpt": 0}  # equal steps: last.ckpt, then epoch_NNNN, then best


def new_run_meta() -> Dict[str, float]:
    """Metadata of a run that has not trained yet."""
    return {"epoch": 0, "step": 0, "batch": 0, "best_top1": -1.0, "best_epoch": -1, "best_is_ema": 0,
            "overflow_steps": 0}


class RunCheckpoints:
    """The checkpoints of one run in ``folder``; only ``writer`` (rank 0) writes files."""

    def __init__(self, folder: str, keep_last: int, writer: bool):
        self.folder = folder
        self.keep_last = keep_last
        self.writer = writer
        self.data: Optional[dict] = None
        self.unreadable: List[Tuple[str, str]] = []  # (path, reason) skipped by the last find_resume

    @property
    def location(self) -> str:
        """Where the run's outputs are, in the words of its last log line."""
        return self.folder

    def record_data(self, data: dict) -> None:
        """The classes and evaluation transform of the run, recorded in every checkpoint and checked on resume."""
        self.data = json.loads(json.dumps(data))  # as it reads back: lists, not tuples

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def existing(self) -> list:
        return glob.glob(self.path("*.ckpt"))

    def remove_stale_temporaries(self) -> List[str]:
        """Temporary files of checkpoint writes that a killed run left behind (writer only)."""
        return remove_stale_temporaries(self.folder, CHECKPOINT_TEMPORARIES) if self.writer else []

    def find_resume(self, resume: Optional[str]) -> Optional[str]:
        """The checkpoint to resume from: an explicit path, or with 'auto' the newest complete one."""
        if resume is None:
            return None
        if resume != "auto":
            if not os.path.isfile(resume):
                raise FileNotFoundError(f"resume checkpoint {resume!r} does not exist")
            return resume
        self.unreadable = []
        candidates = []
        for path in sorted(self.existing()):
            try:
                meta = read_checkpoint(path, meta_only=True)
            except CheckpointError as err:
                self.unreadable.append((path, str(err)))
                continue
            if META_PREFIX + "step" in meta:  # a checkpoint of a run, not a file put here by hand
                name = os.path.basename(path)
                rank = _PREFERENCE.get(name, 1)
                candidates.append((_number(meta, "step"), _number(meta, "epoch"), rank, path))
        if candidates:
            return max(candidates)[-1]
        if self.unreadable:
            listed = "; ".join(f"{os.path.basename(p)}: {reason}" for p, reason in self.unreadable)
            raise CheckpointError(f"--resume auto: no checkpoint in {self.folder!r} can be read ({listed}); move "
                                  f"them away to start a new run there")
        return None

    def entries(self, step: nn.Cell, model: nn.Cell, meta: Dict[str, float]) -> Dict[str, object]:
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
        if self.data is not None:
            entries[DATA_KEY] = json.dumps(self.data)
        return entries

    def size_bytes(self, step: nn.Cell, model: nn.Cell) -> int:
        """About the size of one checkpoint file of this run."""
        return sum(p.nbytes for p in self.entries(step, model, {}).values() if isinstance(p, Tensor))

    def room_needed(self, step: nn.Cell, model: nn.Cell, files: int) -> int:
        """Free bytes the run needs for ``files`` checkpoints, less what the folder's checkpoints take (a
        resumed run replaces them); one checkpoint at least (the temporary of an atomic write)."""
        size = self.size_bytes(step, model)
        return max(files * size - sum(os.path.getsize(path) for path in self.existing()), size)

    def restore(self, step: nn.Cell, model: nn.Cell, path: str) -> Dict[str, float]:
        """Put a checkpoint's model, EMA and training state back into ``step``; returns its metadata."""
        checkpoint = read_checkpoint(path)
        trained_for = stored_data(checkpoint)
        if trained_for is not None and self.data is not None and trained_for != self.data:
            raise CheckpointError(f"cannot resume from {path!r}: {data_differences(trained_for, self.data)}; resume "
                                  f"with the data_url and settings it was trained with")
        targets = {k: v for k, v in self.entries(step, model, {}).items() if k != DATA_KEY}
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
        meta.update({k[len(META_PREFIX):]: _number(checkpoint, k[len(META_PREFIX):]) for k in checkpoint
                     if k.startswith(META_PREFIX) and k != DATA_KEY})
        return meta

    def save_best(self, step: nn.Cell, model: nn.Cell, meta: Dict[str, float]) -> None:
        if self.writer:
            save_checkpoint(self.entries(step, model, meta), self.path("best.ckpt"))

    def save_last(self, step: nn.Cell, model: nn.Cell, meta: Dict[str, float]) -> str:
        """``last.ckpt`` alone: the state of a run stopped between two steps."""
        if self.writer:
            save_checkpoint(self.entries(step, model, meta), self.path("last.ckpt"))
        return self.path("last.ckpt")

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


def _number(checkpoint, key: str) -> float:
    return float(checkpoint[META_PREFIX + key].asnumpy())

