"""Throughput benchmark of a model: inference and/or one training step, in GRAPH_MODE.

Weights are made realistic first (calibrated BatchNorm statistics, or a checkpoint): a fresh model
in eval mode produces float32 denormals that slow CPU kernels several-fold. Reported per mode:
images/s (median over the timed runs, and their min..max), compile time (first call), peak
resident memory of the process, and the share of the time spent in the graph part of the
Graphers (distance, top-k, neighbour gather and max aggregation), measured by timing that part
alone on the same inputs.
"""
import os
import platform
import resource
import time
from typing import Dict, List

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from src.models import create_model
from src.models.layers import Grapher
from tools.calibrate import calibrate, structured_images
from src.weights.checkpoint import load_model_weights
from src.engine.optim import create_optimizer
from src.engine.train_step import build_train_step


def _time_calls(fn, warmup: int, runs: int) -> List[float]:
    for _ in range(warmup):
        _sync(fn())
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        _sync(fn())
        times.append(time.perf_counter() - start)
    return times


def _sync(out):
    """Wait for the result (MindSpore runs asynchronously): fetch the first tensor of the output."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    out.asnumpy()


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def graph_part(grapher: Grapher, with_grad: bool):
    """A compiled function of one Grapher's graph part alone: kNN (distance + top-k) and the
    max-relative gather (with its backward when ``with_grad``). A closure, so that the model's
    cells are not re-parented (which would rename their parameters)."""
    def aggregate(x):
        _, keys, idx = grapher.graph_conv.graph(x, grapher.position_bias())
        return grapher.graph_conv.gconv.aggregate(keys, idx)

    return ms.jit(ops.grad(aggregate) if with_grad else aggregate)


def graph_part_seconds(net: nn.Cell, images: np.ndarray, with_grad: bool, runs: int) -> float:
    """Summed median time of every Grapher's graph part on that Grapher's real input."""
    mode = ms.get_context("mode")
    inputs = []
    ms.set_context(mode=ms.PYNATIVE_MODE)
    x = net.embed(Tensor(images))
    for entry in net.backbone:
        grapher = next((cell for _, cell in entry.cells_and_names() if isinstance(cell, Grapher)), None)
        if grapher is not None:  # wherever the family's block holds it; its input is the entry's input
            inputs.append((grapher, grapher.fc1(x)))
        x = entry(x)
    ms.set_context(mode=mode)
    total = 0.0
    for grapher, feats in inputs:
        part = graph_part(grapher, with_grad)
        total += float(np.median(_time_calls(lambda p=part, f=feats: p(f), 2, runs)))
    return total


def benchmark(arch: str, batch_size: int = 8, image_size: int = 224, modes=("infer", "train"),
              amp_level: str = "O0", runs: int = 10, kernel_impl: str = "cpu", pretrained: str = None,
              warmup: int = 4, num_classes: int = 1000) -> List[Dict[str, float]]:
    """Measure ``arch`` and return one result row per mode."""
    net = create_model(arch, num_classes=num_classes, img_size=image_size, kernel_impl=kernel_impl)
    images = structured_images(batch_size, image_size, seed=0)
    if pretrained:
        load_model_weights(net, pretrained, arch=arch)
    else:
        calibrate(net, images)
    x = Tensor(images)
    rows = []
    for mode in modes:
        if mode == "infer":
            net.set_train(False)
            runner = net if amp_level == "O0" else ms.amp.auto_mixed_precision(net, amp_level)
            call = lambda net=runner: net(x)  # noqa: E731
        else:
            labels = Tensor(np.arange(batch_size, dtype=np.int32) % num_classes)
            optimizer = create_optimizer(net.trainable_params(), "adamw", np.full(warmup + runs + 2, 1e-5, np.float32),
                                         0.05)
            step = build_train_step(net, optimizer, amp_level)
            call = lambda cell=step, y=labels: cell(x, y)  # noqa: E731
        start = time.perf_counter()
        _sync(call())
        compile_s = time.perf_counter() - start
        times = _time_calls(call, warmup, runs)
        median = float(np.median(times))
        graph = graph_part_seconds(net, images, with_grad=mode == "train", runs=max(3, runs // 2))
        rows.append({"arch": arch, "mode": mode, "batch": batch_size, "size": image_size, "amp": amp_level,
                     "img_s": batch_size / median, "img_s_min": batch_size / max(times),
                     "img_s_max": batch_size / min(times), "ms_per_batch": 1000 * median, "compile_s": compile_s,
                     "peak_mb": peak_memory_mb(), "graph_share": graph / median})
    return rows


def format_table(rows: List[Dict[str, float]]) -> str:
    header = ("| model | mode | batch | size | amp | images/s (median) | min..max | ms/batch | compile s | "
              "peak RSS MB | graph part |")
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['mode']} | {r['batch']} | {r['size']} | {r['amp']} | {r['img_s']:.1f} | "
                     f"{r['img_s_min']:.1f}..{r['img_s_max']:.1f} | {r['ms_per_batch']:.0f} | {r['compile_s']:.1f} | "
                     f"{r['peak_mb']:.0f} | {100 * r['graph_share']:.0f}% |")
    return "\n".join(lines)


def machine_description() -> str:
    """CPU model, core count and versions, for the table's caption."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, MindSpore {ms.__version__}, {platform.python_version()}"
