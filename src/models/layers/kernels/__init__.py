"""Compiled CPU kernels (MindSpore ahead-of-time custom operators) for ops whose CPU kernels are slow.

Each kernel is a C++ file next to this module, compiled with the system C++ compiler (``CXX``, else
``g++``/``c++``) into a cache folder (``VIG_KERNEL_CACHE``, default ``~/.cache/vig_mindspore``), named by
a hash of its source, the header every kernel includes (``kernel.h``: dtype checks, worker threads) and
the flags. Only the 'cpu' formulation asks for them (``form.cpu_formulation``).

The cache never breaks a run: whatever goes wrong (no compiler, an unwritable or full folder, a
compile that fails or exceeds ``COMPILE_TIMEOUT``, an unreadable or damaged library) ``load`` logs a
warning on this module's logger and returns None, and the callers keep MindSpore's own kernels with
the same results; the answer is kept for the rest of the process. A library is compiled under a
temporary name and renamed, readable by all, so that processes and users can share a folder; a
damaged library is rebuilt in place. Temporary files of builds that were killed are removed by a
later start (only files named by this module whose process is gone or which are older than any
build can last). This module uses the standard library only.
"""
import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional

_HERE = os.path.dirname(os.path.abspath(__file__))
SYMBOLS = {"gelu_cpu": ("GeluForward", "GeluBackward"),
           "topk_cpu": ("DilatedKnn", "DilatedKnnTerm", "DilatedKnnResized", "NormalizedRows"),
           "masked_max_cpu": ("MaskedMaxForward", "MaskedMaxBackward"),
           "gather_max_cpu": ("GatherMaxForward", "GatherMaxBackward"),
           "batch_norm_cpu": ("BatchNormInference",)}
HEADER = "kernel.h"
COMPILE_TIMEOUT = 120.0  # seconds; a compile takes about one
_TMP_PREFIX = ".vig-build"  # temporary files: <prefix>.<pid>.<host>.<random>.so
_TMP_NAME = re.compile(re.escape(_TMP_PREFIX) + r"\.(\d+)\.(.+)\.[A-Za-z0-9_]+\.so$")
_CHECK = "import ctypes\nlibrary = ctypes.CDLL({path!r})\nfor symbol in {symbols!r}:\n    getattr(library, symbol)"
_LOADED = {}
logger = logging.getLogger(__name__)


class KernelBuildError(Exception):
    """A kernel could not be built or reused; the message says why."""


def _cpu_has(*flags: str) -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            present = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return all(flag in present for flag in flags)


def _flags():
    """Compile and link flags; the AVX2 path calls glibc's vector math (libmvec) explicitly."""
    flags = ["-O3", "-std=c++17", "-pthread", "-fPIC", "-shared", "-fno-math-errno"]
    if _cpu_has("avx2", "fma"):
        flags += ["-mavx2", "-mfma", "-DVIG_AVX2", "-lmvec"]
    return flags + ["-lm"]


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("VIG_KERNEL_CACHE", "~/.cache/vig_mindspore"))


def load(name: str) -> Optional[str]:
    """Path of the compiled library for ``<name>.cc`` (compiled if needed), or None if unavailable."""
    if name not in _LOADED:
        _LOADED[name] = _build_or_reuse(name)
    return _LOADED[name]


def _compiler() -> Optional[str]:
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    return compiler if compiler and shutil.which(compiler) else None


def library_path(name: str, compiler: str) -> str:
    """Where the library of ``<name>.cc`` built by ``compiler`` is cached (named by sources and flags)."""
    digest = hashlib.sha256(" ".join([compiler] + _flags()).encode())
    for source in (f"{name}.cc", HEADER):
        with open(os.path.join(_HERE, source), "rb") as handle:
            digest.update(handle.read())
    return os.path.join(cache_dir(), f"{name}-{digest.hexdigest()[:16]}.so")


def _build_or_reuse(name: str) -> Optional[str]:
    if os.environ.get("VIG_DISABLE_KERNELS"):
        return None
    compiler = _compiler()
    if compiler is None:
        logger.warning("no C++ compiler found (set CXX or install g++): %s falls back to MindSpore's CPU kernel", name)
        return None
    target = library_path(name, compiler)
    remove_stale_builds(os.path.dirname(target))
    if os.path.exists(target):
        problem = library_problem(target, SYMBOLS[name])
        if problem is None:
            return target
        logger.warning("the cached kernel %s is unusable (%s); rebuilding it", target, problem)
    try:
        _compile(compiler, os.path.join(_HERE, f"{name}.cc"), target)
        problem = library_problem(target, SYMBOLS[name])
        if problem is not None:
            raise KernelBuildError(f"the compiled {target} is unusable ({problem})")
    except KernelBuildError as err:
        logger.warning("%s falls back to MindSpore's CPU kernel: %s", name, err)
        return None
    return target


def _compile(compiler: str, source: str, target: str) -> None:
    """Compile into a temporary file beside ``target``, make it readable by all and rename it."""
    cache = os.path.dirname(target)
    logger.info("compiling the CPU kernel %s into %s", os.path.basename(source), cache)
    try:
        os.makedirs(cache, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}.{os.getpid()}.{socket.gethostname()}.", suffix=".so",
                                       dir=cache)
        os.close(handle)
    except OSError as err:
        raise KernelBuildError(f"cannot write to the kernel cache {cache} ({err.strerror}); set VIG_KERNEL_CACHE "
                               f"to a writable folder") from None
    try:
        # A session of its own, so that a timeout ends the compiler's subprocesses too.
        process = subprocess.Popen([compiler, source, "-o", tmp, *_flags()], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=COMPILE_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise KernelBuildError(f"compiling took longer than {COMPILE_TIMEOUT:.0f} s and was stopped") from None
        if process.returncode != 0:
            raise KernelBuildError(f"compiling failed:\n{output[-2000:]}")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600: others sharing the folder must be able to load it
        os.replace(tmp, target)
    except OSError as err:
        raise KernelBuildError(f"cannot build in the kernel cache {cache} ({err})") from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def library_problem(path: str, symbols) -> Optional[str]:
    """Why the library at ``path`` cannot be used (unreadable, does not load, lacks a symbol), or None.

    It is loaded in a separate process: loading a damaged library can crash the loader instead of
    failing, and a process that loaded a library once gets that one again for the same path.
    """
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        return f"cannot read it: {err.strerror}"
    try:
        done = subprocess.run([sys.executable, "-c", _CHECK.format(path=path, symbols=tuple(symbols))],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return f"it could not be checked: {err}"
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"loading it ended with signal {-done.returncode}"


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by another user
        return False
    return False


def remove_stale_builds(cache: str) -> None:
    """Remove temporary files of killed builds: only files with this module's temporary name, written
    on this host by a process that no longer exists, or older than any build can last."""
    try:
        names = os.listdir(cache)
    except OSError:
        return
    host, now = socket.gethostname(), time.time()
    for file in names:
        match = _TMP_NAME.match(file)
        if not match:
            continue
        path = os.path.join(cache, file)
        try:
            old = now - os.path.getmtime(path) > 2 * COMPILE_TIMEOUT
            if old or (match.group(2) == host and _process_gone(int(match.group(1)))):
                os.remove(path)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
