"""What every entry point shares: a mistake a user can fix is one line on stderr, not a traceback.

User errors are the project's own error classes (a bad configuration, dataset, checkpoint, output
folder or model choice) and missing or unreadable files: exit status 2. A training run that ended
early (stopped by a signal, or no longer learning) has logged its one line already; its exit status
says how it ended (128 + signal, or 1). Anything else is a fault and keeps its traceback.
"""
import os
import sys
from typing import Callable

from .config import ConfigError
from .device import DeviceError
from ..data import DatasetError
from ..deploy.errors import DeployError
from ..engine.trainer import RunStopped
from ..models import ModelError
from ..weights.checkpoint import CheckpointError
from ..weights.files import OutputFolderError
from ..weights.pth_reader import PthFormatError

USER_ERRORS = (ConfigError, DeviceError, DatasetError, DeployError, ModelError, CheckpointError, OutputFolderError,
               PthFormatError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
TRACEBACK_HINT = "(set VIG_TRACEBACK=1 to see the traceback)"


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main``; a user error prints ``error: <message>`` and exits with status 2.

    Set VIG_TRACEBACK=1 to see the full traceback of such an error.
    """
    try:
        main()
    except USER_ERRORS as err:
        if os.environ.get("VIG_TRACEBACK"):
            raise
        print(f"error: {err} {TRACEBACK_HINT}", file=sys.stderr)
        sys.exit(2)
    except RunStopped as err:
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
