"""Run logging: one logger per process, on the console and in ``<train_url>/<name>.log``.

The same handlers are attached to the ``src`` logger, so warnings of library modules (a kernel that
falls back, workers lowered to the CPU count, skipped images) reach the run's log too. A run's log
file can be held back (``hold_file``): its lines wait in memory until ``start_log_file``, so that a
start that is refused writes no file.
"""
import logging
import os
import sys
from typing import Optional

LIBRARY_LOGGER = "src"


class _RunFile(logging.FileHandler):
    """The log file; while ``held`` is a list, records wait there instead (the file is not created)."""

    def __init__(self, path: str, hold: bool):
        super().__init__(path, delay=True)
        self.held = [] if hold else None

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is None:
            super().emit(record)
        else:
            self.held.append(record)

    def start(self) -> None:
        held, self.held = self.held or [], None
        os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
        for record in held:
            super().emit(record)


def get_logger(name: str = "vig", output_dir: Optional[str] = None, rank: int = 0,
               hold_file: bool = False) -> logging.Logger:
    """Rank 0 logs to the console; every rank with an output folder logs to its own file (with
    ``hold_file``: from ``start_log_file`` on, the lines before included)."""
    logger = logging.getLogger(f"{name}.{rank}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    library = logging.getLogger(LIBRARY_LOGGER)
    for owner in (logger, library):  # a second run in the same process replaces the first run's handlers
        for handler in [h for h in owner.handlers if getattr(h, "vig_run_handler", False)]:
            owner.removeHandler(handler)
            handler.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = []
    if rank == 0:
        handlers.append(logging.StreamHandler(sys.stdout))
    if output_dir:
        suffix = "" if rank == 0 else f"_rank{rank}"
        handlers.append(_RunFile(os.path.join(output_dir, f"{name}{suffix}.log"), hold_file))
        if not hold_file:
            handlers[-1].start()
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.vig_run_handler = True
        logger.addHandler(handler)
        library.addHandler(handler)
    if library.level == logging.NOTSET or library.level > logging.INFO:
        library.setLevel(logging.INFO)
    return logger


def start_log_file(logger: logging.Logger) -> None:
    """Write the held lines of ``logger``'s file (``get_logger(..., hold_file=True)``) and log there from now on."""
    for handler in logger.handlers:
        if isinstance(handler, _RunFile):
            handler.start()
