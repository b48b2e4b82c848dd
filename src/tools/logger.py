"""Run logging: one logger per process, on the console and in ``<train_url>/<name>.log``.

The project's modules log through their own loggers (``src.data.files`` names skipped images,
for instance); their warnings go to the same console and file as the run's messages.
"""
import logging
import os
import sys
from typing import Optional


def get_logger(name: str = "vig", output_dir: Optional[str] = None, rank: int = 0) -> logging.Logger:
    """Rank 0 logs to the console; every rank with an output folder logs to its own file."""
    logger = logging.getLogger(f"{name}.{rank}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    modules = logging.getLogger("src")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        modules.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        logger.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        suffix = "" if rank == 0 else f"_rank{rank}"
        handler = logging.FileHandler(os.path.join(output_dir, f"{name}{suffix}.log"))
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    for handler in logger.handlers:
        modules.addHandler(handler)
    return logger
