"""What runs on Ascend: the precision of the O2 graph, read from MindSpore's compiled IR and checked numerically."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

from src.engine.train_step import mixed_precision
from src.models import create_model
from src.models.base import first_and_last_blocks
from tools.ascend_graph import (CASES, DOC_PATH, check_entries, collect, inventory, load_inventory, load_support,
                                problems, render_table, replace_table)

FLOAT32_FUNCTIONS = ("src.models.layers.graph:DilatedKnnGraph.construct",          # distances, top-k, the term
                     "src.models.layers.threshold_graph:SimilarityThresholdGraph.construct",  # SViG similarity
                     "mindspore.nn.loss.loss:CrossEntropyLoss.construct")          # the loss


def case(label):
    return next(c for c in CASES if c[0] == label)


@pytest.fixture(scope="module")
def o2_forward():
    """Nodes of the O2 training forward pass with its loss, compiled for a pyramid model (kNN, pooled keys, resized
    relative-position term) and SViG (similarity threshold), first and last blocks of each stage."""
    return collect([case("pvig"), case("svig")], quick=True, graphs=("forward",))


@pytest.mark.slow(reason="compiles an O2 training step")
def test_o2_keeps_the_graphs_the_loss_and_batchnorm_in_float32(o2_forward):
    """In the compiled O2 graph every input of the kNN (distance matmul, top-k, relative-position term), of the
    SViG similarity, of the loss and of BatchNorm is float32; the rest of the network runs in float16."""
    def floats(node):
        return [d for entry in node["inputs"] if entry for d in entry.split("|") if d.startswith("Float")]

    checked = {name: 0 for name in FLOAT32_FUNCTIONS}
    for node in o2_forward:
        for name in FLOAT32_FUNCTIONS:
            if name in node["frames"]:
                assert set(floats(node)) <= {"Float32"}, (node["case"], node["primitive"], node["frames"][-3:])
                checked[name] += 1
    assert all(checked.values()), checked
    topk = [n for n in o2_forward if n["primitive"] == "TopK"]
    assert topk and all(n["inputs"][0] == "Float32" for n in topk)
    norms = [n for n in o2_forward if n["primitive"] == "BatchNorm"]
    assert norms and all(set(floats(n)) == {"Float32"} for n in norms)
    convs = [n for n in o2_forward if n["primitive"] == "Conv2D"]
    assert convs and all(set(floats(n)) == {"Float16"} for n in convs)  # O2 is in effect


class GraphProbe(nn.Cell):
    """The input features of every Grapher's graph (after its fc1) and the graph built from them, computed as
    inside the network, at the network's precision."""

    def __init__(self, graphers):
        super().__init__()
        self.graphers = nn.CellList(graphers)

    def construct(self, *inputs):
        out = ()
        for i in range(len(self.graphers)):
            grapher = self.graphers[i]
            features = grapher.fc1(inputs[i])
            out += ((features, grapher.graph_conv.graph(features, grapher.position_table())[2]),)
        return out


@pytest.mark.slow(reason="O2 and float32 graphs of every family")
@pytest.mark.parametrize("family", ["vig", "pvig", "svig", "graphconvnet", "pgraphconvnet"])
def test_o2_graphs_equal_the_float32_graphs(graph_mode, family):
    """Under O2 each Grapher's graph (neighbour indices; SViG: adjacency) of a family's native form equals the one
    float32 builds from the same features: the whole graph computation is float32, the table included."""
    _, name, size, _ = case(family)
    size = min(size, 64)

    def model():
        ms.set_seed(0)
        return first_and_last_blocks(create_model(name, num_classes=10, img_size=size, kernel_impl="native"))

    graphers = [g for _, g in mixed_precision(model(), "O2")._backbone.graphers()]
    reference = [g for _, g in model().graphers()]
    rng = np.random.default_rng(1)
    inputs = [Tensor(rng.standard_normal((2, g.channels) + g.grid).astype(np.float32)) for g in graphers]
    probe = GraphProbe(graphers)
    probe.set_train(False)
    for (features, graph), ref in zip(probe(*inputs), reference):
        assert features.dtype == ms.float16
        expected = ref.graph_conv.graph(features.astype(ms.float32), ref.position_table())[2]
        np.testing.assert_array_equal(graph.asnumpy(), expected.asnumpy())


# ----------------------------------------------------------------------------- the documented support of the graphs

def test_the_support_list_quotes_the_installed_mindspore():
    """Every cited API exists in the installed MindSpore, with the quoted Supported Platforms line and notes."""
    assert check_entries(load_support()) == []
    doctored = {"primitives": {"TopK": {"api": "mindspore.ops.TopK", "platforms": ["Ascend"],
                                        "notes": ["Ascend: float64."]}}}
    assert len(check_entries(doctored)) == 2


def test_every_primitive_of_the_compiled_graphs_is_documented_for_its_device(o2_forward):
    """The inventory of the last full compile (train and inference graphs: Ascend 910; exported graphs: Ascend 310
    through MindSpore Lite) and the O2 graphs compiled here hold only primitives the support list documents."""
    support = load_support()
    assert problems(load_inventory(), support) == []
    compiled_here = inventory([dict(node, graph="train") for node in o2_forward], [case("pvig"), case("svig")])
    assert problems(compiled_here, support) == []
    assert set(compiled_here["primitives"]) <= set(load_inventory()["primitives"])
    # what the check refuses: an undocumented primitive, and Select (no Lite Ascend entry) in an exported graph
    refused = problems({"primitives": {"Range": {"train": {"cases": ["vig"]}},
                                       "Select": {"train": {"cases": ["svig"]}, "export": {"cases": ["svig"]}}}},
                       support)
    assert len(refused) == 2 and "Range" in refused[0] and "export" in refused[1]


def test_docs_table_is_the_generated_one():
    with open(DOC_PATH, encoding="utf-8") as handle:
        text = handle.read()
    assert replace_table(text, render_table(load_inventory(), load_support())) == text, \
        "docs/ascend.md differs from the table of docs/ascend_graphs.json: run python -m tools.ascend_graph --write"


@pytest.mark.slow(reason="compiles the train, inference and export graphs of every case")
def test_the_compiled_graphs_are_the_inventory():
    """Every case's train, infer and export graphs compiled now (first and last block of each stage) hold the
    primitives, dtypes and functions of the checked-in inventory (python -m pytest -m slow; about 4 minutes on two
    quiet cores)."""
    assert inventory(collect(CASES, quick=True), CASES)["primitives"] == load_inventory()["primitives"]
