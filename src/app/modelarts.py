"""ModelArts jobs (``run_modelarts: true``, alias ``enable_modelarts``), as the ModelZoo runs them.

Object-store paths (``obs://...``) go through ``moxing``, which ModelArts images provide (it is not on
PyPI): the config file is read through it; ``data_url``, ``pretrained`` and an explicit ``resume`` are
copied once per server to ``cache_dir`` (the first process to take a lock file copies, the others of the
server wait for its ``.done`` marker); ``train_url`` is written locally in ``cache_dir/train`` and rank 0
copies the files that changed to the object store after every checkpoint (a stop by SIGTERM saves and
uploads one too) and at the end, so a preempted job loses at most one checkpoint interval. ``--resume
auto`` continues from the ``last.ckpt`` of the remote train_url, and brings its ``train.log`` and
``metrics.jsonl`` along, which the new segment appends to: the job's history survives a new container.
The folder's internal files (its run lock, temporaries, the copy markers) never leave the local cache.
An evaluation job writes its results as JSON to ``train_url`` (ModelArts passes the job's output location).
"""
import itertools
import json
import os
from typing import Dict, Optional, Tuple

from .config import Config, ConfigError, is_remote
from ..engine.run_checkpoints import RunCheckpoints
from ..utils.files import write_text
from ..utils.processes import wait_until

SYNC_WAIT_SECONDS = 6 * 3600  # an ImageNet copy takes tens of minutes


def require_moxing():
    """The moxing module, or a clear error at the start of the job."""
    try:
        import moxing
    except ImportError:
        raise ConfigError("run_modelarts needs the moxing package, which ModelArts training images provide (it is "
                          "not on PyPI): run the job on ModelArts, or drop --run_modelarts and give local paths") \
            from None
    return moxing


def read_text(url: str) -> str:
    with require_moxing().file.File(url, "r") as handle:
        text = handle.read()
    return text.decode("utf-8") if isinstance(text, bytes) else text


def sync_in(url: str, local: str, is_file: bool = False, wait_seconds: float = SYNC_WAIT_SECONDS,
            marker: Optional[str] = None) -> str:
    """``url`` copied to ``local`` once per server; returns ``local``. The process that creates
    ``<marker>.lock`` copies and then writes ``<marker>.done`` (holding the url); the others wait for it.
    ``marker`` defaults to ``local`` itself; files that go into the run's output folder keep their markers
    outside it, so that they are never uploaded."""
    marker = (marker or local).rstrip("/")
    done, lock = marker + ".done", marker + ".lock"
    os.makedirs(os.path.dirname(done) or ".", exist_ok=True)
    if not os.path.exists(done):
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            if not wait_until(lambda: os.path.exists(done), wait_seconds):
                raise ConfigError(f"waited {wait_seconds:.0f} s for another process to copy {url} to {local} "
                                  f"({done} never appeared); if a copier died, delete {lock} and restart")
        else:
            mox = require_moxing()
            if is_file:
                mox.file.copy(url, local)
            else:
                mox.file.copy_parallel(url, local)
            write_text(done, url)
    with open(done, encoding="utf-8") as handle:
        copied = handle.read()
    if copied != url:
        raise ConfigError(f"{local} holds a copy of {copied}, not of {url}: use another cache_dir")
    return local


def localise(cfg: Config, training: bool) -> Tuple[Config, Optional[str]]:
    """``cfg`` with its object-store inputs copied under ``cache_dir`` and, for training, ``train_url``
    written locally; and the object-store folder the local train_url stands for (or None)."""
    require_moxing()
    cache = cfg.cache_dir
    local: Dict[str, str] = {}
    if is_remote(cfg.data_url):
        local["data_url"] = sync_in(cfg.data_url, os.path.join(cache, "data"))
    inputs = (("pretrained", "weight"), ("resume", "resume")) if training else (("pretrained", "weight"),)
    for key, folder in inputs:
        if is_remote(cfg[key]):
            local[key] = sync_in(cfg[key], os.path.join(cache, folder, os.path.basename(cfg[key])), is_file=True)
    if not (training and is_remote(cfg.train_url)):
        return cfg.replace(**local), None
    local["train_url"] = os.path.join(cache, "train")
    os.makedirs(local["train_url"], exist_ok=True)
    _check_remote_run(cfg, local["train_url"])
    return cfg.replace(**local), cfg.train_url


# What a resumed job brings from the remote train_url into its local folder: the checkpoint it continues from,
# and the history the new segment appends to (training_curves.png is drawn from metrics.jsonl at the end).
RESUMED_FILES = ("last.ckpt", "train.log", "metrics.jsonl")


def _check_remote_run(cfg: Config, local: str) -> None:
    """A remote train_url that holds checkpoints is continued only with resume; with ``resume auto`` its
    last.ckpt, train.log and metrics.jsonl come into the local folder (unless an earlier segment in this
    container left them there), where the run finds and continues them. The local folder serves one
    remote train_url only."""
    mox = require_moxing()
    url = cfg.train_url.rstrip("/")
    source = os.path.join(cfg.cache_dir, "train.source")
    if os.path.exists(source):
        with open(source, encoding="utf-8") as handle:
            owner = handle.read()
        if owner != url:
            raise ConfigError(f"{local} holds the outputs of {owner}, not of {url}: use another cache_dir")
    else:
        write_text(source, url)
    names = mox.file.list_directory(url) if mox.file.exists(url) else []
    if cfg.resume is None and any(name.endswith(".ckpt") for name in names):
        raise ConfigError(f"{cfg.train_url!r} already holds checkpoints; pass --resume auto to continue that run or "
                          f"choose another train_url")
    if cfg.resume == "auto" and "last.ckpt" in names:
        for name in RESUMED_FILES:
            if name in names and not os.path.exists(os.path.join(local, name)):
                sync_in(f"{url}/{name}", os.path.join(local, name), is_file=True,
                        marker=os.path.join(cfg.cache_dir, "train.sync", name))


def uploaded_files(folder: str):
    """The files of a local output folder that belong on the object store: all but the hidden ones (the run
    lock, temporaries of interrupted writes, write probes)."""
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                yield os.path.relpath(os.path.join(root, name), folder)


class UploadingCheckpoints(RunCheckpoints):
    """A run's checkpoints, with the local output folder copied to the object store after each save."""

    def __init__(self, folder: str, keep_last: int, writer: bool, remote: str):
        super().__init__(folder, keep_last, writer)
        self.remote = remote.rstrip("/")
        self.sent: Dict[str, Tuple[int, int]] = {}  # relative path -> (size, mtime_ns) when uploaded

    @property
    def location(self) -> str:
        return f"{self.remote} (local copy {self.folder})"

    def upload(self) -> None:
        """Copy the files that changed since the last upload; remove from the object store the checkpoints this
        job uploaded and has since pruned locally (``keep_last``), so the store keeps what the folder keeps."""
        if not self.writer:
            return
        mox = require_moxing()
        present = set()
        for name in uploaded_files(self.folder):
            present.add(name)
            stat = os.stat(os.path.join(self.folder, name))
            if self.sent.get(name) != (stat.st_size, stat.st_mtime_ns):
                mox.file.copy(os.path.join(self.folder, name), f"{self.remote}/{name}")
                self.sent[name] = (stat.st_size, stat.st_mtime_ns)
        for name in sorted(set(self.sent) - present):
            if name.endswith(".ckpt"):
                mox.file.remove(f"{self.remote}/{name}")
            del self.sent[name]

    def save_best(self, *args, **kwargs) -> None:
        super().save_best(*args, **kwargs)
        self.upload()

    def save_epoch(self, *args, **kwargs) -> None:
        super().save_epoch(*args, **kwargs)
        self.upload()

    def save_last(self, *args, **kwargs) -> str:
        path = super().save_last(*args, **kwargs)
        self.upload()
        return path


def run_checkpoints(folder: str, keep_last: int, rank: int, remote: Optional[str] = None
                    ) -> Tuple[RunCheckpoints, Optional[UploadingCheckpoints]]:
    """The checkpoints of a run in ``folder``, and the uploader when the folder stands for the object-store
    folder ``remote``."""
    if remote:
        checkpoints = UploadingCheckpoints(folder, keep_last, rank == 0, remote)
        return checkpoints, checkpoints
    return RunCheckpoints(folder, keep_last, writer=rank == 0), None


def write_results(folder: str, record: dict, cache_dir: str, stem: str = "eval_results") -> str:
    """``record`` as ``<stem>.json`` in ``folder`` (an object-store URL goes through a local copy under
    ``cache_dir``); an existing file is never replaced: the next free name ``<stem>-2.json``, ... is taken.
    Returns where it was written."""
    text = json.dumps(record, indent=1) + "\n"
    if not is_remote(folder):
        os.makedirs(folder, exist_ok=True)
        for n in itertools.count(1):
            path = os.path.join(folder, f"{stem}{'' if n == 1 else f'-{n}'}.json")
            try:
                with open(path, "x", encoding="utf-8") as handle:
                    handle.write(text)
                return path
            except FileExistsError:
                continue
    mox = require_moxing()
    local = write_results(os.path.join(cache_dir, "results"), record, cache_dir, stem)
    url = folder.rstrip("/")
    for n in itertools.count(1):
        target = f"{url}/{stem}{'' if n == 1 else f'-{n}'}.json"
        if not mox.file.exists(target):
            mox.file.copy(local, target)
            return target
