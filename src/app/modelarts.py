"""ModelArts jobs (``run_modelarts: true``, alias ``enable_modelarts``), as the ModelZoo runs them.

Object-store paths (``obs://...``) go through ``moxing``, which ModelArts images provide (it is not on
PyPI): the config file is read through it; ``data_url``, ``pretrained`` and an explicit ``resume`` are
copied once per server to ``cache_dir`` (the first process to take a lock file copies, the others of the
server wait for its ``.done`` marker); ``train_url`` is written locally in ``cache_dir/train`` and rank 0
copies that folder to the object store after every checkpoint (a stop by SIGTERM saves and uploads one
too) and at the end, so a preempted job loses at most one checkpoint interval. ``--resume auto`` continues from the ``last.ckpt`` of the remote train_url.
"""
import os
import time
from typing import Optional, Tuple

from .config import Config, ConfigError, is_remote
from ..engine.run_checkpoints import RunCheckpoints

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


def sync_in(url: str, local: str, is_file: bool = False, wait_seconds: float = SYNC_WAIT_SECONDS) -> str:
    """``url`` copied to ``local`` once per server; returns ``local``. The process that creates
    ``local.lock`` copies and then writes ``local.done`` (holding the url); the others wait for it."""
    done, lock = local.rstrip("/") + ".done", local.rstrip("/") + ".lock"
    os.makedirs(os.path.dirname(done) or ".", exist_ok=True)
    if not os.path.exists(done):
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            deadline = time.time() + wait_seconds
            while not os.path.exists(done):
                if time.time() > deadline:
                    raise ConfigError(f"waited {wait_seconds:.0f} s for another process to copy {url} to {local} "
                                      f"({done} never appeared); if a copier died, delete {lock} and restart")
                time.sleep(1)
        else:
            mox = require_moxing()
            if is_file:
                mox.file.copy(url, local)
            else:
                mox.file.copy_parallel(url, local)
            with open(done + ".tmp", "w", encoding="utf-8") as handle:
                handle.write(url)
            os.replace(done + ".tmp", done)
    with open(done, encoding="utf-8") as handle:
        copied = handle.read()
    if copied != url:
        raise ConfigError(f"{local} holds a copy of {copied}, not of {url}: use another cache_dir")
    return local


def localise(cfg: Config, training: bool) -> Config:
    """``cfg`` with its object-store inputs copied under ``cache_dir`` and, for training, ``train_url``
    written locally (``remote_train_url`` keeps the object-store folder, or None)."""
    require_moxing()
    cache = cfg.cache_dir
    out = Config(cfg)
    if is_remote(cfg.data_url):
        out["data_url"] = sync_in(cfg.data_url, os.path.join(cache, "data"))
    for key, folder in (("pretrained", "weight"), ("resume", "resume")):
        if is_remote(cfg[key]):
            out[key] = sync_in(cfg[key], os.path.join(cache, folder, os.path.basename(cfg[key])), is_file=True)
    out["remote_train_url"] = None
    if training and is_remote(cfg.train_url):
        out["remote_train_url"] = cfg.train_url
        out["train_url"] = local = os.path.join(cache, "train")
        os.makedirs(local, exist_ok=True)
        _check_remote_run(cfg, local)
    return out


def _check_remote_run(cfg: Config, local: str) -> None:
    """A remote train_url that holds checkpoints is continued only with resume; with ``resume auto`` its
    last.ckpt comes into the local folder, where the run finds it."""
    mox = require_moxing()
    url = cfg.train_url.rstrip("/")
    names = mox.file.list_directory(url) if mox.file.exists(url) else []
    if cfg.resume is None and any(name.endswith(".ckpt") for name in names):
        raise ConfigError(f"{cfg.train_url!r} already holds checkpoints; pass --resume auto to continue that run or "
                          f"choose another train_url")
    if cfg.resume == "auto" and "last.ckpt" in names:
        sync_in(f"{url}/last.ckpt", os.path.join(local, "last.ckpt"), is_file=True)


class UploadingCheckpoints(RunCheckpoints):
    """A run's checkpoints, with the local output folder copied to the object store after each save."""

    def __init__(self, folder: str, keep_last: int, writer: bool, remote: str):
        super().__init__(folder, keep_last, writer)
        self.remote = remote

    def upload(self) -> None:
        if self.writer:
            require_moxing().file.copy_parallel(self.folder, self.remote)

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


def run_checkpoints(cfg: Config, rank: int) -> Tuple[RunCheckpoints, Optional[UploadingCheckpoints]]:
    """The run's checkpoints, and the uploader when train_url is on the object store."""
    if cfg.get("remote_train_url"):
        checkpoints = UploadingCheckpoints(cfg.train_url, cfg.keep_last, rank == 0, cfg.remote_train_url)
        return checkpoints, checkpoints
    return RunCheckpoints(cfg.train_url, cfg.keep_last, writer=rank == 0), None
