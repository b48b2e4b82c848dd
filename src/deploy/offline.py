"""Offline inference on files, the Ascend 310 flow: preprocess -> inference -> postprocess.

* ``preprocess``: every image of ``<data_url>/val`` through the model's evaluation transform into
  ``<preprocess_path>/<id>.bin`` (raw little-endian float32, shape (1, 3, S, S), C order), plus
  ``labels.json`` ({"classes": [...], "image_size": S, "transform": {...}, "images": {id: {"label": int,
  "file": relative path}}, "skipped": [unreadable files]}). A folder preprocessed from the same image
  files with the same settings is reused, not rewritten; any other existing folder is refused.
* inference: for every ``<id>.bin``, the logits as ``<result_path>/<id>_0.bin`` (raw float32,
  (num_classes,)) -- written by the Ascend 310 application (``ascend310_infer/``) or, on any
  machine, by ``run_inference`` from the MINDIR (MindSpore) or ONNX (onnxruntime) export.
* ``postprocess``: top-1 / top-5 of the result files against ``labels.json``.
"""
import json
import os
from typing import Callable, Dict

import numpy as np

from ..data.files import BadImagePolicy, ImageFiles
from ..data.staging import StagedDir
from ..data.params import DatasetParams, EvalTransformParams
from ..data.transforms import UndecodableImage, create_transforms
from ..utils.files import check_writable
from ..utils.metrics import topk_correct
from .errors import DeployError

LABELS = "labels.json"


def preprocess(data_root: str, preprocess_path: str, params: EvalTransformParams,
               options: DatasetParams = DatasetParams()) -> Dict[str, int]:
    """Write one input file per readable image of ``<data_root>/val`` and the label file; returns counts.
    ``params``: the evaluation transform; ``options``: its unreadable-image policy.

    Unreadable images are skipped under the same policy as training and evaluation
    (``src/data/files.py``) and listed in ``labels.json`` under ``skipped``.
    """
    files = ImageFiles(data_root, "val")
    (transform,) = create_transforms(params, max_image_pixels=options.max_image_pixels)
    settings = {"classes": files.classes, "image_size": params.image_size, "transform": params.record()}
    listing = [files.relative(i) for i in range(len(files))]
    out = os.path.abspath(preprocess_path)
    if os.path.exists(os.path.join(out, LABELS)):
        _check_reusable(out, settings, listing, files.folder)
        return {"images": len(read_labels(out)["images"]), "classes": len(files.classes), "reused": True}
    if os.path.exists(out) and (not os.path.isdir(out) or any(os.scandir(out))):
        raise DeployError(f"{out!r} is not empty and holds no {LABELS} written by preprocess.py; nothing was changed: "
                          f"choose a new or empty --preprocess_path")
    check_writable(os.path.dirname(out), "parent folder", "preprocess_path")
    reasons: Dict[int, str] = {}
    policy = BadImagePolicy(files, options.max_bad_image_fraction, reasons.get)
    images, skipped = {}, []
    with StagedDir(out, LABELS, settings) as stage:  # labels.json is its first file; the folder appears when done
        for index, relative in enumerate(listing):
            try:
                tensor = transform(files.read(index))
            except (OSError, UndecodableImage) as err:
                reasons[index] = str(err) if isinstance(err, UndecodableImage) else f"cannot be read ({err})"
                skipped.append(relative)
                policy.add([index])
                continue
            key = f"img_{len(images):06d}"
            tensor[None].astype("<f4").tofile(os.path.join(stage.path, f"{key}.bin"))
            images[key] = {"label": int(files.labels[index]), "file": relative}
        stage.write_marker({"images": images, "skipped": skipped})
        if not stage.publish():
            raise DeployError(f"{out!r} was filled by another process while preprocessing; choose another "
                              "--preprocess_path")
    policy.summary()
    return {"images": len(images), "classes": len(files.classes), "reused": False}


def _check_reusable(out: str, settings: dict, listing: list, folder: str) -> None:
    """An earlier output is reused only for the same settings and the same image files."""
    done = read_labels(out)
    if {k: done.get(k) for k in settings} != settings:
        raise DeployError(f"{out!r} holds inputs preprocessed with other settings; choose another "
                          f"--preprocess_path")
    before = sorted([item["file"] for item in done["images"].values()] + done.get("skipped", []))
    now = sorted(listing)
    if before != now:
        gone, new = sorted(set(before) - set(now)), sorted(set(now) - set(before))
        raise DeployError(f"{out!r} holds inputs preprocessed from other images than {folder!r} now has "
                          f"({len(before)} files then, {len(now)} now; {len(gone)} gone, e.g. {gone[:2]}, {len(new)} "
                          f"new, e.g. {new[:2]}); choose another --preprocess_path or move the old one away")


def read_labels(preprocess_path: str) -> dict:
    path = os.path.join(preprocess_path, LABELS)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; run preprocess.py first")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def load_runner(model_file: str, threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a (1, 3, S, S) float32 array to logits, from a .mindir or .onnx file; a file the
    runtime cannot load is a DeployError naming it. ``threads``: onnxruntime's intra-op threads (0: its
    default); MindSpore's come from its context."""
    if not os.path.isfile(model_file):
        raise FileNotFoundError(f"exported model {model_file!r} does not exist; run export.py first")
    if not model_file.endswith((".onnx", ".mindir")):
        raise DeployError(f"{model_file!r} is neither a .mindir nor an .onnx file")
    try:
        if model_file.endswith(".onnx"):
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            session = onnxruntime.InferenceSession(model_file, options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            return lambda x: session.run(None, {name: x})[0]
        import mindspore as ms

        graph = ms.nn.GraphCell(ms.load(model_file))
        return lambda x: graph(ms.Tensor(x)).asnumpy()
    except Exception as err:  # each runtime raises its own types, with long internal texts
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise DeployError(f"cannot load {model_file!r} as an exported model ({reason[:200]}); the file is damaged "
                          f"or not an export: export it again with export.py") from None


def run_inference(model_file: str, preprocess_path: str, result_path: str) -> int:
    """The Python counterpart of the Ascend 310 application; returns the number of images."""
    labels = read_labels(preprocess_path)
    size = labels["image_size"]
    runner = load_runner(model_file)
    check_writable(result_path, "result folder", "result_path")
    for key in labels["images"]:
        x = np.fromfile(os.path.join(preprocess_path, f"{key}.bin"), "<f4").reshape(1, 3, size, size)
        try:
            logits = runner(x)
        except Exception as err:  # the runtimes raise their own types for a wrong input shape
            raise DeployError(f"{model_file} cannot run a (1, 3, {size}, {size}) input ({str(err).splitlines()[0]}); "
                              f"export it with --batch_size 1 --image_size {size}") from None
        np.asarray(logits, np.float32).reshape(-1).tofile(os.path.join(result_path, f"{key}_0.bin"))
    return len(labels["images"])


def postprocess(preprocess_path: str, result_path: str) -> Dict[str, float]:
    """Top-1 / top-5 (percent) of the result files."""
    labels = read_labels(preprocess_path)
    logits, targets = [], []
    for key, item in labels["images"].items():
        path = os.path.join(result_path, f"{key}_0.bin")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"result {path} is missing; did the inference step run over {preprocess_path}?")
        values = np.fromfile(path, "<f4")
        if values.size != len(labels["classes"]):
            raise DeployError(f"result {path} holds {values.size} float32 values, expected {len(labels['classes'])} "
                              f"logits (one per class); was the model exported for another num_classes or batch?")
        logits.append(values)
        targets.append(item["label"])
    if not logits:
        raise DeployError(f"{preprocess_path} lists no images")
    hits = topk_correct(np.stack(logits), np.array(targets))
    return {"top1": 100.0 * hits[1] / len(targets), "top5": 100.0 * hits[5] / len(targets), "count": len(targets)}
