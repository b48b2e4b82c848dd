"""The self-test to run first on a new Ascend machine, before a long training job (selftest.py,
scripts/run_ascend_selftest.sh).

For each family (its smallest registered model) on the device:

* ``train``: the native-form O2 training step that train.py builds (dynamic loss scale, AdamW, clipping, EMA, drop
  path) compiles and runs a few steps on synthetic data, with finite losses; the last one updates the weights (a
  dynamic scale may skip a first step while it settles: the table counts them);
* ``overflow``: one more step with a loss scale that overflows must be skipped (weights kept) and the scale lowered,
  as the step's overflow check promises on every device;
* ``forward``: a float32 forward of calibrated weights on the device equals the same forward on the CPU (a child
  process) within ``FORWARD_TOLERANCE``, with the same top-1;
* ``mindir`` / ``air``: the export for the Ascend 310 is written and a MINDIR loads and runs (AIR needs the Ascend
  backend: elsewhere it is skipped, and the reason said).

It prints one table (compile time, step time, images/s, device memory, each check) and a summary to paste into an
issue. On the CPU the same checks run, so the test suite runs this self-test itself.
"""
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from .builders import inference_net, learning_rates, mix_params, model_from_config, train_step
from .config import Config, ConfigError, load_config
from .device import init_device
from ..deploy.export import export_network
from ..models import export_formulation, family_representatives
from ..models.base import first_and_last_blocks
from ..models.calibrate import calibrate, structured_images

FORWARD_TOLERANCE = 1e-2  # max |device - CPU| / max |CPU| of the float32 logits (Ascend may run float32 convolutions
# in HF32, which CANN enables by default: mindspore/device_context/ascend/op_precision.py conv_allow_hf32)
CHECKS = ("train", "overflow", "forward", "mindir", "air")
LOSS_SCALE = 1024.0  # the dynamic scale the clean steps start from (the demo's); the injected step uses OVERFLOW_SCALE
OVERFLOW_SCALE = 3.0e38


@dataclass
class FamilyResult:
    family: str
    model: str
    compile_s: float = float("nan")
    step_ms: float = float("nan")
    images_s: float = float("nan")
    memory: str = "-"
    skipped: int = 0                                        # clean steps skipped while the dynamic scale settled
    checks: Dict[str, str] = field(default_factory=dict)   # check -> "pass" / "FAIL" / "skip"
    details: List[str] = field(default_factory=list)       # one line per failed or skipped check

    def record(self, check: str, outcome: str, detail: str = "") -> None:
        self.checks[check] = outcome
        if detail:
            self.details.append(f"{check}: {detail}")

    @property
    def passed(self) -> bool:
        return all(outcome != "FAIL" for outcome in self.checks.values()) and len(self.checks) == len(CHECKS)


def selftest_config(name: str, device_target: str, device_id: int, image_size: int, batch_size: int) -> Config:
    """The training configuration of the check: the model's recipe, native form, O2, a dynamic loss scale."""
    return load_config(["--arch", name, "--image_size", str(image_size), "--num_classes", "10", "--batch_size",
                        str(batch_size), "--device_target", device_target, "--device_id", str(device_id),
                        "--kernel_impl", "native", "--amp_level", "O2", "--loss_scale", str(LOSS_SCALE),
                        "--ema_decay", "0.99", "--drop_path_rate", "0.1"])


def checked_model(cfg: Config, quick: bool, **kwargs) -> nn.Cell:
    """The configured model (``model_from_config`` arguments), with ``quick`` only the first and last block of each
    stage."""
    model = model_from_config(cfg, **kwargs)
    return first_and_last_blocks(model) if quick else model


def synthetic_batch(cfg: Config, seed: int = 0):
    """(images, labels) of one batch as the configured pipeline yields them: soft labels with mixup/cutmix, else
    integer ones."""
    rng = np.random.default_rng(seed)
    images = Tensor(rng.standard_normal((cfg.batch_size, 3, cfg.image_size, cfg.image_size)).astype(np.float32))
    classes = rng.integers(0, cfg.num_classes, cfg.batch_size)
    if mix_params(cfg).soft_labels:
        return images, Tensor(np.eye(cfg.num_classes, dtype=np.float32)[classes])
    return images, Tensor(classes.astype(np.int32))


def device_memory() -> str:
    """Peak device memory of the process; the CPU backend has none (MindSpore reports 0), so the host's peak RSS."""
    peak = ms.runtime.max_memory_allocated()
    if peak:
        return f"{peak / 2 ** 20:.0f} MB"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB host"


def check_training(result: FamilyResult, cfg: Config, steps: int, quick: bool) -> None:
    """Compile and run ``steps`` steps, the last with an overflowing loss scale. A clean step may overflow too (the
    dynamic scale then halves: that is how it settles), but the last clean one must update the weights."""
    model = checked_model(cfg, quick, training=True)
    step = train_step(cfg, model, learning_rates(cfg, steps, 1))
    images, labels = synthetic_batch(cfg)
    times, skipped, problems = [], 0, []
    for i in range(steps - 1):
        start = time.perf_counter()
        loss, overflow, _ = step(images, labels)
        loss, overflow = float(loss.asnumpy()), bool(overflow.asnumpy())
        elapsed = time.perf_counter() - start
        if i == 0:
            result.compile_s = elapsed
        else:
            times.append(elapsed)
        skipped += overflow
        if not np.isfinite(loss):
            problems.append(f"step {i + 1}: loss {loss:g}")
    if overflow:
        problems.append(f"{skipped} of {steps - 1} clean steps overflowed, the last too (loss scale now "
                        f"{float(step.scale_sense.asnumpy()):g})")
    result.skipped = skipped
    if times:
        result.step_ms = 1000 * float(np.median(times))
        result.images_s = cfg.batch_size / float(np.median(times))
    result.memory = device_memory()
    result.record("train", "FAIL" if problems else "pass", "; ".join(problems))
    watched = model.trainable_params()[0]
    before, updates = watched.asnumpy().copy(), int(step.optimizer.global_step.asnumpy().reshape(-1)[0])
    scale = float(step.scale_sense.asnumpy())
    step.scale_sense.set_data(Tensor(OVERFLOW_SCALE, ms.float32))
    overflow = bool(step(images, labels)[1].asnumpy())
    kept = np.array_equal(before, watched.asnumpy()) and \
        int(step.optimizer.global_step.asnumpy().reshape(-1)[0]) == updates
    lowered = float(step.scale_sense.asnumpy()) < OVERFLOW_SCALE
    ok = overflow and kept and lowered
    result.record("overflow", "pass" if ok else "FAIL", "" if ok else
                  f"injected overflow (scale {OVERFLOW_SCALE:g}, was {scale:g}): flagged {overflow}, weights and "
                  f"optimizer step kept {kept}, scale lowered {lowered}")


def check_forward(result: FamilyResult, cfg: Config, quick: bool, entry: str, folder: str) -> None:
    """Calibrated float32 logits on the device against the CPU's (child process ``entry --cpu_reference``)."""
    model = calibrate(checked_model(cfg, quick), structured_images(2, cfg.image_size, seed=1))
    images = structured_images(2, cfg.image_size, seed=2)
    logits = model(Tensor(images)).asnumpy()
    spec = {"arch": cfg.arch, "image_size": cfg.image_size, "quick": quick,
            "checkpoint": os.path.join(folder, "weights.ckpt"),
            "images": os.path.join(folder, "images.npy"), "logits": os.path.join(folder, "cpu_logits.npy")}
    ms.save_checkpoint(model, spec["checkpoint"])
    np.save(spec["images"], images)
    with open(os.path.join(folder, "reference.json"), "w", encoding="utf-8") as handle:
        json.dump(spec, handle)
    done = subprocess.run([sys.executable, entry, "--cpu_reference", os.path.join(folder, "reference.json")],
                          capture_output=True, text=True, cwd=folder)
    if done.returncode != 0:
        result.record("forward", "FAIL", f"the CPU reference failed: {done.stderr.strip().splitlines()[-1:]}")
        return
    reference = np.load(spec["logits"])
    error = float(np.abs(logits - reference).max() / max(np.abs(reference).max(), 1e-12))
    same_top1 = bool((logits.argmax(-1) == reference.argmax(-1)).all())
    ok = error <= FORWARD_TOLERANCE and same_top1
    result.record("forward", "pass" if ok else "FAIL",
                  "" if ok else f"max relative difference {error:.2e} (tolerance {FORWARD_TOLERANCE:g}), same top-1 "
                                f"{same_top1}")


def cpu_reference(spec_path: str) -> None:
    """Child process of ``check_forward``: the same model and weights on the CPU, float32, native form."""
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    init_device("CPU")
    cfg = load_config(["--arch", spec["arch"], "--image_size", str(spec["image_size"]), "--num_classes", "10",
                       "--device_target", "CPU", "--kernel_impl", "native"])
    model = checked_model(cfg, spec["quick"])
    ms.load_param_into_net(model, ms.load_checkpoint(spec["checkpoint"]), strict_load=True)
    model.set_train(False)
    np.save(spec["logits"], model(Tensor(np.load(spec["images"]))).asnumpy())


def check_exports(result: FamilyResult, cfg: Config, quick: bool, folder: str) -> None:
    """MINDIR for the Ascend 310 (reloaded and run here), and AIR on Ascend."""
    for file_format in ("MINDIR", "AIR"):
        check = file_format.lower()
        if file_format == "AIR" and cfg.device_target != "Ascend":
            result.record(check, "skip", "MindSpore writes AIR only with device_target Ascend")
            continue
        net = inference_net(cfg, checked_model(cfg, quick, impl=export_formulation("native", file_format)))
        path = export_network(net, file_format, os.path.join(folder, f"{cfg.arch}_{check}"), 1, cfg.image_size)
        if file_format == "MINDIR":
            out = nn.GraphCell(ms.load(path))(Tensor(structured_images(1, cfg.image_size))).asnumpy()
            if not np.isfinite(out).all():
                result.record(check, "FAIL", f"{path} loads, but its output is not finite")
                continue
        result.record(check, "pass")


def check_family(family: str, name: str, device_target: str, device_id: int, image_size: int, batch_size: int,
                 steps: int, quick: bool, entry: str) -> FamilyResult:
    result = FamilyResult(family, name)
    cfg = selftest_config(name, device_target, device_id, image_size, batch_size)
    with tempfile.TemporaryDirectory(prefix=f"selftest_{family}_") as folder:
        for check, run in (("train", lambda: check_training(result, cfg, steps, quick)),
                           ("forward", lambda: check_forward(result, cfg, quick, entry, folder)),
                           ("mindir", lambda: check_exports(result, cfg, quick, folder))):
            try:
                run()
            except Exception as err:  # a failing check is a table row, not the end of the self-test
                line = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                result.record(check, "FAIL", line)
                if os.environ.get("VIG_TRACEBACK"):
                    traceback.print_exc()
    for check in CHECKS:
        result.checks.setdefault(check, "FAIL")
    return result


def format_table(results: Sequence[FamilyResult]) -> str:
    rows = [("family", "model", "compile s", "step ms", "images/s", "memory", "skipped") + CHECKS]
    rows += [(r.family, r.model, f"{r.compile_s:.1f}", f"{r.step_ms:.0f}", f"{r.images_s:.1f}", r.memory,
              str(r.skipped)) + tuple(r.checks[c] for c in CHECKS) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0])] + lines[1:])


def summary(results: Sequence[FamilyResult], device_target: str, device_id: int, image_size: int,
            batch_size: int, steps: int, quick: bool = False) -> str:
    """What to paste into an issue: versions, the settings, one line per family, every failure's reason."""
    lines = ["```", f"vig-mindspore self-test: {'PASS' if all(r.passed for r in results) else 'FAIL'}",
             f"MindSpore {ms.__version__}, Python {platform.python_version()}, {platform.platform()}",
             f"device {device_target} {device_id}; image size {image_size}, batch {batch_size}, {steps} steps"
             f"{', first and last blocks only' if quick else ''}; forward tolerance {FORWARD_TOLERANCE:g}"]
    for r in results:
        checks = " ".join(f"{c}={r.checks[c]}" for c in CHECKS)
        lines.append(f"{r.family} ({r.model}): compile {r.compile_s:.1f} s, step {r.step_ms:.0f} ms, "
                     f"{r.images_s:.1f} images/s, memory {r.memory}, {r.skipped} steps skipped; {checks}")
        lines += [f"  {r.family} {detail}" for detail in r.details]
    return "\n".join(lines + ["```"])


def run_selftest(device_target: str, device_id: int, families: Sequence[str], image_size: int, batch_size: int,
                 steps: int, entry: str, quick: bool = False, out: Callable[[str], None] = print) -> int:
    """The self-test of ``families`` (all when empty) on the device; returns the exit status (0: every check passed
    or was skipped with its reason)."""
    known = family_representatives()
    unknown = [f for f in families if f not in known]
    if unknown:
        raise ConfigError(f"unknown family {', '.join(unknown)}; the families are {', '.join(known)}")
    if steps < 3:
        raise ConfigError(f"--steps must be at least 3 (a first step, a timed one, the overflowing one), got {steps}")
    init_device(device_target, device_id)
    results = []
    for family in families or list(known):
        out(f"== {family} ({known[family]}) on {device_target} {device_id}")
        results.append(check_family(family, known[family], device_target, device_id, image_size, batch_size, steps,
                                    quick, entry))
    out(format_table(results))
    out(summary(results, device_target, device_id, image_size, batch_size, steps, quick))
    return 0 if all(r.passed for r in results) else 1

