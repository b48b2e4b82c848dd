"""How the project writes into a folder: proven writable, locked by one run, files renamed into place.

* ``check_writable`` / ``check_free_space``: a job proves at start that its output folder takes a
  file (a probe file it creates and removes) and has room for what it will write, instead of failing
  with a traceback after an epoch.
* ``temporary_path``: every file is written as ``.<stem>.tmp<pid><ext>`` beside its final name and
  renamed into place (``atomic_path``, ``write_text``, ``write_json``), so an interrupted write never
  leaves a truncated file under the real name.
  ``remove_stale_temporaries`` removes what such a write left behind: only names of this pattern
  (MindSpore's checkpoint writer adds its own ``.tmp`` suffix step, ``.<stem>.tmp<pid>.tmp``) whose
  process ``<pid>`` no longer runs on this host; nothing else is ever removed.
* ``FolderLock``: one training run owns its output folder. The lock is ``fcntl.flock`` on
  ``.run.lock`` in the folder, which the kernel releases when the owner dies however it dies (no
  stale lock after a kill -9); the file names the owner (pid, host, start time) for the message
  a second run gets.
"""
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import time
from typing import Iterator, List, Optional

from .processes import process_alive

TEMPORARY = re.compile(r"^\.(?P<stem>.+)\.tmp(?P<pid>\d+)\.(?P<ext>[A-Za-z0-9]+)$")
LOCK_NAME = ".run.lock"


class OutputFolderError(ValueError):
    """An output folder that cannot take the job's files, or is in use by another run."""


def temporary_path(path: str) -> str:
    """The name ``path`` is written under before it is renamed into place (same folder, same extension)."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.tmp{os.getpid()}{ext}")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """``with atomic_path(path) as tmp:`` write the file ``tmp``; it is renamed onto ``path`` when the block
    ends normally and removed when it does not, so ``path`` holds the old file or the whole new one."""
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``atomic_path``)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_json(path: str, data) -> None:
    """Write ``data`` as JSON to ``path`` atomically (``atomic_path``)."""
    write_text(path, json.dumps(data, indent=1))


def remove_stale_temporaries(folder: str, extensions) -> List[str]:
    """Remove ``.<stem>.tmp<pid>.<ext>`` files (``ext`` in ``extensions``) of processes that are gone;
    returns the removed paths."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for entry in os.scandir(folder):
        found = TEMPORARY.match(entry.name)
        if (found is None or found.group("ext") not in extensions or not entry.is_file(follow_symlinks=False)
                or int(found.group("pid")) == os.getpid() or process_alive(int(found.group("pid")))):
            continue
        try:
            os.remove(entry.path)
        except FileNotFoundError:  # another cleaner was first
            continue
        removed.append(entry.path)
    return removed


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def check_writable(folder: str, what: str, option: str) -> None:
    """Create ``folder`` if needed and prove it takes a file; ``what``/``option`` name it in the error."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise OutputFolderError(f"cannot create the {what} {folder!r} ({_reason(err)}); choose another "
                                f"--{option}") from None
    probe = os.path.join(folder, f".write-probe.tmp{os.getpid()}.probe")
    try:
        handle = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(handle, b"probe")
            os.fsync(handle)
        finally:
            os.close(handle)
            os.remove(probe)
    except OSError as err:
        raise OutputFolderError(f"the {what} {folder!r} is not writable ({_reason(err)}); make it writable or "
                                f"choose another --{option}") from None


def check_free_space(folder: str, needed_bytes: int, what: str, option: str, needed_for: str) -> None:
    """Refuse to start when ``folder`` has less than ``needed_bytes`` free (``needed_for`` says for what)."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OutputFolderError(f"the {what} {folder!r} has {free / 2 ** 20:.1f} MiB free but {needed_for} needs "
                                f"about {needed_bytes / 2 ** 20:.1f} MiB; free some space or choose another "
                                f"--{option}")


class FolderLock:
    """Exclusive ownership of ``folder`` by this process (see the module docstring)."""

    def __init__(self, folder: str, option: str):
        self.folder = folder
        self.option = option
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: Optional[int] = None

    def acquire(self) -> "FolderLock":
        """Take the lock or raise OutputFolderError naming the owner. Where the file system has no locks
        (some network mounts), the folder is used unlocked."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputFolderError(f"{self.folder!r} is in use by another training run ({self.owner()}); wait "
                                        f"for it to finish or stop it, or choose another --{self.option}") from None
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    return self
                raise
            try:  # the previous owner may have removed the file between our open and our lock: lock the new one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        self._fd = fd
        return self

    def owner(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as handle:
                record = json.load(handle)
            return f"pid {record['pid']} on {record['host']}, started {record['started']}"
        except (OSError, ValueError, KeyError):  # being written this very moment
            return "owner not recorded yet"

    def release(self) -> None:
        """Remove the lock file while still holding it, then let go."""
        if self._fd is None:
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
