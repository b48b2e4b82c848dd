"""Timing and memory of the running process, and the machine's name: shared by the MindSpore, PyTorch and
onnxruntime measurements, so this module imports none of them."""
import os
import platform
import resource
import time
from typing import Callable, List, Tuple


def time_calls(call: Callable[[], object], warmup: int, runs: int) -> List[float]:
    """Seconds of each of ``runs`` calls after ``warmup`` untimed ones; ``call`` returns when its work is done."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def measure(call: Callable[[], object], warmup: int, runs: int,
            fetch: Callable[[object], object] = lambda out: out) -> Tuple[object, float, float, List[float]]:
    """(first output, seconds of the first call (a graph compile included), peak memory after it (MB),
    seconds of each timed call). ``fetch`` turns an output into a finished value (MindSpore runs
    asynchronously)."""
    start = time.perf_counter()
    first = fetch(call())
    first_s = time.perf_counter() - start
    first_peak = peak_memory_mb()
    return first, first_s, first_peak, time_calls(lambda: fetch(call()), warmup, runs)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_mb() -> float:
    """Resident memory of this process now (0 where /proc is absent)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return 0.0


def cpu_name() -> str:
    """The CPU model (family and model numbers too: some VMs name only the vendor line) and core count."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            fields = dict(line.split(":", 1) for line in handle.read().split("\n\n")[0].splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        cpu = f"{fields['model name']} (family {fields['cpu family']}, model {fields['model']})"
    except (OSError, KeyError):
        pass
    return f"{cpu}, {os.cpu_count()} cores"
