"""Offline inference on files, the Ascend 310 flow: preprocess -> inference -> postprocess.

* ``preprocess``: every image of ``<data_url>/val`` through the model's evaluation transform into
  ``<preprocess_path>/<id>.bin`` (raw little-endian float32, shape (1, 3, S, S), C order), plus
  ``labels.json`` ({"classes": [...], "image_size": S, "transform": {...}, "images": {id: {"label": int,
  "file": relative path}}}). A folder preprocessed with the same settings is reused, not rewritten.
* inference: for every ``<id>.bin``, the logits as ``<result_path>/<id>_0.bin`` (raw float32,
  (num_classes,)) -- written by the Ascend 310 application (``ascend310_infer/``) or, on any
  machine, by ``run_inference`` from the MINDIR (MindSpore) or ONNX (onnxruntime) export.
* ``postprocess``: top-1 / top-5 of the result files against ``labels.json``.
"""
import json
import os
from typing import Callable, Dict

import numpy as np

from ..data import class_names
from ..data.dataset import IMAGE_EXTENSIONS
from ..data.transforms import create_transforms
from ..engine.metrics import topk_correct
from .errors import DeployError

LABELS = "labels.json"


def preprocess(data_root: str, preprocess_path: str, args: dict) -> Dict[str, int]:
    """Write one input file per image of ``<data_root>/val`` and the label file; returns counts.
    ``args``: the evaluation transform (image_size, mean, std, crop_pct)."""
    from mindspore.dataset import transforms

    root = os.path.join(data_root, "val")
    names = class_names(data_root, "val")
    pipeline = transforms.Compose(create_transforms(False, args["image_size"], mean=args["mean"], std=args["std"],
                                                    crop_pct=args["crop_pct"]))
    settings = {"classes": names, "image_size": args["image_size"], "transform": {k: list(v) if isinstance(v, tuple)
                                                                              else v for k, v in args.items()}}
    if os.path.exists(os.path.join(preprocess_path, LABELS)):
        done = read_labels(preprocess_path)
        if {k: done.get(k) for k in settings} != settings:
            raise DeployError(f"{preprocess_path!r} holds inputs preprocessed with other settings; choose another "
                             f"--preprocess_path")
        return {"images": len(done["images"]), "classes": len(names), "reused": True}
    os.makedirs(preprocess_path, exist_ok=True)
    images = {}
    for label, name in enumerate(names):
        for file in sorted(os.listdir(os.path.join(root, name))):
            if not file.endswith(IMAGE_EXTENSIONS):
                continue
            relative = os.path.join(name, file)
            with open(os.path.join(root, relative), "rb") as handle:
                raw = np.frombuffer(handle.read(), np.uint8)
            try:
                tensor = pipeline(raw)
            except RuntimeError:
                raise DeployError(f"cannot read image {os.path.join(root, relative)!r}: it is not a decodable image "
                                 f"file; remove or replace it") from None
            key = f"img_{len(images):06d}"
            tensor[None].astype("<f4").tofile(os.path.join(preprocess_path, f"{key}.bin"))
            images[key] = {"label": label, "file": relative}
    with open(os.path.join(preprocess_path, LABELS), "w", encoding="utf-8") as handle:  # written last: a
        json.dump({**settings, "images": images}, handle, indent=1)                        # complete set
    return {"images": len(images), "classes": len(names), "reused": False}


def read_labels(preprocess_path: str) -> dict:
    path = os.path.join(preprocess_path, LABELS)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; run preprocess.py first")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def load_runner(model_file: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a (1, 3, S, S) float32 array to logits, from a .mindir or .onnx file; a file the
    runtime cannot load is a DeployError naming it."""
    if not os.path.isfile(model_file):
        raise FileNotFoundError(f"exported model {model_file!r} does not exist; run export.py first")
    if not model_file.endswith((".onnx", ".mindir")):
        raise DeployError(f"{model_file!r} is neither a .mindir nor an .onnx file")
    try:
        if model_file.endswith(".onnx"):
            import onnxruntime

            session = onnxruntime.InferenceSession(model_file, providers=["CPUExecutionProvider"])
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
    os.makedirs(result_path, exist_ok=True)
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
