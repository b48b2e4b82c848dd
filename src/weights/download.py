"""Fetch a released checkpoint file once: cached, resumable, checked.

The file goes to the cache folder (``VIG_WEIGHTS_CACHE``, default ``~/.cache/vig_mindspore/weights``)
under the URL's file name. Bytes arrive in ``<name>.part``; an interrupted transfer is resumed with an
HTTP Range request (in the same command, up to ``attempts`` times, or by running the command again),
and the file takes its final name only once its size and SHA-256 (where known) are right. A cached
file that checks out is used without any network access. Without a network the error names the URL,
so the file can be fetched by hand and converted with ``--src``.
"""
import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

from .checkpoint import CheckpointError

CHUNK = 1 << 20
_HAND = "fetch it by hand (e.g. on a machine with network access) and convert it with --src <file>"


class DownloadError(CheckpointError):
    """A release file that could not be fetched or does not check out; the message names the URL."""


class _Interrupted(Exception):
    """The transfer stopped before the end; what arrived is kept for a resume."""


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("VIG_WEIGHTS_CACHE", "~/.cache/vig_mindspore/weights"))


def file_name(url: str) -> str:
    return urllib.parse.unquote(os.path.basename(urllib.parse.urlparse(url).path))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _problem(path: str, url: str, sha256: Optional[str], num_bytes: Optional[int]) -> Optional[str]:
    """Why the file at ``path`` is not the release file, or None when it checks out (as far as known)."""
    size = os.path.getsize(path)
    if num_bytes is not None and size != num_bytes:
        return f"it has {size:,} bytes, the release file {num_bytes:,}"
    if sha256:
        actual = _sha256(path)
        if not actual.startswith(sha256.lower()):
            return f"its SHA-256 is {actual[:16]}..., the release file's starts with {sha256[:16]}"
    return None


class _Progress:
    """A one-line progress bar on stderr when it is a terminal; otherwise one line at the end."""

    def __init__(self, name: str, total: Optional[int], start: int):
        self.name, self.total, self.start, self.done = name, total, start, start
        self.began = self.shown = time.monotonic()
        self.live = sys.stderr.isatty()

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.live and now - self.shown > 0.2:
            self.shown = now
            sys.stderr.write("\r" + self._line(now))
            sys.stderr.flush()

    def _line(self, now: float) -> str:
        rate = (self.done - self.start) / max(now - self.began, 1e-6) / 1e6
        if self.total:
            filled = int(30 * self.done / self.total)
            return (f"{self.name} [{'#' * filled}{'.' * (30 - filled)}] {100 * self.done / self.total:5.1f}% "
                    f"{self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB {rate:.1f} MB/s")
        return f"{self.name} {self.done / 1e6:.1f} MB {rate:.1f} MB/s"

    def close(self) -> None:
        sys.stderr.write(("\r" if self.live else "") + self._line(time.monotonic()) + "\n")
        sys.stderr.flush()


def _transfer(url: str, part: str, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (a Range request from its current size)."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the partial file is already whole
            return
        raise
    with response:
        if have and response.status != 206:  # the server ignored the range: start again
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = _Progress(file_name(url), total, have) if progress else None
        received = have
        try:
            with open(part, "ab" if have else "wb") as handle:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as err:
                        raise _Interrupted(f"{type(err).__name__}: {err}") from None
                    if not block:
                        break
                    handle.write(block)
                    received += len(block)
                    if bar:
                        bar.update(len(block))
        finally:
            if bar:
                bar.close()
        if total is not None and received < total:
            raise _Interrupted(f"the connection closed after {received:,} of {total:,} bytes")


def download(url: str, sha256: Optional[str] = None, num_bytes: Optional[int] = None, folder: Optional[str] = None,
             attempts: int = 3, timeout: float = 60.0, progress: bool = True) -> str:
    """The path of the release file ``url`` in the cache, downloading (or finishing) it when needed."""
    folder = folder or cache_dir()
    path = os.path.join(folder, file_name(url))
    if os.path.isfile(path):
        problem = _problem(path, url, sha256, num_bytes)
        if problem is None:
            return path
        os.replace(path, path + ".part")  # a file that does not check out is finished or fetched again below
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create the weights cache {folder!r} ({err.strerror or err}); set "
                            f"VIG_WEIGHTS_CACHE to a writable folder") from None
    part = path + ".part"
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, part, timeout, progress)
            break
        except _Interrupted as err:
            if attempt == attempts:
                raise DownloadError(f"the download of {url} was interrupted {attempts} times (last: {err}); the "
                                    f"{os.path.getsize(part):,} bytes received are kept in {part}: run the same "
                                    f"command again to resume") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise DownloadError(f"cannot download {url} ({reason}); {_HAND}") from None
    problem = _problem(part, url, sha256, num_bytes)
    if problem is not None:
        os.remove(part)
        raise DownloadError(f"the file downloaded from {url} is not the release file: {problem}. It was deleted; run "
                            f"the command again to download it anew, or {_HAND}")
    os.replace(part, path)
    return path
