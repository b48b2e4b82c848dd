"""Shared pytest setup: every test runs MindSpore on the CPU from the repository root; the fixtures (the helpers
they and the tests share are in support.py)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import mindspore as ms  # noqa: E402

ms.set_device("CPU")

import pytest  # noqa: E402

from support import execution_mode, job_args, write_image_folder  # noqa: E402


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
    from src.models.layers import compiled_gather_max, compiled_gelu, compiled_masked_max, compiled_topk, kernels
    cache = tmp_path / "kernels"
    monkeypatch.setenv("VIG_KERNEL_CACHE", str(cache))
    monkeypatch.setattr(kernels, "_LOADED", {})
    kernels_of_the_formulation = (compiled_gelu, compiled_topk, compiled_masked_max, compiled_gather_max)
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
