"""What a ViG looks at: a node's neighbours in chosen blocks, and Grad-CAM maps of those blocks.

For one image through the evaluation transform (so the drawing is the model's input and its node
grid exactly), in PyNative mode:

* **Neighbours.** Each chosen block's graph is the Grapher's own ``neighbours()`` on the input that
  block received in the forward pass: kNN indices (after dilation; for pyramid stages with key
  pooling r > 1 they index the r x r pooled key grid) or SViG's boolean adjacency. The drawing shows
  the block's grid on the image, the centre node, its neighbours and the edges; neighbours the plain
  kNN would not reach (kept positions t with t * d >= k, i.e. beyond the k nearest: reached through
  dilation) have their own colour. Every cell carries one opaque marker at its centre (centre node,
  neighbour, neighbour via dilation, other), so the drawing can be read back exactly.
* **Grad-CAM** (as in GraphConvNet's visualisation): the activation A of the Grapher's fc2
  convolution (right after the graph aggregation, before its BatchNorm) and the gradient of the target
  class logit with respect to it give cam = ReLU(sum_c mean_hw(dy/dA_c) A_c), scaled to max 1. The
  gradient is taken by adding a zero tensor to A through a forward hook and differentiating the logit
  with respect to it (one backward pass for all chosen blocks).

The centre node of each block is by default its most activated node (the Grad-CAM maximum), or the
node at ``node`` (row, column) of the first block's grid, mapped onto each block's grid.
"""
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from .errors import DeployError

CANVAS = 448  # pixels of the drawn image (square)
TITLE = 44    # pixels of the text strip above it
COLOURS = {"centre": (230, 25, 75), "neighbour": (255, 225, 25), "dilated": (0, 200, 255), "other": (128, 128, 128)}
LABELS = {"centre": "centre node", "neighbour": "neighbour", "dilated": "neighbour via dilation", "other": "node"}


def capture(net: nn.Cell, x: Tensor, blocks: Sequence[int], target: Optional[int] = None) -> dict:
    """One forward and one backward pass: the logits, the target class (``target`` or the predicted one)
    and per chosen block (indices into ``net.graphers()``) its input, fc2 activation and its gradient."""
    graphers = [grapher for _, grapher in net.graphers()]
    inputs: Dict[int, Tensor] = {}
    acts: Dict[int, Tensor] = {}
    deltas: Dict[int, Tensor] = {}

    def keep_input(i):
        def hook(cell, args):
            inputs[i] = args[0]
        return hook

    def probe(i):  # adds the tensor the gradient is taken with respect to
        def hook(cell, args, out):
            acts[i] = out
            return out + deltas[i] if i in deltas else out
        return hook

    handles = [graphers[i].register_forward_pre_hook(keep_input(i)) for i in blocks]
    handles += [graphers[i].fc2[0].register_forward_hook(probe(i)) for i in blocks]
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)  # hooks run in PyNative mode only
    try:
        net.set_train(False)
        logits = net(x).asnumpy()[0]
        target = int(np.argmax(logits)) if target is None else target
        if not 0 <= target < logits.shape[0]:
            raise DeployError(f"--class {target} is out of range: the model has {logits.shape[0]} classes")
        shapes = {i: acts[i].shape for i in blocks}
        values = {i: acts[i].asnumpy()[0] for i in blocks}

        def logit(*probes):
            deltas.update(zip(blocks, probes))
            return net(x)[0, target]

        grads = ms.grad(logit, grad_position=tuple(range(len(blocks))))(
            *[ops.zeros(shapes[i], ms.float32) for i in blocks])
        grads = grads if isinstance(grads, tuple) else (grads,)
    finally:
        ms.set_context(mode=previous)
        for handle in handles:
            handle.remove()
    return {"logits": logits, "target": target, "inputs": inputs, "activations": values,
            "gradients": {i: g.asnumpy()[0] for i, g in zip(blocks, grads)}}


def grad_cam(activation: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """ReLU(sum_c mean_hw(grad_c) * A_c), scaled to a maximum of 1 (all zeros stay zeros); (H, W)."""
    weights = gradient.mean(axis=(1, 2))
    cam = np.maximum((weights[:, None, None] * activation).sum(0), 0)
    return cam / cam.max() if cam.max() > 0 else cam


def neighbour_cells(grapher: nn.Cell, graph_row: np.ndarray) -> List[Tuple[int, str]]:
    """(key index, kind) of a node's neighbours from its row of the block's graph: kNN indices (kind
    'dilated' for kept positions t with t * d >= k) or a boolean adjacency row (every edge a 'neighbour')."""
    if graph_row.dtype == np.bool_:
        return [(int(j), "neighbour") for j in np.flatnonzero(graph_row)]
    spec = grapher.graph_spec
    cells: Dict[int, str] = {}
    for position, key in enumerate(graph_row.tolist()):
        kind = "dilated" if position * spec.dilation >= spec.k else "neighbour"
        cells.setdefault(int(key), kind)
    return list(cells.items())


def key_grid(grapher: nn.Cell) -> Tuple[int, int]:
    """The grid the block's neighbours live on: its node grid, pooled by the key reduction ratio."""
    ratio = getattr(grapher.graph_conv, "reduce_ratio", 1)
    return grapher.grid[0] // ratio, grapher.grid[1] // ratio


def _figure(image: np.ndarray):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(CANVAS / 100, (CANVAS + TITLE) / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, CANVAS / (CANVAS + TITLE)))
    ax.imshow(image, extent=(0, CANVAS, CANVAS, 0), interpolation="bilinear")
    ax.set_xlim(0, CANVAS)
    ax.set_ylim(CANVAS, 0)
    ax.axis("off")
    return fig, ax


def _rgb(name: str) -> Tuple[float, float, float]:
    return tuple(c / 255 for c in COLOURS[name])


def draw_neighbours(image: np.ndarray, grapher: nn.Cell, centre: Tuple[int, int], cells: List[Tuple[int, str]],
                    path: str, title: str) -> str:
    """The block's key grid on the image, the centre node, its neighbour cells (filled, with edges) and a
    marker on every cell; written as a PNG."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, Rectangle

    fig, ax = _figure(image)
    rows, cols = key_grid(grapher)
    cell_w, cell_h = CANVAS / cols, CANVAS / rows
    for r in range(1, rows):
        ax.add_line(Line2D((0, CANVAS), (r * cell_h,) * 2, color="white", alpha=0.35, linewidth=0.6, zorder=1))
    for c in range(1, cols):
        ax.add_line(Line2D((c * cell_w,) * 2, (0, CANVAS), color="white", alpha=0.35, linewidth=0.6, zorder=1))
    node_h, node_w = CANVAS / grapher.grid[0], CANVAS / grapher.grid[1]
    cx, cy = (centre[1] + 0.5) * node_w, (centre[0] + 0.5) * node_h
    kinds = dict(cells)
    for key, kind in cells:
        r, c = divmod(key, cols)
        ax.add_patch(Rectangle((c * cell_w, r * cell_h), cell_w, cell_h, facecolor=_rgb(kind), alpha=0.3,
                               edgecolor="none", zorder=2))
        ax.add_line(Line2D((cx, (c + 0.5) * cell_w), (cy, (r + 0.5) * cell_h), color=_rgb(kind), linewidth=1.2,
                           zorder=3))
    radius = min(max(2.0, 0.15 * min(cell_w, cell_h)), 8.0)
    for key in range(rows * cols):
        r, c = divmod(key, cols)
        kind = kinds.get(key, "other")
        ax.add_patch(Circle(((c + 0.5) * cell_w, (r + 0.5) * cell_h), radius if kind != "other" else radius / 2,
                            facecolor=_rgb(kind), edgecolor="none", antialiased=False, zorder=4))
    ax.add_patch(Rectangle((centre[1] * node_w, centre[0] * node_h), node_w, node_h, fill=False,
                           edgecolor=_rgb("centre"), linewidth=1.5, zorder=3.5))
    ax.add_patch(Circle((cx, cy), min(max(2.0, 0.3 * min(node_w, node_h)), 10.0), facecolor=_rgb("centre"),
                        edgecolor="black", linewidth=0.5, zorder=6))
    _caption(fig, title, ("centre", "neighbour", "dilated"))
    fig.savefig(path)
    return path


def _caption(fig, title: str, legend: Sequence[str]) -> None:
    top = 1 - 4 / (CANVAS + TITLE)
    fig.text(0.01, top, title, fontsize=8, va="top")
    x = 0.01
    for name in legend:
        fig.text(x, top - 22 / (CANVAS + TITLE), "\u25cf " + LABELS[name], color=_rgb(name), fontsize=8, va="top",
                 bbox=dict(facecolor="black", edgecolor="none", pad=1))
        x += 0.08 + 0.011 * len(LABELS[name])


def draw_cam(image: np.ndarray, cam: np.ndarray, path: str, title: str) -> str:
    """The Grad-CAM map over the image (jet, bicubic-upsampled, half transparent); written as a PNG."""
    fig, ax = _figure(image)
    ax.imshow(cam, extent=(0, CANVAS, CANVAS, 0), cmap="jet", alpha=0.5, interpolation="bicubic", vmin=0, vmax=1)
    _caption(fig, title, ())
    fig.savefig(path)
    return path


def visualize(net: nn.Cell, image: np.ndarray, display: np.ndarray, blocks: Sequence[int], out_dir: str,
              class_names: Sequence[str], node: Optional[Tuple[int, int]] = None,
              target: Optional[int] = None) -> dict:
    """Write ``block<NN>_neighbours.png`` and ``block<NN>_gradcam.png`` for each chosen block (1-based
    numbers of ``net.graphers()``) and ``summary.json``; returns the summary.

    ``image``: the model input (C, H, W) after the evaluation transform; ``display``: the same pixels as
    an RGB image in [0, 1] (H, W, 3)."""
    graphers = [grapher for _, grapher in net.graphers()]
    for b in blocks:
        if not 1 <= b <= len(graphers):
            raise DeployError(f"block {b} does not exist: the model has blocks 1..{len(graphers)}")
    if node is not None:
        first = graphers[0].grid
        if not (0 <= node[0] < first[0] and 0 <= node[1] < first[1]):
            raise DeployError(f"--node {node[0]} {node[1]} is outside the first block's {first[0]}x{first[1]} node "
                              f"grid (rows and columns count from 0)")
    names = {b: f"block{b:02d}" for b in blocks}
    planned = [os.path.join(out_dir, f"{names[b]}_{kind}.png") for b in blocks for kind in ("neighbours", "gradcam")]
    taken = [p for p in planned + [os.path.join(out_dir, "summary.json")] if os.path.exists(p)]
    if taken:
        raise DeployError(f"{taken[0]!r} already exists; nothing was written: choose another --out folder")
    os.makedirs(out_dir, exist_ok=True)
    chosen = [b - 1 for b in blocks]
    seen = capture(net, Tensor(image[None].astype(np.float32)), chosen, target)
    probs = np.exp(seen["logits"] - seen["logits"].max())
    probs /= probs.sum()
    target = seen["target"]
    name = class_names[target]
    label = f"class {target}" + (f" ({name})" if name != f"class {target}" else "") + f", p = {probs[target]:.1%}"
    summary = {"predicted": int(np.argmax(probs)), "target": target, "target_name": class_names[target],
               "probability": float(probs[target]), "blocks": {}}
    for b, index in zip(blocks, chosen):
        grapher = graphers[index]
        cam = grad_cam(seen["activations"][index], seen["gradients"][index])
        rows, cols = grapher.grid
        if node is None:
            centre = divmod(int(np.argmax(cam)), cols)
        else:
            first = graphers[0].grid
            centre = (node[0] * rows // first[0], node[1] * cols // first[1])
        graph = grapher.neighbours(seen["inputs"][index]).asnumpy()[0]
        cells = neighbour_cells(grapher, graph[centre[0] * cols + centre[1]])
        k, dilation = getattr(grapher.graph_spec, "k", None), getattr(grapher.graph_spec, "dilation", None)
        detail = f"k={k}, d={dilation}" if k else f"{len(cells)} neighbours (similarity threshold)"
        draw_neighbours(display, grapher, centre, cells, os.path.join(out_dir, f"{names[b]}_neighbours.png"),
                        f"block {b}: {rows}x{cols} nodes, node {centre} and its neighbours ({detail})")
        draw_cam(display, cam, os.path.join(out_dir, f"{names[b]}_gradcam.png"),
                 f"block {b}: Grad-CAM for {label}")
        summary["blocks"][str(b)] = {"grid": [rows, cols], "key_grid": list(key_grid(grapher)),
                                     "centre": list(centre), "k": k, "dilation": dilation,
                                     "neighbours": [{"key": key, "kind": kind} for key, kind in cells],
                                     "cam_max_node": list(divmod(int(np.argmax(cam)), cols))}
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    return summary
