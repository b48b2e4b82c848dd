"""Device, execution mode and data-parallel setup: the first thing every entry point does."""
import itertools
import os
import tempfile
from typing import Dict, Tuple

import mindspore as ms

# Ascend operator precision: every operator keeps its dtype. On Ascend 910A (Atlas training series) older MindSpore
# versions defaulted to force_fp16, which computes float32 matrix operators in float16 (the kNN distances, the SViG
# similarity); MindSpore 2.10 documents must_keep_origin_dtype as its default
# (mindspore/device_context/ascend/op_precision.py precision_mode); set here so the precision never depends on it.
ASCEND_PRECISION_MODE = "must_keep_origin_dtype"
# A process started by a launcher: msrun sets MS_WORKER_NUM/MS_ROLE; HCCL rank-table launches set RANK_TABLE_FILE.
_LAUNCHER_ENV = ("MS_WORKER_NUM", "MS_ROLE", "RANK_TABLE_FILE")
# MindSpore 2.10 writes the report of a failed graph compilation to <MS_OM_PATH>/rank_<id>/om/analyze_fail.ir,
# MS_OM_PATH defaulting to the working folder (libmindspore_frontend.so, read when a compilation fails): unless the
# environment sets it, it goes to a folder of this user's in the temporary folder, not into the caller's folder.
MINDSPORE_REPORTS = os.path.join(tempfile.gettempdir(), f"vig_mindspore_reports-{os.getuid()}")


class DeviceError(ValueError):
    """A device or data-parallel setup that cannot work as asked."""


def _env_int(env: Dict[str, str], name: str, default: int = 0) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        raise DeviceError(f"environment variable {name}={env[name]!r} is not an integer") from None


def data_parallel(distribute: bool, device_num: int = 1, env: Dict[str, str] = None) -> bool:
    """Whether this process joins a data-parallel group. Asked for by ``distribute``, or as the ModelZoo
    decides it, by a device count above one (``device_num`` or DEVICE_NUM in the environment). A process
    that a multi-card launcher started (RANK_TABLE_FILE, RANK_SIZE > 1, MS_WORKER_NUM > 1) but that is not
    asked to join would train one unsynchronised copy per device: that is an error, never a silent run."""
    env = os.environ if env is None else env
    join = distribute or device_num > 1 or _env_int(env, "DEVICE_NUM") > 1
    signals = [f"{k}={env[k]}" for k in ("RANK_TABLE_FILE", "RANK_SIZE", "MS_WORKER_NUM", "DEVICE_NUM")
               if k in env and (k == "RANK_TABLE_FILE" or _env_int(env, k) > 1)]
    if not join and signals:
        raise DeviceError(f"this process was started as one rank of a multi-device launch ({', '.join(signals)}) "
                          f"but distribute is false: pass --distribute true (or --device_num N) so the ranks train "
                          f"together, or unset those variables to train on one device")
    if join and not any(k in env for k in _LAUNCHER_ENV):
        why = "distribute=true" if distribute else f"device_num {max(device_num, _env_int(env, 'DEVICE_NUM'))}"
        raise DeviceError(f"{why} needs a launcher: run scripts/run_distribute_train.sh (msrun) or "
                          f"scripts/run_distribute_train_ascend.sh (HCCL rank table), or train on one device with "
                          f"--device_num 1 and without --distribute")
    return join


def init_device(device_target: str = "CPU", device_id: int = 0, mode: int = ms.GRAPH_MODE, distribute: bool = False,
                device_num: int = 1) -> Tuple[int, int]:
    """Select the device (DEVICE_ID from the environment wins over ``device_id``; on Ascend with operator precision
    ``ASCEND_PRECISION_MODE``) and the mode (MindSpore's constant: 0 GRAPH_MODE, 1 PYNATIVE_MODE) before any kernel
    runs; join the data-parallel group when ``data_parallel`` says so. Returns (rank, number of ranks). MindSpore's
    reports of failed graph compilations go to ``MINDSPORE_REPORTS`` (the error message names the file)."""
    os.environ.setdefault("MS_OM_PATH", MINDSPORE_REPORTS)
    if device_target != "CPU" and not ms.hal.is_available(device_target):
        raise DeviceError(f"device_target {device_target!r} is not available in this MindSpore installation "
                          f"(no {device_target} device or driver found); pass --device_target CPU")
    join = data_parallel(distribute, device_num)
    if join and "RANK_TABLE_FILE" in os.environ and "MS_WORKER_NUM" not in os.environ and device_target != "Ascend":
        raise DeviceError(f"an HCCL rank table (RANK_TABLE_FILE) starts Ascend ranks, but device_target is "
                          f"{device_target}: train on Ascend, or on {device_target} with msrun "
                          f"(scripts/run_distribute_train.sh)")
    device_id = _env_int(os.environ, "DEVICE_ID", device_id)
    if device_target == "CPU":
        ms.set_device(device_target)
    else:
        ms.set_device(device_target, device_id)
    if device_target == "Ascend":  # the API of MindSpore 2.10 (set_context(ascend_config=...) is deprecated)
        ms.device_context.ascend.op_precision.precision_mode(ASCEND_PRECISION_MODE)
    ms.set_context(mode=mode)
    if not join:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init
    try:
        init()
    except RuntimeError as err:  # MindSpore's reason is its first lines; the rest is its C++ stack
        lines = itertools.takewhile(lambda line: not line.startswith("-----"), str(err).splitlines())
        reason = " ".join(line.strip() for line in itertools.islice(lines, 3) if line.strip())
        launcher = "the HCCL rank table" if "RANK_TABLE_FILE" in os.environ else "msrun"
        raise DeviceError(f"cannot join the data-parallel group started by {launcher} (MindSpore: {reason[:400]}); "
                          f"check the launcher's settings and that every rank can reach the others") from None
    world = get_group_size()
    expected = max(device_num, _env_int(os.environ, "DEVICE_NUM"))
    if expected > 1 and world != expected:
        raise DeviceError(f"device_num / DEVICE_NUM is {expected} but the launcher started {world} ranks; make "
                          f"them agree")
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=world, parameter_broadcast=True)
    return get_rank(), world
