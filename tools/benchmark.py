"""Throughput benchmark of a model: inference and/or one training step, in GRAPH_MODE.

Weights are made realistic first (one of ``tools.weight_sets``, or a checkpoint): a fresh model in eval
mode produces float32 denormals that slow CPU kernels several-fold. Reported per mode:
images/s (median over the timed runs, and their min..max), compile time (first call), peak
resident memory of the process, and the share of the time spent in the graph part of the
Graphers (distance, top-k, neighbour gather and max aggregation), measured by timing that part
alone on the same inputs.
"""
import platform
import time
from typing import Callable, Dict, List

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from src.models import Formulation, create_model
from src.models.layers import Grapher, cpu_formulation
from tools.calibrate import calibration_images
from tools.weight_sets import apply as apply_weights
from tools.timing import cpu_name, measure, peak_memory_mb, time_calls
from src.weights.checkpoint import load_model_weights
from src.engine.optim import create_optimizer
from src.engine.train_step import build_train_step, mixed_precision


def first_array(out) -> np.ndarray:
    """The first tensor of an output as numpy: waits for the result (MindSpore runs asynchronously)."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out.asnumpy()


def graph_part(grapher: Grapher, with_grad: bool):
    """A compiled function of one Grapher's graph part alone: kNN (distance + top-k) and the
    max-relative gather (with its backward when ``with_grad``). A closure, so that the model's
    cells are not re-parented (which would rename their parameters)."""
    def aggregate(x):
        _, keys, idx = grapher.graph_conv.graph(x, grapher.position_table())
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
        total += float(np.median(time_calls(lambda p=part, f=feats: first_array(p(f)), 2, runs)))
    return total


def mode_call(net: nn.Cell, images: np.ndarray, mode: str, amp_level: str = "O0", steps: int = 100,
              num_classes: int = 1000) -> Callable[[], object]:
    """The measured call of ``mode``: 'infer' runs ``net`` in eval mode on ``images``; 'train' runs one
    training step (forward, cross-entropy, backward, AdamW at lr 1e-5, weight decay 0.05; no clipping, no
    EMA) on them with labels 0, 1, 2, ... The step's learning-rate table covers ``steps`` calls."""
    x = Tensor(images)
    if mode == "infer":
        net.set_train(False)
        runner = mixed_precision(net, amp_level)  # as eval.py runs it: the graphs in float32 at O2/O3
        return lambda: runner(x)
    labels = Tensor(np.arange(len(images), dtype=np.int32) % num_classes)
    optimizer = create_optimizer(net.trainable_params(), "adamw", np.full(steps, 1e-5, np.float32), 0.05)
    step = build_train_step(net, optimizer, amp_level)
    return lambda: step(x, labels)


def with_weights(net: nn.Cell, arch: str, batch_size: int, image_size: int, pretrained: str,
                 weights: str) -> np.ndarray:
    """Give ``net`` the checkpoint ``pretrained`` or else the weight set ``weights``; returns the measured images
    (the first of the calibration images)."""
    calibration = calibration_images(batch_size, image_size)
    if pretrained:
        load_model_weights(net, pretrained, arch=arch)
    else:
        apply_weights(net, arch, weights, calibration, image_size, batch_size)
    return calibration[:batch_size]


def benchmark(arch: str, batch_size: int = 8, image_size: int = 224, modes=("infer", "train"),
              amp_level: str = "O0", runs: int = 10, kernel_impl: str = "cpu", pretrained: str = None,
              warmup: int = 4, num_classes: int = 1000, weights: str = "calibrated") -> List[Dict[str, float]]:
    """Measure ``arch`` with ``pretrained`` or else the weight set ``weights`` and return one result row per
    mode. Peak memory is the process's after that mode's timed calls (so a second mode's includes the
    first's), before the graph part is timed alone."""
    net = create_model(arch, num_classes=num_classes, img_size=image_size, kernel_impl=kernel_impl)
    images = with_weights(net, arch, batch_size, image_size, pretrained, weights)
    rows = []
    for mode in modes:
        call = mode_call(net, images, mode, amp_level, warmup + runs + 2, num_classes)
        _, compile_s, _, times = measure(call, warmup, runs, first_array)
        peak_mb = peak_memory_mb()
        median = float(np.median(times))
        graph = graph_part_seconds(net, images, with_grad=mode == "train", runs=max(3, runs // 2))
        rows.append({"arch": arch, "mode": mode, "weights": "checkpoint" if pretrained else weights,
                     "batch": batch_size, "size": image_size, "amp": amp_level,
                     "img_s": batch_size / median, "img_s_min": batch_size / max(times),
                     "img_s_max": batch_size / min(times), "ms_per_batch": 1000 * median, "compile_s": compile_s,
                     "peak_mb": peak_mb, "graph_share": graph / median})
    return rows


def kernels_against_plain(arch: str, weights: str = "official", batch_size: int = 8, image_size: int = 224,
                          mode: str = "infer", rounds: int = 10, warmup: int = 3,
                          pretrained: str = None) -> Dict[str, float]:
    """The CPU formulation with the compiled kernels against the same formulation on MindSpore's own kernels
    (what ``VIG_DISABLE_KERNELS=1`` gives), both in one process on the same weights and images, their calls
    interleaved (one of each per round) so that a busy machine slows both alike. Returns the median seconds
    per call of each ('compiled', 'plain') and 'speedup' = plain / compiled (above 1: the kernels help)."""
    form = cpu_formulation()
    if form.gelu is None or form.topk is None:
        raise RuntimeError("the compiled CPU kernels are not available here (a C++ compiler, VIG_DISABLE_KERNELS)")
    compiled = create_model(arch, img_size=image_size, kernel_impl=form)
    plain = create_model(arch, img_size=image_size, kernel_impl=Formulation(cpu_ops=True))
    images = with_weights(compiled, arch, batch_size, image_size, pretrained, weights)
    ms.load_param_into_net(plain, {p.name: ms.Parameter(p.asnumpy(), name=p.name) for p in compiled.get_parameters()},
                           strict_load=True)
    calls = {name: mode_call(net, images, mode, steps=warmup + rounds + 2)
             for name, net in (("compiled", compiled), ("plain", plain))}
    times = {name: [] for name in calls}
    for round_ in range(warmup + rounds):
        for name, call in (calls.items() if round_ % 2 else reversed(calls.items())):
            start = time.perf_counter()
            first_array(call())
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    result = {name: float(np.median(t)) for name, t in times.items()}
    result["speedup"] = result["plain"] / result["compiled"]
    return result

def format_table(rows: List[Dict[str, float]]) -> str:
    header = ("| model | mode | weights | batch | size | amp | images/s (median) | min..max | ms/batch | compile s | "
              "peak RSS MB | graph part |")
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['mode']} | {r['weights']} | {r['batch']} | {r['size']} | {r['amp']} | "
                     f"{r['img_s']:.1f} | "
                     f"{r['img_s_min']:.1f}..{r['img_s_max']:.1f} | {r['ms_per_batch']:.0f} | {r['compile_s']:.1f} | "
                     f"{r['peak_mb']:.0f} | {100 * r['graph_share']:.0f}% |")
    return "\n".join(lines)


def format_kernel_rows(rows: List[Dict[str, float]]) -> str:
    """kernels_against_plain's results, one row per (model, weights, mode)."""
    header = "| model | weights | mode | ms/call compiled kernels | MindSpore's kernels | speed-up |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['weights']} | {r['mode']} | {1000 * r['compiled']:.1f} | "
                     f"{1000 * r['plain']:.1f} | {r['speedup']:.2f} |")
    return "\n".join(lines)


def machine_description() -> str:
    """CPU model, core count and versions, for the table's caption."""
    return f"{cpu_name()}, MindSpore {ms.__version__}, {platform.python_version()}"
