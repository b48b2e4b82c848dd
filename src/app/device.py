"""Device, execution mode and data-parallel setup: the first thing every entry point does."""
import os
from typing import Tuple

import mindspore as ms

DEVICE_TARGETS = ("CPU", "GPU", "Ascend")
# Environment of a launched rank: msrun sets MS_WORKER_NUM/MS_ROLE; HCCL rank-table launches set RANK_TABLE_FILE.
_LAUNCHER_ENV = ("MS_WORKER_NUM", "MS_ROLE", "RANK_TABLE_FILE")


def init_device(device_target: str = "CPU", device_id: int = 0, graph_mode: bool = True,
                distribute: bool = False) -> Tuple[int, int]:
    """Select the device and mode (before any kernel runs); join the data-parallel group when
    ``distribute``. Returns (rank, number of ranks)."""
    if device_target != "CPU" and not ms.hal.is_available(device_target):
        raise ValueError(f"device_target {device_target!r} is not available in this MindSpore installation "
                         f"(no {device_target} device or driver found); pass --device_target CPU")
    if distribute and not any(k in os.environ for k in _LAUNCHER_ENV):
        raise ValueError("distribute=true needs a launcher: run scripts/run_distribute_train.sh (msrun, or an "
                         "HCCL rank table on Ascend), or drop --distribute")
    if distribute:  # launchers give each rank its device through the environment
        device_id = int(os.environ.get("DEVICE_ID", device_id))
    if device_target == "CPU":
        ms.set_device(device_target)
    else:
        ms.set_device(device_target, device_id)
    ms.set_context(mode=ms.GRAPH_MODE if graph_mode else ms.PYNATIVE_MODE)
    if not distribute:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init
    init()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=get_group_size(), parameter_broadcast=True)
    return get_rank(), get_group_size()
