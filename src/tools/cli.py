"""What every entry point shares: errors a user can fix are one line on stderr, not a traceback."""
import os
import sys
from typing import Callable

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def run_cli(main: Callable[[], None]) -> None:
    """Run ``main``; a user error prints ``error: <message>`` and exits with status 2.

    Set VIG_TRACEBACK=1 to see the full traceback of such an error.
    """
    try:
        main()
    except USER_ERRORS as err:
        if os.environ.get("VIG_TRACEBACK"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
