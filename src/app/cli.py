"""What every entry point shares: a mistake a user can fix is one line on stderr, not a traceback.

User errors are the project's own error classes (a bad configuration, dataset, checkpoint, output
folder or model choice) and missing or unreadable files: exit status 2. A training run that ended
early (stopped by a signal, or no longer learning) has logged its one line already; its exit status
says how it ended (128 + signal, or 1). Anything else is a fault and keeps its traceback.

This module imports nothing of the project: the entry points import it first, and their ``--help`` and
argument errors must not wait for MindSpore.
"""
import os
import sys
from typing import Callable, Optional, Tuple

# The project's error classes for mistakes a user can fix, by module. An exception can only be an instance of a
# class whose module is loaded, so they are looked up in sys.modules when an error arrives: judging an error never
# imports anything.
USER_ERRORS = {"app.config": "ConfigError", "app.device": "DeviceError", "data.errors": "DatasetError",
               "deploy.errors": "DeployError", "models.errors": "ModelError", "weights.checkpoint": "CheckpointError",
               "utils.files": "OutputFolderError", "weights.pth_reader": "PthFormatError"}
FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
RUN_STOPPED = ("engine.trainer", "RunStopped")  # a training run that stopped early and said why
TRACEBACK_HINT = "(set VIG_TRACEBACK=1 to see the traceback)"
_PROJECT = __name__.rsplit(".", 2)[0]  # "src"


def loaded_class(module: str, name: str) -> Optional[type]:
    """The class ``name`` of the project module ``module`` if that module is loaded, else None."""
    loaded = sys.modules.get(f"{_PROJECT}.{module}")
    return getattr(loaded, name) if loaded is not None else None


def user_errors() -> Tuple[type, ...]:
    """The error classes that ``run_cli`` prints as one line (those of the loaded modules)."""
    return FILE_ERRORS + tuple(cls for cls in (loaded_class(m, n) for m, n in USER_ERRORS.items()) if cls)


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main``; a user error prints ``error: <message>`` and exits with status 2.

    Set VIG_TRACEBACK=1 to see the full traceback of such an error.
    """
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        stopped = loaded_class(*RUN_STOPPED)
        if stopped and isinstance(err, stopped):
            sys.exit(err.exit_code)
        if not isinstance(err, user_errors()) or os.environ.get("VIG_TRACEBACK"):
            raise
        print(f"error: {err} {TRACEBACK_HINT}", file=sys.stderr)
        sys.exit(2)
