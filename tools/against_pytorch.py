"""Side-by-side benchmark of our models (MindSpore, GRAPH_MODE) and the PyTorch reference
(``tools/torch_reference.py``, the official code's computation) on the same weights and images.

Per model and weight set (``tools.weight_sets``: calibrated, official, trained), one MindSpore process
prepares what both sides use: the weights, saved as our checkpoint and under the official state-dict names
(``weights.convert.to_official_names``), the images, and the batch-1 exports (MINDIR in the model's
formulation without compiled kernels, ONNX). Then every measurement runs in a fresh process, ours and
PyTorch's of one mode back to back: images/s (median of the timed calls), the process's peak resident
memory, the first call (ours: including the graph compile), and for inference the batch-1 latency of
deployment: our MINDIR in MindSpore and our ONNX file in onnxruntime (both through
``deploy.offline.load_runner``), the reference model in PyTorch (eager) and its ``torch.onnx.export`` (opset
17, the PyTorch user's ONNX) in onnxruntime. PyTorch and onnxruntime use as many threads as MindSpore's CPU
kernels. With ``official_code`` (folders of clones of the official repositories, ``tools.official_code``) the
official model itself is measured too, on the same weights and images, as the second
anchor; the batch-1 PyTorch columns are then the official model's. Each side's first output (inference: the
logits; training: the first step's loss) is compared, which shows that both computed the same function.

This module imports neither MindSpore nor PyTorch at the top: its workers run as
``python -m tools.against_pytorch SPEC.json`` and each loads only its own framework.
"""
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from typing import Callable, Dict, List, Sequence, Tuple, Union

import numpy as np

from tools.timing import cpu_name, measure, memory_mb, peak_memory_mb, time_calls

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "tools", "torch_reference.py")
LEARNING_RATE, WEIGHT_DECAY = 1e-5, 0.05  # the training step of tools/benchmark.py's mode_call


def check_requirements() -> None:
    """PyTorch (a test requirement) must be installed; a one-line error says how to install it."""
    from src.app.config import ConfigError
    for module, what in (("torch", "PyTorch (a test requirement)"), ("onnxruntime", "onnxruntime")):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"--against-pytorch needs {what}, which is not installed: "
                              f"pip install -r requirements-test.txt")


def reference_module():
    """tools/torch_reference.py, imported by its path."""
    spec = importlib.util.spec_from_file_location("torch_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare(archs: Sequence[str], batch_size: int = 8, image_size: Union[int, Tuple[int, int]] = 224,
            modes=("infer", "train"), runs: int = 10, warmup: int = 4, kernel_impl: str = "cpu",
            latency: bool = True, log: Callable[[str], None] = None,
            weight_sets: Sequence[str] = ("calibrated",), official_code: Sequence[str] = ()) -> Dict[str, object]:
    """Measure every model in ``archs`` in both frameworks with each of ``weight_sets``; returns {"machine": str,
    "load": (before, after), "settings": dict, "rows": [one dict per (model, weights, mode)]}. ``image_size``
    is a side or (height, width); ``latency``: time the batch-1 deployments (our MINDIR and ONNX, PyTorch eager
    and its ONNX); ``official_code``: folders of the official repositories (``tools.official_code``), whose
    models are measured too (rows' ``official``; the batch-1 PyTorch columns then are theirs). ``log`` receives
    a line per finished row."""
    check_requirements()
    from src.app.config import ConfigError
    from src.models import canonical_name
    archs = [canonical_name(a) for a in archs]
    supported = reference_module().NAMED_VARIANTS
    unknown = [a for a in archs if a not in supported]
    if unknown:
        raise ConfigError(f"the PyTorch reference has no {', '.join(unknown)}; --against-pytorch measures "
                          f"{', '.join(supported)}")
    official = check_official_code(official_code, archs, image_size) if official_code else []
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    load_before, rows, versions, threads = os.getloadavg()[0], [], {}, None
    settings = dict(batch_size=batch_size, image_size=image_size, runs=runs, warmup=warmup, kernel_impl=kernel_impl,
                    latency=latency, official_code=[os.path.abspath(folder) for folder in official_code])
    with tempfile.TemporaryDirectory(prefix="vig_against_pytorch_") as work:
        try:
            for arch, weights in [(arch, weights) for arch in archs for weights in weight_sets]:
                files = {name: os.path.join(work, f"{arch}_{weights}_{name}") for name in
                         ("weights.ckpt", "official.npz", "images.npy", "batch1.mindir", "batch1.onnx", "torch.onnx")}
                prepared = _run_worker(work, "prepare", arch, settings, files, weights=weights)
                versions.update(prepared["versions"])
                threads = prepared["threads"]
                for mode in modes:
                    row = _measure_row(work, arch, weights, mode, settings, files, threads, arch in official, versions)
                    rows.append(row)
                    anchor = f", official code {row['official']['img_s']:.3g}" if "official" in row else ""
                    log(f"{arch} {weights} {mode}: {row['ours']['img_s']:.3g} images/s (PyTorch "
                        f"{row['pytorch']['img_s']:.3g}{anchor}), peak {row['ours']['peak_mb']:.0f} MB (PyTorch "
                        f"{row['pytorch']['peak_mb']:.0f} MB)")
        except RuntimeError:  # what was measured is not lost with a failed measurement
            if rows:
                log("measured before the failure:\n" + format_comparison(rows) + "\n\n" + format_memory(rows))
            raise
    machine = (f"{cpu_name()}; " + ", ".join(f"{k} {v}" for k, v in versions.items()) +
               f", Python {platform.python_version()}; PyTorch and onnxruntime with {threads} threads, as many as "
               f"MindSpore's CPU kernels")
    return {"machine": machine, "load": (load_before, os.getloadavg()[0]), "settings": settings, "rows": rows}


def _measure_row(work: str, arch: str, weights: str, mode: str, settings: dict, files: dict, threads: int,
                 official: bool, versions: dict) -> dict:
    """One row of ``compare``: ours, the reference (and the official code's model) in ``mode``, each in a fresh
    process, back to back; for inference the batch-1 deployments."""
    load = os.getloadavg()[0]
    ours = _run_worker(work, "ours", arch, settings, files, mode=mode)
    theirs = _run_worker(work, "pytorch", arch, settings, files, mode=mode, threads=threads)
    versions.update(theirs["versions"])
    row = {"arch": arch, "weights": weights, "mode": mode, "load": load, "ours": ours, "pytorch": theirs,
           "difference": relative_difference(ours["first"], theirs["first"])}
    anchor = "official" if official else "reference"
    if official:
        row["official"] = _run_worker(work, "pytorch", arch, settings, files, mode=mode, threads=threads, anchor=anchor)
    if mode == "infer" and settings["latency"]:
        row["mindir_ms"] = _run_worker(work, "mindir", arch, settings, files)["ms"]
        eager = _run_worker(work, "pytorch_batch1", arch, settings, files, threads=threads, anchor=anchor)
        row["torch_ms"] = eager["ms"]
        if "onnx_error" in eager:
            row["torch_onnx_error"] = eager["onnx_error"]
        for key, model_file in (("onnx_ms", files["batch1.onnx"]), ("torch_onnx_ms", files["torch.onnx"])):
            if key == "torch_onnx_ms" and "onnx_error" in eager:
                continue
            onnx = _run_worker(work, "onnx", arch, settings, files, threads=threads, model=model_file)
            versions.update(onnx["versions"])
            row[key] = onnx["ms"]
    return row


def profile_ops(arch: str, batch_size: int = 8, image_size: Union[int, Tuple[int, int]] = 224, modes=("train",),
                runs: int = 3, warmup: int = 2, kernel_impl: str = "cpu",
                weights: str = "calibrated") -> Dict[str, object]:
    """Where one call's time goes, per operator, on each side: MindSpore's profiler (its CPU operator times) over
    ``runs`` calls of our model, torch.profiler's self times over as many calls of the reference, same weights
    and images. Returns {"machine", "settings", "rows": [{"mode", "ours": {op: ms}, "pytorch": {op: ms}}]}; both
    in ms per call."""
    check_requirements()
    from src.models import canonical_name
    arch = canonical_name(arch)
    settings = dict(batch_size=batch_size, image_size=image_size, runs=runs, warmup=warmup, kernel_impl=kernel_impl,
                    latency=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vig_op_profile_") as work:
        files = {name: os.path.join(work, name) for name in ("weights.ckpt", "official.npz", "images.npy")}
        prepared = _run_worker(work, "prepare", arch, settings, files, weights=weights)
        for mode in modes:
            rows.append({"mode": mode, **{side: _run_worker(work, f"{side}_ops", arch, settings, files, mode=mode,
                                                            threads=prepared["threads"], weights=weights)
                                          for side in ("ours", "pytorch")}})
    machine = f"{cpu_name()}; MindSpore and PyTorch with {prepared['threads']} threads"
    return {"machine": machine, "settings": dict(settings, arch=arch, weights=weights), "rows": rows}


# Operator kinds by name (MindSpore op types, PyTorch aten ops), checked in order.
OP_KINDS = (
    ("loss", ("softmax", "cross_entropy", "crossentropy", "nll")),
    ("optimizer", ("adam",)),
    ("batch norm", ("batchnorm", "batch_norm")),
    ("kNN (distances, top-k)", ("dilatedknn", "topk", "sort", "cdist", "normalize", "norm")),
    ("neighbour gather and max", ("neighbourmax", "maxoverrows", "gather", "index", "max", "scatter", "segment")),
    ("convolution and matmul", ("conv", "matmul", "mm", "im2col", "col2im", "unfold", "linear")),
    ("GELU", ("gelu",)),
    ("bias add", ("biasadd",)),
    ("layout (transpose, copy, concat, broadcast)",
     ("transpose", "permute", "reshape", "copy", "clone", "contiguous", "concat", "cat", "stack", "broadcast",
      "expand", "tile", "repeat", "pad", "slice", "split", "narrow", "view")),
)


def op_kind(name: str) -> str:
    """The kind of an operator named 'type scope' (MindSpore: 'Conv2D backbone-.../fc1-SequentialCell/Conv2d';
    PyTorch: 'aten::mul_ optimizer'): an operator in an optimizer's scope is the optimizer's, a custom operator
    is known by its scope (our compiled kernels), every other by its type; the rest is element-wise and
    reductions."""
    op_type, _, scope = name.partition(" ")
    if "optimizer" in scope.lower():
        return "optimizer"
    lowered = (scope if op_type == "Custom" else op_type).lower()
    for kind, keys in OP_KINDS:
        if any(key in lowered for key in keys):
            return kind
    return "element-wise and reductions"


def check_official_code(folders: Sequence[str], archs: Sequence[str], image_size) -> List[str]:
    """Which of ``archs`` the official code's folders build (measured against it too; the others against the
    reference only), at 224: the official code builds its position tables for that size only. A one-line error
    when the folders are not the official code's, build none of ``archs`` or the size is another (read as text:
    no PyTorch in this process)."""
    from src.app.config import ConfigError
    from tools.official_code import official_models
    try:
        models = official_models(folders)
    except FileNotFoundError as error:
        raise ConfigError(f"--official_code: {error}") from None
    built = [a for a in archs if a in models]
    if not built:
        raise ConfigError(f"the official code in {', '.join(folders)} builds none of {', '.join(archs)} (it builds "
                          f"{', '.join(sorted(models))}); add the folder of their repository to --official_code")
    if image_size not in (224, (224, 224), [224, 224]):
        raise ConfigError(f"the official code builds its models for 224x224 only, not {size_text(image_size)}; "
                          f"leave --official_code out or measure at --image_size 224")
    return built


def relative_difference(ours, theirs) -> float:
    """max |ours - theirs| / max |theirs|: float32 rounding gives ~1e-6; a neighbour chosen differently
    at a near-tie gives more; other weights or another function give ~1."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-30))


def _run_worker(work: str, role: str, arch: str, settings: dict, files: dict, **extra) -> dict:
    """Run one worker in a fresh process and return its result; a failure raises with its stderr's end."""
    tag = "_".join([role, arch] + [os.path.basename(str(v)) for v in extra.values()])
    spec = dict(settings, role=role, arch=arch, files=files, result=os.path.join(work, tag + ".json"), **extra)
    spec_path = os.path.join(work, tag + ".spec.json")
    with open(spec_path, "w", encoding="utf-8") as handle:
        json.dump(spec, handle)
    done = subprocess.run([sys.executable, "-m", "tools.against_pytorch", spec_path], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 or not os.path.exists(spec["result"]):
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"the {role} measurement of {arch} {extra.get('mode', '')} failed "
                           f"(exit status {done.returncode}):\n{tail}")
    with open(spec["result"], encoding="utf-8") as handle:
        return json.load(handle)


def report(result: dict) -> str:
    """What ``compare`` measured, as printed: the machine, the load, the settings and both tables."""
    settings = result["settings"]
    return "\n".join([
        f"machine: {result['machine']}",
        "load average (1 min): {:.2f} before, {:.2f} after (column load: when the row's first measurement "
        "started)".format(*result["load"]),
        f"batch {settings['batch_size']}, {size_text(settings['image_size'])}, float32; images/s: median "
        f"of {settings['runs']} timed calls after {settings['warmup']} warm-up calls; ratio: ours / PyTorch; output "
        f"difference: max |ours - PyTorch| / max |PyTorch| of the first output (logits; training: the first "
        f"step's loss): ~1 means another function; kNN models on these calibrated random weights drift by up to "
        f"~0.3 through float32 near-ties in the neighbour ranking (docs/performance.md)" +
        ("; official code: the official repository's model (images/s, ours / it), also in the batch-1 PyTorch "
         "columns of its rows" if any("official" in r for r in result["rows"]) else ""),
        format_comparison(result["rows"]),
        *[f"{r['arch']} {r['weights']}: torch.onnx.export refused the PyTorch model ({r['torch_onnx_error']})"
          for r in result["rows"] if "torch_onnx_error" in r],
        "",
        "resident memory (MB) of each measuring process after each stage:",
        format_memory(result["rows"])])


def format_op_profile(result: dict) -> str:
    """``profile_ops``'s result as printed: per mode, ms per call by operator kind on both sides, then each
    side's ten costliest operators."""
    settings = result["settings"]
    lines = [f"machine: {result['machine']}",
             f"{settings['arch']}, {settings['weights']} weights, batch {settings['batch_size']}, "
             f"{size_text(settings['image_size'])}, float32; ms per call, the mean of {settings['runs']} profiled "
             f"calls after {settings['warmup']} (ours: MindSpore's profiler, operator execution times; PyTorch: "
             f"torch.profiler, self CPU times)"]
    for row in result["rows"]:
        kinds = {side: {} for side in ("ours", "pytorch")}
        for side in kinds:
            for name, ms_ in row[side].items():
                kind = op_kind(name)
                kinds[side][kind] = kinds[side].get(kind, 0.0) + ms_
        order = sorted(set(kinds["ours"]) | set(kinds["pytorch"]), key=lambda k: -kinds["ours"].get(k, 0.0))
        lines += ["", f"{row['mode']}:", "| operators | ms ours | ms PyTorch | ours / PyTorch |", "|---|---|---|---|"]
        for kind in order + ["total"]:
            ours, theirs = ((sum(kinds[side].values()) if kind == "total" else kinds[side].get(kind, 0.0))
                            for side in ("ours", "pytorch"))
            ratio = f"{ours / theirs:.2f}" if theirs > 0 else "–"
            lines.append(f"| {kind} | {ours:.1f} | {theirs:.1f} | {ratio} |")
        for side, title in (("ours", "ours (op type, scope)"), ("pytorch", "PyTorch")):
            lines += ["", f"{row['mode']}, the ten costliest operators, {title}:", "| operator | ms |", "|---|---|"]
            for name, ms_ in sorted(row[side].items(), key=lambda item: -item[1])[:10]:
                lines.append(f"| {name} | {ms_:.2f} |")
    return "\n".join(lines)


def size_text(image_size) -> str:
    """224 -> '224x224'; [800, 1344] (as JSON keeps a pair) -> '800x1344'."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return f"{height}x{width}"


def format_comparison(rows: List[dict]) -> str:
    """The comparison table: ratios are ours / PyTorch (images/s: higher is better; memory: lower is).
    Rates and times keep three significant digits: PyTorch's first call on a small input takes milliseconds,
    a batch of one image at a detection size takes seconds."""
    official = any("official" in r for r in rows)
    header = ("| model | weights | mode | images/s ours | PyTorch | ratio | " +
              ("official code | ratio | " if official else "") +
              "peak RSS MB ours | PyTorch | ratio | first call s ours | PyTorch | batch-1 ms MINDIR | PyTorch eager | "
              "ONNX ours | ONNX PyTorch's | output difference | load |")
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in rows:
        ours, theirs = r["ours"], r["pytorch"]
        latency = " | ".join(f"{r[key]:.3g}" if key in r else "–"
                             for key in ("mindir_ms", "torch_ms", "onnx_ms", "torch_onnx_ms"))
        anchor = ""
        if official:
            anchor = (f"{r['official']['img_s']:.3g} | {ours['img_s'] / r['official']['img_s']:.2f} | "
                      if "official" in r else "– | – | ")
        lines.append(f"| {r['arch']} | {r['weights']} | {r['mode']} | {ours['img_s']:.3g} | {theirs['img_s']:.3g} | "
                     f"{ours['img_s'] / theirs['img_s']:.2f} | {anchor}{ours['peak_mb']:.0f} | "
                     f"{theirs['peak_mb']:.0f} | "
                     f"{ours['peak_mb'] / theirs['peak_mb']:.2f} | {ours['first_s']:.3g} | {theirs['first_s']:.3g} | "
                     f"{latency} | {r['difference']:.0e} | {r['load']:.1f} |")
    return "\n".join(lines)


def format_memory(rows: List[dict]) -> str:
    """Resident memory of each measuring process after each stage (MB): framework imported, model built
    with its weights, first call, timed calls (the peak); and the peak above the import, on each PyTorch side's
    row as ours / that side's."""
    header = "| model | weights | mode | side | " + " | ".join(STAGES) + " | peak above the import | ours / this |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    names = {"ours": "ours", "pytorch": "pytorch", "official": "official code"}
    for r in rows:
        sides = [side for side in names if side in r]
        above = {side: r[side]["stages"]["peak"] - r[side]["stages"]["import"] for side in sides}
        for side in sides:
            ratio = f"{above['ours'] / above[side]:.2f}" if side != "ours" else ""
            lines.append(f"| {r['arch']} | {r['weights']} | {r['mode']} | {names[side]} | " +
                         " | ".join(f"{r[side]['stages'][s]:.0f}" for s in STAGES)
                         + f" | {above[side]:.0f} | {ratio} |")
    return "\n".join(lines)


STAGES = ("import", "model", "first call peak", "peak")


# ------------------------------------------------------------------------------------------- workers

def _prepare(spec: dict) -> dict:
    """MindSpore: the weight set's weights (ours and official names), the images, the batch-1 exports."""
    import mindspore as ms
    from src.app.device import init_device
    from src.deploy.export import export_network
    from src.models import create_model, export_formulation
    from src.weights.checkpoint import load_model_weights, save_checkpoint
    from src.weights.convert import to_official_names
    from tools.calibrate import calibration_images
    from tools.weight_sets import apply

    init_device("CPU")
    files, arch, size = spec["files"], spec["arch"], spec["image_size"]
    calibration = calibration_images(spec["batch_size"], size)
    images = calibration[:spec["batch_size"]]
    net = apply(create_model(arch, img_size=size, kernel_impl=spec["kernel_impl"]), arch, spec["weights"], calibration,
                size, spec["batch_size"])
    weights = {p.name: p.asnumpy() for p in net.get_parameters()}
    save_checkpoint(weights, files["weights.ckpt"])
    np.savez(files["official.npz"], **to_official_names(weights))
    np.save(files["images.npy"], images)
    for file_format, impl in (("MINDIR", spec["kernel_impl"]), ("ONNX", "native")) if spec["latency"] else ():
        form = export_formulation(impl, file_format)
        exported = create_model(arch, img_size=size, kernel_impl=form)
        load_model_weights(exported, files["weights.ckpt"], arch=arch)
        name = files[f"batch1.{file_format.lower()}"]
        os.replace(export_network(exported, file_format, name + ".part", 1, size, form.fold_batch_norm), name)
    return {"threads": int(ms.get_context("runtime_num_threads")), "versions": {"MindSpore": ms.__version__}}


def _ours(spec: dict) -> dict:
    """MindSpore: our model in ``spec['mode']`` (tools/benchmark.py's measured call)."""
    from tools.benchmark import first_array
    stages = {}
    call = _our_call(spec, stages)
    first, first_s, stages["first call peak"], times = measure(call, spec["warmup"], spec["runs"], first_array)
    return _summary(spec, first, first_s, times, stages)


def _our_call(spec: dict, stages: dict = None) -> Callable[[], object]:
    """Our model with the prepared weights, on the CPU, and its call in ``spec['mode']`` (tools/benchmark.py's
    ``mode_call``); ``stages`` receives the memory after the import and after the model."""
    from src.app.device import init_device
    init_device("CPU")
    from src.models import create_model
    from src.weights.checkpoint import load_model_weights
    from tools.benchmark import mode_call
    if stages is not None:
        stages["import"] = memory_mb()
    net = create_model(spec["arch"], img_size=spec["image_size"], kernel_impl=spec["kernel_impl"])
    load_model_weights(net, spec["files"]["weights.ckpt"], arch=spec["arch"])
    if stages is not None:
        stages["model"] = memory_mb()
    return mode_call(net, np.load(spec["files"]["images.npy"]), spec["mode"], steps=spec["warmup"] + spec["runs"] + 2)


def _pytorch(spec: dict) -> dict:
    """PyTorch (eager): the reference model in ``spec['mode']``, the same step as ours."""
    import torch
    stages = {"import": memory_mb()}
    call = _pytorch_call(spec, stages)
    first, first_s, stages["first call peak"], times = measure(call, spec["warmup"], spec["runs"])
    if "mindspore" in sys.modules:
        raise RuntimeError("the PyTorch measurement loaded MindSpore, whose memory would count against PyTorch")
    return dict(_summary(spec, first, first_s, times, stages), versions={"PyTorch": torch.__version__})


def _pytorch_call(spec: dict, stages: dict = None) -> Callable[[], object]:
    """The reference model's call in ``spec['mode']``: inference, or a step as ours (cross-entropy, backward,
    AdamW without weight decay on 1-D parameters and position embeddings, as src/engine/optim.py)."""
    import torch
    model = _reference_model(spec)
    if stages is not None:
        stages["model"] = memory_mb()
    x = torch.from_numpy(np.load(spec["files"]["images.npy"]))
    if spec["mode"] == "infer":
        model.eval()

        def call():
            with torch.no_grad():
                return model(x).numpy()
        return call
    model.train()
    labels = torch.arange(len(x)) % 1000
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in params if p.ndim > 1 and "pos_embed" not in n]},
              {"params": [p for n, p in params if p.ndim <= 1 or "pos_embed" in n], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)

    def call():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        return loss.detach().numpy()
    return call


def _reference_model(spec: dict):
    """The PyTorch model with the prepared weights, on ``spec['threads']`` threads: the reference, or with
    ``spec['anchor'] == 'official'`` the official code's model."""
    import torch
    torch.set_num_threads(spec["threads"])
    if spec.get("anchor") == "official":
        from tools.official_code import build_official
        model = build_official(spec["arch"], spec["official_code"])
    else:
        model = reference_module().build_named(spec["arch"], spec["image_size"])
    model.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(spec["files"]["official.npz"]).items()})
    return model


def _pytorch_batch1(spec: dict) -> dict:
    """PyTorch: the reference model's (``spec['anchor']`` 'official': the official model's) eager batch-1 latency
    (ms), then its ``torch.onnx.export`` (opset 17, as a PyTorch user exports it) into ``files['torch.onnx']``;
    where the exporter refuses the model, ``onnx_error`` says why (SViG's scatter_reduce without its input)."""
    import torch
    model = _reference_model(spec).eval()
    image = torch.from_numpy(np.load(spec["files"]["images.npy"])[:1])
    with torch.no_grad():
        ms_ = 1000 * float(np.median(time_calls(lambda: model(image), spec["warmup"], spec["runs"])))
        try:
            torch.onnx.export(model, (image,), spec["files"]["torch.onnx"], opset_version=17, dynamo=False,
                              input_names=["image"], output_names=["logits"])
        except torch.onnx.OnnxExporterError as error:
            return {"ms": ms_, "onnx_error": str(error)}
    return {"ms": ms_}


def _latency(spec: dict, model_file: str, threads: int = 0) -> dict:
    """Median batch-1 latency (ms) of an exported model, through the project's offline runner."""
    if model_file.endswith(".mindir"):
        from src.app.device import init_device
        init_device("CPU")
    from src.deploy.offline import load_runner
    runner = load_runner(model_file, threads)
    image = np.load(spec["files"]["images.npy"])[:1]
    runner(image)  # the MINDIR's graph compile
    return {"ms": 1000 * float(np.median(time_calls(lambda: runner(image), spec["warmup"], spec["runs"])))}


def _mindir(spec: dict) -> dict:
    return _latency(spec, spec["files"]["batch1.mindir"])


def _onnx(spec: dict) -> dict:
    import onnxruntime
    return dict(_latency(spec, spec["model"], spec["threads"]), versions={"onnxruntime": onnxruntime.__version__})


def _ours_ops(spec: dict) -> dict:
    """MindSpore's profiler over ``runs`` calls of our model: ms per call per operator, keyed 'type scope' with
    the scope's layer indices dropped, so that the blocks' operators add up."""
    import csv
    import glob
    import re
    from tools.benchmark import first_array
    step = _our_call(spec)
    from mindspore import Profiler

    def call():
        return first_array(step())
    time_calls(call, max(1, spec["warmup"]), 0)  # the graph compile stays out of the profile
    folder = os.path.join(os.path.dirname(spec["result"]), f"mindspore_profile_{spec['mode']}")
    profiler = Profiler(output_path=folder)
    time_calls(call, 0, spec["runs"])
    profiler.analyse()
    per_op = {}
    for path in glob.glob(os.path.join(folder, "**", "cpu_op_detail_info_*.csv"), recursive=True):
        with open(path, encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                scope = re.sub(r"(^|/)\d+-", r"\1", row["full_op_name"].rsplit("/", 1)[0])
                key = f"{row['op_type']} {scope.removeprefix('Default/')}"
                per_op[key] = per_op.get(key, 0.0) + float(row["op_total_time(ms)"]) / spec["runs"]
    return per_op


def _pytorch_ops(spec: dict) -> dict:
    """torch.profiler over ``runs`` calls of the reference: ms per call per aten operator (self CPU time)."""
    import torch
    call = _pytorch_call(spec)
    time_calls(call, spec["warmup"], 0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        time_calls(call, 0, spec["runs"])
    per_op = {}
    for event in profile.events():
        parent, scope = event.cpu_parent, ""
        while parent is not None and not scope:
            scope = "optimizer" if parent.name.startswith("Optimizer.step") else ""
            parent = parent.cpu_parent
        key = f"{event.name} {scope}".strip()
        per_op[key] = per_op.get(key, 0.0) + event.self_cpu_time_total / 1000 / spec["runs"]
    return {key: ms_ for key, ms_ in per_op.items() if ms_ > 0}


def _summary(spec: dict, first, first_s: float, times: List[float], stages: dict) -> dict:
    stages["peak"] = peak_memory_mb()
    return {"img_s": spec["batch_size"] / float(np.median(times)), "first_s": first_s, "peak_mb": stages["peak"],
            "stages": stages, "first": np.asarray(first, np.float64).tolist()}


WORKERS = {"prepare": _prepare, "ours": _ours, "pytorch": _pytorch, "pytorch_batch1": _pytorch_batch1,
           "mindir": _mindir, "onnx": _onnx, "ours_ops": _ours_ops, "pytorch_ops": _pytorch_ops}


def run_worker(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    if isinstance(spec["image_size"], list):  # JSON keeps a (height, width) pair as a list
        spec["image_size"] = tuple(spec["image_size"])
    result = WORKERS[spec["role"]](spec)
    with open(spec["result"], "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    run_worker(sys.argv[1])
