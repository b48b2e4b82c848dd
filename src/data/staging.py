"""Write a folder completely or not at all: build it as a hidden sibling, then rename it into place.

The sibling is ``<parent>/.<name>.tmp-<pid>-<8 hex digits>`` and the first file written into it
is the caller's marker (JSON) naming the writer (``{"writer": {"host": ..., "pid": ...}}``).
Renaming publishes it atomically onto a missing or empty destination, so readers (and other
ranks) never see half a folder, and a destination holding anything is never replaced.

A writer killed midway leaves its sibling behind.  The next ``StagedDir`` for the same
destination removes such a sibling only when it can prove it wrote it: the name pattern, the
marker inside naming the same pid, this host, and no process of that pid alive.  Anything
else next to the destination is left alone.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import socket
import uuid

from ..utils.files import write_json
from ..utils.processes import process_alive

__all__ = ["StagedDir"]

logger = logging.getLogger(__name__)


class StagedDir:
    """``with StagedDir(dest, marker, content) as stage:`` write into ``stage.path``, then
    ``stage.publish()``; leaving the block without publishing removes the unfinished sibling."""

    def __init__(self, dest: str, marker: str, content: dict) -> None:
        self.dest = os.path.abspath(dest)
        self.parent, self.name = os.path.split(self.dest)
        self.marker = marker
        self.content = dict(content)
        self.path = ""

    def _pattern(self) -> re.Pattern:
        return re.compile(rf"\.{re.escape(self.name)}\.tmp-(\d+)-[0-9a-f]{{8}}")

    def _provably_stale(self, entry: os.DirEntry, pid: int) -> bool:
        marker = os.path.join(entry.path, self.marker)
        if not entry.is_dir(follow_symlinks=False) or os.path.islink(marker) or not os.path.isfile(marker):
            return False
        try:
            with open(marker, encoding="utf-8") as handle:
                writer = json.load(handle).get("writer", {})
        except (OSError, ValueError, AttributeError):
            return False
        return writer == {"host": socket.gethostname(), "pid": pid} and not process_alive(pid)

    def remove_stale(self) -> None:
        """Remove the unfinished siblings of writers that died (see the module docstring)."""
        if not os.path.isdir(self.parent):
            return
        pattern = self._pattern()
        for entry in os.scandir(self.parent):
            found = pattern.fullmatch(entry.name)
            if found and self._provably_stale(entry, int(found.group(1))):
                logger.info("removing %s, left unfinished by an interrupted earlier run", entry.path)
                shutil.rmtree(entry.path)

    def __enter__(self) -> "StagedDir":
        self.remove_stale()
        os.makedirs(self.parent, exist_ok=True)
        # not tempfile.mkdtemp: its 0700 mode would end up on the renamed folder
        self.path = os.path.join(self.parent, f".{self.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.mkdir(self.path)
        self.write_marker({})
        return self

    def write_marker(self, extra: dict) -> None:
        """(Re)write the marker: the content given at the start, ``extra`` and the writer."""
        write_json(os.path.join(self.path, self.marker),
                   {**self.content, **extra, "writer": {"host": socket.gethostname(), "pid": os.getpid()}})

    def publish(self) -> bool:
        """Rename the finished folder onto the destination; False if the destination is not empty
        (e.g. another process published first), in which case nothing was changed there."""
        try:
            os.rename(self.path, self.dest)
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                return False
            raise
        return True

    def __exit__(self, *exc) -> None:
        if self.path and os.path.isdir(self.path):  # not published: our own unfinished folder
            shutil.rmtree(self.path)
