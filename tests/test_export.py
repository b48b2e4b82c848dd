"""eval.py, export.py (MINDIR, AIR, ONNX) and the offline inference flow on a tiny model and folder."""
import functools
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import yaml
import mindspore as ms
from mindspore import Tensor, nn
from mindspore.dataset import transforms

import eval as eval_entry
import export as export_entry
import infer as infer_entry
import postprocess as postprocess_entry
import preprocess as preprocess_entry
from support import ROOT, family_representatives, write_image_folder
from src.data import DatasetError, EvalTransformParams, class_names, create_transforms
from src.models import create_model
from src.deploy.export import export_network
from src.models.layers import GELU, export_formulation
from tools.calibrate import calibrate, knn_margins, structured_images
from src.weights.checkpoint import load_model_weights, save_checkpoint
from src.utils.metrics import cross_entropy_sum

ARCH, SIZE, CLASSES = "vig_nano_gelu", 32, 3
TRANSFORM = EvalTransformParams(image_size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.9)


def base_args(image_folder, checkpoint, *extra):
    """A YAML file shared by every entry point (as a user's config is), plus this entry's own keys."""
    path = os.path.join(os.path.dirname(str(checkpoint)), f"run-{abs(hash(image_folder))}.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"arch": ARCH, "data_url": image_folder, "num_classes": CLASSES, "pretrained": str(checkpoint),
                        "amp_level": "O2", "batch_size": 5, "num_parallel_workers": 2, **TRANSFORM.record()}, handle)
    return ["--config", path, *extra]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model with calibrated (non-degenerate) weights and an EMA copy, saved as training does."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = calibrate(create_model(ARCH, num_classes=CLASSES, img_size=SIZE, kernel_impl="native"),
                    structured_images(8, SIZE))
    entries = {p.name: p for p in net.get_parameters()}
    entries.update({f"ema.{p.name}": Tensor(p.asnumpy() * 0.5) for p in net.trainable_params()})
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_checkpoint(entries, str(path))
    return path


@functools.lru_cache(maxsize=None)  # several tests compare against the same eager computation
def direct_logits(image_folder, checkpoint, use_ema=False):
    """Logits and labels image by image (classes in order, files sorted), the evaluation transform applied
    eagerly, in float32."""
    net = create_model(ARCH, num_classes=CLASSES, img_size=SIZE, kernel_impl="cpu")
    load_model_weights(net, str(checkpoint), use_ema=use_ema)
    net.set_train(False)
    pipeline = transforms.Compose(create_transforms(TRANSFORM))
    logits, labels = [], []
    for label, name in enumerate(class_names(image_folder, "val")):
        folder = os.path.join(image_folder, "val", name)
        for file in sorted(os.listdir(folder)):
            x = pipeline(np.fromfile(os.path.join(folder, file), np.uint8))[None]
            logits.append(net(Tensor(x)).asnumpy()[0])
            labels.append(label)
    return np.array(logits, np.float64), np.array(labels)


def direct_eval(image_folder, checkpoint, use_ema=False):
    """Top-1/top-5/loss of ``direct_logits``."""
    logits, labels = direct_logits(image_folder, checkpoint, use_ema)
    order = np.argsort(-logits, 1)
    return {"top1": 100 * np.mean(order[:, 0] == labels),
            "top5": 100 * np.mean((order[:, :5] == labels[:, None]).any(1)),
            "loss": cross_entropy_sum(logits, labels) / len(labels), "count": len(labels)}


@pytest.mark.slow(reason="compiles evaluation and the model")
@pytest.mark.parametrize("use_ema", [False, True])
def test_eval_equals_a_direct_computation(graph_mode, image_folder, checkpoint, use_ema):
    """The config trains in O2; evaluation still runs in float32 unless eval_amp_level says otherwise."""
    result = eval_entry.main(base_args(image_folder, checkpoint, "--use_ema", str(use_ema)))
    assert result["ema"] == use_ema
    expected = direct_eval(image_folder, checkpoint, use_ema)
    assert result["count"] == expected["count"] == 12
    assert result["top1"] == pytest.approx(expected["top1"], abs=1e-9)
    assert result["top5"] == pytest.approx(expected["top5"], abs=1e-9)
    assert result["loss"] == pytest.approx(expected["loss"], rel=1e-5)


@pytest.mark.slow(reason="export and reload")
def test_mindir_export_reloads_with_the_same_outputs(graph_mode, image_folder, checkpoint, tmp_path):
    stem = tmp_path / "tiny"
    path = export_entry.main(base_args(image_folder, checkpoint, "--file_format", "MINDIR", "--file_name", str(stem),
                                       "--batch_size", "2"))  # the config's O2 is training precision only
    assert path == f"{stem}.mindir"
    # the exported form: grouped convolutions as the batched matmul of the native form
    net = create_model(ARCH, num_classes=CLASSES, img_size=SIZE, kernel_impl=export_formulation("native", "MINDIR"))
    load_model_weights(net, str(checkpoint))
    net.set_train(False)
    x = Tensor(structured_images(2, SIZE, seed=4))
    np.testing.assert_array_equal(nn.GraphCell(ms.load(path))(x).asnumpy(), net(x).asnumpy())
    with pytest.raises(ValueError, match="already exists"):  # an existing export is never replaced
        export_entry.main(base_args(image_folder, checkpoint, "--file_format", "MINDIR", "--file_name", str(stem)))


RUN_MINDIR = """
import sys
import numpy as np
import mindspore as ms
ms.set_device("CPU")
net = ms.nn.GraphCell(ms.load(sys.argv[1]))
np.save(sys.argv[3], net(ms.Tensor(np.load(sys.argv[2]))).asnumpy())
"""


@pytest.mark.slow(reason="exports and reloads in another process")
def test_a_cpu_mindir_needs_no_compiled_kernel(graph_mode, image_folder, checkpoint, tmp_path, isolated_kernels):
    """A MINDIR exported from the CPU formulation holds no compiled-kernel operator and no BatchNorm: with the
    exporting host's kernel cache deleted, a fresh process with an empty cache runs it and gets the logits of
    the CPU-formulation model (compiled kernels included) in this process."""
    net = create_model(ARCH, num_classes=CLASSES, img_size=SIZE, kernel_impl="cpu")
    load_model_weights(net, str(checkpoint))
    net.set_train(False)
    images = structured_images(2, SIZE, seed=4)
    expected = net(Tensor(images)).asnumpy()
    path = export_entry.main(base_args(image_folder, checkpoint, "--file_format", "MINDIR", "--kernel_impl", "cpu",
                                       "--file_name", str(tmp_path / "cpu"), "--batch_size", "2"))
    shutil.rmtree(isolated_kernels, ignore_errors=True)
    with open(path, "rb") as handle:
        graph = handle.read()
    assert b".so:" not in graph  # a compiled-kernel operator names its library: <path>.so:<symbol>
    assert b"BatchNorm" not in graph  # each folded into its convolution (all follow one in ViG)
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    np.save(tmp_path / "x.npy", images)
    subprocess.run([sys.executable, "-c", RUN_MINDIR, path, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   env=dict(os.environ, VIG_KERNEL_CACHE=str(empty)), check=True, timeout=300)
    got = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert os.listdir(empty) == []


def onnx_matches_cell(net, path, images):
    """Logits within 1e-4 (relative to their largest magnitude) and the same classes."""
    net.set_train(False)
    expected = net(Tensor(images)).asnumpy()
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": images})[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))


def assert_one_erf_per_gelu(net, path):
    """The ONNX file holds one Erf per GELU of the Cell and nothing of erf's formula."""
    ops = [node.op_type for node in onnx.load(path).graph.node]
    assert ops.count("Erf") == sum(isinstance(cell, GELU) for _, cell in net.cells_and_names()) > 0
    assert "Abs" not in ops


FULL_SIZE_ONNX = "pvig_ti_224_gelu"  # its family's smallest model, exported whole below


@pytest.mark.slow(reason="exports every family and runs it in onnxruntime")
@pytest.mark.parametrize("arch", [arch for arch in family_representatives() if arch != FULL_SIZE_ONNX])
def test_every_family_exports_to_onnx(graph_mode, tmp_path, arch):
    """Each family's ONNX graph computes the Cell's function. The sizes of a family (Ti/S/M/B) differ
    only in widths, depths and k, not in operators, so its smallest model and small inputs cover it.
    Calibrated weights and smooth images avoid kNN near-ties. The model is built in export's
    formulation and exported in memory; export.py's own path (weights file, configuration) is tested
    at full size below, with the Pyramid ViG family's model."""
    size = 64
    net = create_model(arch, num_classes=10, img_size=size, kernel_impl=export_formulation("native", "ONNX"))
    calibrate(net, structured_images(4, size, seed=1))
    path = export_network(net, "ONNX", str(tmp_path / arch), 2, size)
    onnx_matches_cell(net, path, structured_images(2, size, seed=2))
    assert_one_erf_per_gelu(net, path)


def test_onnx_erf_rewrite_takes_only_the_formula():
    """A Where(z < 0, -y, y) whose y does not come from Abs(z) is not the formula's erf and stays."""
    from onnx import TensorProto, helper
    from src.deploy.onnx_graph import erf_from_formula
    nodes = [helper.make_node("Less", ["z", "zero"], ["negative"]), helper.make_node("Exp", ["z"], ["y"]),
             helper.make_node("Neg", ["y"], ["minus"]), helper.make_node("Where", ["negative", "minus", "y"], ["out"])]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [value("z", TensorProto.FLOAT, [4])], [value("out", TensorProto.FLOAT, [4])],
                              [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph)
    assert erf_from_formula(model) == 0 and [n.op_type for n in model.graph.node] == ["Less", "Exp", "Neg", "Where"]
    nodes[1] = helper.make_node("Abs", ["z"], ["y"])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    assert erf_from_formula(model) == 1 and [n.op_type for n in model.graph.node] == ["Erf"]


@pytest.mark.slow(reason="the full pvig_ti exported and run in onnxruntime")
def test_full_size_onnx_export(graph_mode, tmp_path):
    """The full pvig_ti (all parameters, relative-position tables resized in the graph) at 128x128, through
    export.py: the Pyramid ViG family's case of the test above.

    Among thousands of ranked candidate distances, two may lie within float32 rounding of each
    other; another runtime may then order them differently and legitimately pick another neighbour.
    The input is the first structured image whose smallest deciding gap exceeds 1e-6 (~10x the
    per-block float32 error); at 224x224 nearly every input has such near-ties (see README).
    """
    size = 128
    net = create_model(FULL_SIZE_ONNX, img_size=size, kernel_impl="native")
    calibrate(net, structured_images(4, size, seed=1))
    image = next(x for x in (structured_images(1, size, seed=s) for s in range(2, 12))
                 if min(m.min() for m in knn_margins(net, x)) > 1e-6)
    ckpt = tmp_path / "w.ckpt"
    save_checkpoint({p.name: p for p in net.get_parameters()}, str(ckpt))
    path = export_entry.main(["--arch", FULL_SIZE_ONNX, "--image_size", str(size), "--pretrained", str(ckpt),
                              "--file_format", "ONNX", "--file_name", str(tmp_path / "pvig_ti")])
    onnx_matches_cell(net, path, image)
    assert_one_erf_per_gelu(net, path)


def test_air_on_cpu_is_one_clear_line(image_folder, checkpoint, tmp_path):
    done = subprocess.run([sys.executable, "export.py", *base_args(image_folder, checkpoint, "--file_format", "AIR",
                                                                   "--file_name", str(tmp_path / "x"))],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: AIR export needs the Ascend backend")
    assert not os.listdir(tmp_path)


@pytest.mark.slow(reason="the whole offline flow")
@pytest.mark.parametrize("file_format", ["MINDIR", "ONNX"])
def test_offline_flow_gives_eval_top1(graph_mode, image_folder, checkpoint, tmp_path, file_format):
    stem = str(tmp_path / "model")
    config = base_args(image_folder, checkpoint)
    model = ["--file_name", stem, "--file_format", file_format]
    pre, res = ["--preprocess_path", str(tmp_path / "pre")], ["--result_path", str(tmp_path / "res")]
    export_entry.main(config + model)  # batch 1, as the offline flow runs
    assert preprocess_entry.main(config + pre) == {"images": 12, "classes": CLASSES, "reused": False}
    assert len([f for f in os.listdir(tmp_path / "pre") if f.endswith(".bin")]) == 12
    assert infer_entry.main(config + model + pre + res) == 12
    offline = postprocess_entry.main(pre + res)
    online = direct_eval(image_folder, checkpoint)  # eval.py's results (test_eval_equals_a_direct_computation)
    assert offline["count"] == online["count"] == 12  # the same counts of 12 images (percentages to rounding)
    assert offline["top1"] == pytest.approx(online["top1"], abs=1e-9)
    assert offline["top5"] == pytest.approx(online["top5"], abs=1e-9)
    # per image: the logits of the offline files are the model's own
    expected, _ = direct_logits(image_folder, checkpoint)
    got = np.stack([np.fromfile(tmp_path / "res" / f"img_{i:06d}_0.bin", "<f4") for i in range(12)])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert preprocess_entry.main(config + pre)["reused"]  # same settings: kept as they are
    with pytest.raises(ValueError, match="preprocessed with other settings"):
        preprocess_entry.main(config + pre + ["--crop_pct", "0.8"])


def test_an_unreadable_image_is_named(graph_mode, tmp_path, checkpoint):
    folder = write_image_folder(tmp_path / "data", train_per_class=1, val_per_class=2)
    (tmp_path / "data" / "val" / "class_1" / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=r"1 of 7 images in '.*/val' cannot be read .*'.*/val/class_1/broken.png'"):
        eval_entry.main(base_args(folder, checkpoint))
