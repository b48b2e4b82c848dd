"""Run logging: one logger per process, on the console and in ``<train_url>/<name>.log``.

The same handlers are attached to the ``src`` logger, so warnings of library modules (a kernel that
falls back, workers lowered to the CPU count, skipped images) reach the run's log too.
"""
import logging
import os
import sys
from typing import Optional

LIBRARY_LOGGER = "src"


def get_logger(name: str = "vig", output_dir: Optional[str] = None, rank: int = 0) -> logging.Logger:
    """Rank 0 logs to the console; every rank with an output folder logs to its own file."""
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
        os.makedirs(output_dir, exist_ok=True)
        suffix = "" if rank == 0 else f"_rank{rank}"
        handlers.append(logging.FileHandler(os.path.join(output_dir, f"{name}{suffix}.log")))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.vig_run_handler = True
        logger.addHandler(handler)
        library.addHandler(handler)
    if library.level == logging.NOTSET or library.level > logging.INFO:
        library.setLevel(logging.INFO)
    return logger
