"""Compiled CPU kernels (MindSpore ahead-of-time custom operators) for ops whose CPU kernels are slow.

Each kernel is a C++ file next to this module, compiled on first use with the system C++ compiler
into a cache folder (``VIG_KERNEL_CACHE``, default ``~/.cache/vig_mindspore``), named by a hash of
its source and flags, and written atomically so that concurrent processes can share it. When no
compiler is found, or compiling fails, ``load`` returns None and the callers keep MindSpore's own
kernels, with the same results.
"""
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from typing import Optional

_HERE = os.path.dirname(os.path.abspath(__file__))
_LOADED = {}
logger = logging.getLogger(__name__)


def _cpu_has(*flags: str) -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            present = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return all(flag in present for flag in flags)


def _flags():
    """Compile and link flags; the AVX2 path calls glibc's vector math (libmvec) explicitly."""
    flags = ["-O3", "-std=c++17", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno"]
    if _cpu_has("avx2", "fma"):
        flags += ["-mavx2", "-mfma", "-DVIG_AVX2", "-lmvec"]
    return flags + ["-lm"]


def load(name: str) -> Optional[str]:
    """Path of the compiled library for ``<name>.cc`` (compiled if needed), or None if unavailable."""
    if name in _LOADED:
        return _LOADED[name]
    _LOADED[name] = None
    if os.environ.get("VIG_DISABLE_KERNELS"):
        return None
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    source = os.path.join(_HERE, f"{name}.cc")
    if not compiler or not shutil.which(compiler):
        logger.warning("no C++ compiler found: %s falls back to MindSpore's slower CPU kernel", name)
        return None
    flags = _flags()
    with open(source, "rb") as handle:
        digest = hashlib.sha256(handle.read() + " ".join([compiler] + flags).encode()).hexdigest()[:16]
    cache = os.path.expanduser(os.environ.get("VIG_KERNEL_CACHE", "~/.cache/vig_mindspore"))
    target = os.path.join(cache, f"{name}-{digest}.so")
    if not os.path.exists(target):
        os.makedirs(cache, exist_ok=True)
        handle, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
        os.close(handle)
        done = subprocess.run([compiler, source, "-o", tmp, *flags], capture_output=True, text=True)
        if done.returncode != 0:
            os.remove(tmp)
            logger.warning("compiling %s failed, falling back to MindSpore's CPU kernel:\n%s", name, done.stderr[-2000:])
            return None
        os.replace(tmp, target)
    _LOADED[name] = target
    return target
