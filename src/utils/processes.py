"""Processes of this host, and waiting for something another process does."""
import os
import time
from typing import Callable


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a process of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until(ready: Callable[[], bool], seconds: float, interval: float = 1.0) -> bool:
    """Poll ``ready`` every ``interval`` seconds until it holds (True) or ``seconds`` have passed (False)."""
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
