"""visualize.py: the drawn neighbours are the block's actual graph (read back from the PNG), for every
family; Grad-CAM maps have the block's grid, follow the target class and use the true gradient."""
import json
import os

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor
from PIL import Image

import visualize as visualize_cli
from src.deploy.visualize import CANVAS, COLOURS, TITLE, capture, grad_cam, key_grid, visualize
from src.models import create_model
from src.weights.checkpoint import save_checkpoint
from support import family_representatives
from tools.calibrate import calibrate, structured_images

SIZE = 64


def model(name, seed=0):
    net = create_model(name, num_classes=5, img_size=SIZE)
    calibrate(net, structured_images(4, SIZE, seed=seed))
    return net


def grapher_input(net, block):
    """The input of block ``block`` (0-based), computed here by running the backbone entries before it."""
    entry, _ = net.graphers()[block]
    x = net.embed(Tensor(structured_images(1, SIZE, seed=7)))
    for i in range(entry):
        x = net.backbone[i](x)
    return x


def drawn_kinds(path, grid):
    """The marker colour at the centre of every cell of ``grid`` in the PNG, as a kind name."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    by_colour = {colour: kind for kind, colour in COLOURS.items()}
    rows, cols = grid
    kinds = []
    for r in range(rows):
        for c in range(cols):
            x, y = (c + 0.5) * CANVAS / cols, TITLE + (r + 0.5) * CANVAS / rows
            kinds.append(by_colour.get(tuple(int(v) for v in pixels[int(y), int(x)]), "unknown"))
    return kinds


@pytest.mark.slow(reason="every family drawn and read back")
@pytest.mark.parametrize("name", family_representatives())
def test_marked_cells_are_the_blocks_neighbours(pynative, name, tmp_path):
    net = model(name)
    image = structured_images(1, SIZE, seed=7)[0]
    display = np.clip(image.transpose(1, 2, 0) * 0.5 + 0.5, 0, 1)
    last = len(net.graphers())
    summary = visualize(net, image, display, [1, last], str(tmp_path), [f"c{i}" for i in range(5)])
    for block in (1, last):
        grapher = net.graphers()[block - 1][1]
        info = summary["blocks"][str(block)]
        neighbours_png = tmp_path / f"block{block:02d}_neighbours.png"
        assert os.path.getsize(neighbours_png) > 1000 and os.path.getsize(tmp_path / f"block{block:02d}_gradcam.png")
        # the block's graph, computed independently of the drawing
        rows, cols = grapher.grid
        centre = info["centre"]
        graph = grapher.neighbours(grapher_input(net, block - 1)).asnumpy()[0][centre[0] * cols + centre[1]]
        grid = key_grid(grapher)
        expected = ["other"] * (grid[0] * grid[1])
        if graph.dtype == np.bool_:
            for key in np.flatnonzero(graph):
                expected[key] = "neighbour"
        else:
            for position, key in enumerate(graph):
                spec = grapher.graph_spec
                expected[key] = "dilated" if position * spec.dilation >= spec.k else "neighbour"
        if grid == (rows, cols):  # keys are the nodes: the centre's own cell carries the centre marker
            expected[centre[0] * cols + centre[1]] = "centre"
        assert drawn_kinds(neighbours_png, grid) == expected, f"block {block}"
    assert summary["target"] == summary["predicted"]


@pytest.mark.slow(reason="visualize.py in a process")
def test_dilated_neighbours_and_chosen_node_through_the_command_line(pynative, tmp_path, capsys):
    net = model("vig_ti_224_gelu")  # blocks 5-12 are dilated (d = 2, 3)
    ckpt = save_checkpoint({p.name: p for p in net.get_parameters()}, str(tmp_path / "vig_ti.ckpt"))
    Image.fromarray((structured_images(1, 130, seed=7)[0].transpose(1, 2, 0) * 127 + 128).astype(np.uint8)).convert(
        "L").save(tmp_path / "grey.png")
    summary = visualize_cli.main(["--arch", "vig_ti_224_gelu", "--num_classes", "5", "--image_size", "112",
                                  "--pretrained", ckpt, "--image", str(tmp_path / "grey.png"), "--layers", "2", "9",
                                  "--node", "1", "4", "--class", "3", "--out", str(tmp_path / "viz")])
    assert summary["target"] == 3 and "class 3" in capsys.readouterr().out
    saved = json.loads((tmp_path / "viz" / "summary.json").read_text())
    assert saved["blocks"]["9"]["centre"] == [1, 4] and saved["blocks"]["9"]["dilation"] == 3
    kinds = {n["kind"] for n in saved["blocks"]["9"]["neighbours"]}
    assert kinds == {"neighbour", "dilated"}
    drawn = drawn_kinds(tmp_path / "viz" / "block09_neighbours.png", (7, 7))
    assert drawn.count("dilated") == sum(n["kind"] == "dilated" for n in saved["blocks"]["9"]["neighbours"]) > 0
    with pytest.raises(SystemExit):  # existing drawings are never replaced
        from src.app.cli import run_cli
        run_cli(lambda: visualize_cli.main(["--arch", "vig_ti_224_gelu", "--num_classes", "5", "--image_size", "112",
                                            "--pretrained", ckpt, "--image", str(tmp_path / "grey.png"),
                                            "--layers", "2", "--out", str(tmp_path / "viz")]))
    assert "already exists; nothing was written" in capsys.readouterr().err


@pytest.mark.slow(reason="compiles a gradient graph")
def test_grad_cam_shape_target_class_and_true_gradient(pynative):
    net = model("vig_nano_gelu")
    x = Tensor(structured_images(1, SIZE, seed=7))
    last = len(net.graphers()) - 1
    one, other = capture(net, x, [0, last], target=1), capture(net, x, [0, last], target=4)
    for block in (0, last):
        cam = grad_cam(one["activations"][block], one["gradients"][block])
        assert cam.shape == net.graphers()[block][1].grid and cam.max() == 1.0 and cam.min() >= 0
        assert not np.allclose(cam, grad_cam(other["activations"][block], other["gradients"][block]))
    # the gradient is d logit / d activation: a central difference through the last block's fc2 output
    conv = net.graphers()[last][1].fc2[0]
    grad = one["gradients"][last]
    at = np.unravel_index(np.argmax(np.abs(grad)), grad.shape)
    eps = 1e-2

    def logit(shift):
        handle = conv.register_forward_hook(lambda cell, args, out: out + Tensor(shift))
        try:
            return float(net(x).asnumpy()[0, 1])
        finally:
            handle.remove()

    bump = np.zeros((1,) + grad.shape, np.float32)
    bump[(0,) + at] = eps
    numeric = (logit(bump) - logit(-bump)) / (2 * eps)
    assert abs(numeric - grad[at]) < 1e-2 * abs(grad[at]) + 1e-4
    ms.set_context(mode=ms.PYNATIVE_MODE)


def test_threshold_graph_rows_are_drawn_whole(pynative, tmp_path, monkeypatch):
    """A boolean adjacency (SViG's similarity-threshold graph) has any number of neighbours per node."""
    net = model("vig_nano_gelu")
    grapher = net.graphers()[0][1]
    count = grapher.grid[0] * grapher.grid[1]
    adjacency = (np.add.outer(np.arange(count) * 7, np.arange(count)) % 3 == 0) | np.eye(count, dtype=bool)
    monkeypatch.setattr(grapher, "neighbours", lambda x: Tensor(adjacency[None]))
    image = structured_images(1, SIZE, seed=7)[0]
    summary = visualize(net, image, np.clip(image.transpose(1, 2, 0) * 0.5 + 0.5, 0, 1), [1], str(tmp_path),
                        [f"c{i}" for i in range(5)], node=(1, 2))
    centre = 1 * grapher.grid[1] + 2
    expected = ["neighbour" if edge else "other" for edge in adjacency[centre]]
    expected[centre] = "centre"
    assert drawn_kinds(tmp_path / "block01_neighbours.png", grapher.grid) == expected
    assert len(summary["blocks"]["1"]["neighbours"]) == adjacency[centre].sum()
