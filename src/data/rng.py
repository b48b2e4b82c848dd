"""Per-process random generators for data transforms that run in MindSpore workers.

Why this exists: MindSpore forks its ``map`` workers without reseeding numpy's global generator, so
workers would draw the same numbers (measured: docs/data_pipeline.md).

Every random transform of this package instead owns a :class:`ProcessLocalRNG`.  It
builds its ``numpy.random.Generator`` lazily and rebuilds it whenever it finds itself in
a new process, from ``(seed, stream, worker)``:

* ``worker`` is read from the process name that MindSpore gives its workers
  (``MapWorker<k>`` / ``BatchWorker<k>``); the main process is worker ``-1``.  An
  unrecognised child process mixes in its pid, so it can never collide with another.
* ``stream`` separates the transforms that share one seed (crop vs. RandAugment vs.
  erasing), so they do not consume identical numbers.
* ``seed=None`` draws fresh OS entropy in every process: never identical, never
  reproducible.
"""
from __future__ import annotations

import multiprocessing
import os
import re
import zlib
from typing import Optional

import numpy as np

__all__ = ["ProcessLocalRNG", "worker_index", "derive_seed"]

_WORKER_NAME = re.compile(r"^(?:Map|Batch)Worker(\d+)$")


def worker_index() -> Optional[int]:
    """Index of the MindSpore worker process we run in; -1 in the main process; None if unknown."""
    proc = multiprocessing.current_process()
    if multiprocessing.parent_process() is None:
        return -1
    match = _WORKER_NAME.match(proc.name)
    return int(match.group(1)) if match else None


def derive_seed(*parts: int | str) -> int:
    """A 32-bit seed from several integers/strings (stable across processes and runs)."""
    words = []
    for part in parts:
        if isinstance(part, str):
            words.append(zlib.crc32(part.encode("utf-8")))
        else:
            words.append(int(part) & 0xFFFFFFFF)
    return int(np.random.SeedSequence(words).generate_state(1)[0])


class ProcessLocalRNG:
    """A numpy Generator that is re-created, differently seeded, in every process."""

    def __init__(self, seed: Optional[int], stream: str) -> None:
        if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self.stream = stream
        self._gen: Optional[np.random.Generator] = None
        self._pid: Optional[int] = None

    def reseed(self, seed: Optional[int]) -> None:
        """Replace the seed; the generator is rebuilt at the next use."""
        self.__init__(seed, self.stream)

    def _entropy(self) -> Optional[list]:
        if self.seed is None:
            return None  # fresh OS entropy
        worker = worker_index()
        words = [self.seed, zlib.crc32(self.stream.encode("utf-8"))]
        if worker is None:  # some other kind of child process: distinct, not reproducible
            words += [0xFFFF, os.getpid()]
        else:
            words.append(worker + 1)
        return words

    @property
    def gen(self) -> np.random.Generator:
        """The generator for the current process."""
        pid = os.getpid()
        if self._gen is None or self._pid != pid:
            self._gen = np.random.default_rng(np.random.SeedSequence(self._entropy()))
            self._pid = pid
        return self._gen

    def __getstate__(self) -> dict:
        # A pickled copy (spawn start method) must build its own generator.
        return {"seed": self.seed, "stream": self.stream, "_gen": None, "_pid": None}
