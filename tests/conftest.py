"""Shared pytest setup: every test runs MindSpore on the CPU from the repository root; the fixtures (the helpers
they and the tests share are in support.py)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import mindspore as ms  # noqa: E402

ms.set_device("CPU")
# Under pytest-xdist the worker processes share the machine's cores, so MindSpore's CPU kernels take an equal share
# in each: more threads than cores wait for one while the idle ones spin (two cores, -n 2: the in-process tests
# took a quarter less time and CPU with one kernel thread per worker).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    from mindspore import device_context  # noqa: E402
    device_context.cpu.op_tuning.threads_num(max(1, len(os.sched_getaffinity(0)) // _WORKERS))

import pytest  # noqa: E402

from support import execution_mode, job_args, write_image_folder  # noqa: E402


# The files that take a minute or more on two cores, longest first (python -m pytest --durations=80). They are
# handed out first (pytest.ini: --no-loadscope-reorder keeps this order), so that the two processes of -n 2 finish
# together instead of one running a long file alone at the end; the other files follow in their usual order.
LONGEST_FILES = ("test_ascend.py", "test_export.py", "test_run_faults.py", "test_train_job.py", "test_distributed.py",
                 "test_visualize.py", "test_backbone.py", "test_families.py", "test_modelzoo.py", "test_modelarts.py")


def pytest_collection_modifyitems(items):
    rank = {name: place for place, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order


@pytest.fixture(params=["graph", "pynative"])
def any_mode(request):
    """Run a test in GRAPH_MODE and in PYNATIVE_MODE."""
    with execution_mode(ms.GRAPH_MODE if request.param == "graph" else ms.PYNATIVE_MODE):
        yield request.param


@pytest.fixture
def pynative():
    with execution_mode(ms.PYNATIVE_MODE):
        yield


@pytest.fixture
def graph_mode():
    with execution_mode(ms.GRAPH_MODE):
        yield


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session", autouse=True)
def kernel_cache(tmp_path_factory):
    """The compiled CPU kernels of the whole run go to a session folder, never to the user's cache
    (subprocesses inherit it); they are compiled once per run."""
    previous = os.environ.get("VIG_KERNEL_CACHE")
    os.environ["VIG_KERNEL_CACHE"] = str(tmp_path_factory.mktemp("kernel_cache"))
    yield os.environ["VIG_KERNEL_CACHE"]
    if previous is None:
        del os.environ["VIG_KERNEL_CACHE"]
    else:
        os.environ["VIG_KERNEL_CACHE"] = previous


@pytest.fixture
def isolated_kernels(monkeypatch, tmp_path):
    """A test's own empty kernel cache and a process that has loaded no kernel yet; the session's
    kernels are used again afterwards."""
    from src.models.layers import (compiled_batch_norm, compiled_gather_max, compiled_gelu, compiled_masked_max,
                                   compiled_topk, kernels)
    cache = tmp_path / "kernels"
    monkeypatch.setenv("VIG_KERNEL_CACHE", str(cache))
    monkeypatch.setattr(kernels, "_LOADED", {})
    kernels_of_the_formulation = (compiled_gelu, compiled_topk, compiled_masked_max, compiled_gather_max,
                                  compiled_batch_norm)
    for compiled in kernels_of_the_formulation:
        compiled.cache_clear()
    yield cache
    for compiled in kernels_of_the_formulation:
        compiled.cache_clear()


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same MindSpore seed: initial weights and random ops are reproducible."""
    ms.set_seed(0)
    yield


@pytest.fixture(scope="session")
def trained_run(image_folder, tmp_path_factory):
    """The output folder of an uninterrupted ``job_args`` run (trained in this process)."""
    import train as train_entry

    out = tmp_path_factory.mktemp("run_a")
    train_entry.main(job_args(image_folder, out))
    return out
