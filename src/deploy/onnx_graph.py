"""Rewrites of the ONNX graph MindSpore's converter writes into the form onnxruntime runs fastest, computing
the same function.

MindSpore 2.10's converter has no Erf, so the ONNX formulation writes GELU's erf from elementary operators
(``models.layers.activation.erf_by_formula``): about 20 element-wise nodes per GELU, which were most of an
ONNX file's time in onnxruntime (docs/performance.md, "Deployment"). Each is replaced here by one ``Erf``
node (ONNX opset 9 and later), which onnxruntime fuses with the rest of the GELU (x / sqrt 2, + 1, · x, · 0.5)
into its own kernel.
"""
from typing import Dict, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _constant(name: str, producer: Dict[str, onnx.NodeProto], initializers: Dict[str, np.ndarray]
              ) -> Optional[np.ndarray]:
    """The value of ``name`` if it is an initializer or a Constant (through Casts), else None."""
    node = producer.get(name)
    while node is not None and node.op_type == "Cast":
        name = node.input[0]
        node = producer.get(name)
    if name in initializers:
        return initializers[name]
    if node is None or node.op_type != "Constant":
        return None
    return numpy_helper.to_array(node.attribute[0].t)


def _reaches(name: str, target: str, producer: Dict[str, onnx.NodeProto], op_type: str) -> bool:
    """Whether an ``op_type`` node of input ``target`` lies upstream of ``name``."""
    seen, stack = set(), [name]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == op_type and node.input[0] == target:
            return True
        stack.extend(node.input)
    return False


def erf_from_formula(model: onnx.ModelProto) -> int:
    """Replace in place every erf written by formula, Where(z < 0, -y, y) with y computed from Abs(z), by
    Erf(z), and drop the nodes left unused; returns how many were replaced."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    replaced = 0
    for index, node in enumerate(graph.node):
        if node.op_type != "Where":
            continue
        less, negated = producer.get(node.input[0]), producer.get(node.input[1])
        if (less is None or negated is None or less.op_type != "Less" or negated.op_type != "Neg"
                or negated.input[0] != node.input[2]):
            continue
        zero = _constant(less.input[1], producer, initializers)
        z = less.input[0]
        if (zero is None or zero.size != 1 or float(zero.reshape(())) != 0.0
                or not _reaches(node.input[2], z, producer, "Abs")):
            continue
        graph.node[index].CopyFrom(helper.make_node("Erf", [z], list(node.output), name=node.name + "_erf"))
        replaced += 1
    if replaced:
        _drop_unused(graph)
    return replaced


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove the nodes none of whose outputs is read (by a kept node or as a graph output), and the
    initializers no kept node reads."""
    needed = {out.name for out in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def optimize_onnx_file(path: str) -> int:
    """Rewrite the ONNX file at ``path`` in place (the caller's temporary file); returns the erfs replaced."""
    model = onnx.load(path)
    replaced = erf_from_formula(model)
    if replaced:
        onnx.checker.check_model(model)
        onnx.save(model, path)
    return replaced
