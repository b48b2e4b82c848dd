"""SViG and GraphConvNet: the threshold graph against its rule, tiny models in both modes, fidelity of
converted official-format checkpoints at full size, export, and graph options reaching the model.

The official function is ``tools/torch_reference.py`` (``build_svig``: the official SViG forward with
its edge list and scatter max; ``build_graphconvnet``), checked bit for bit against the official code.
"""
import math
import os
import shutil
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

torch = pytest.importorskip("torch")

from tools import torch_reference as ref  # noqa: E402
from support import (ROOT, assert_evaluated_as_officially, assert_trains_in_this_mode, fit_prototype_head,  # noqa: E402
                     relative_error)
from src.app.builders import model_from_config  # noqa: E402
from src.app.config import ConfigError, load_config  # noqa: E402
from src.deploy.export import export_network  # noqa: E402
from src.models import ModelError, PyramidVisionGNN, VisionGNN, create_model  # noqa: E402
from src.models.graphconvnet import GraphConvBlock, pyramid_block  # noqa: E402
from src.models.layers import (NATIVE, DilatedKnnGraph, Grapher, KnnGraphSpec, MaskedNeighbourMax,  # noqa: E402
                               NeighbourMax, SimilarityThresholdGraph, ThresholdGraphSpec, cpu_formulation,
                               knn_specs, probability_to_z, threshold_probabilities)
from src.models.layers.gcn import EdgeConv2d  # noqa: E402
from src.weights.checkpoint import check_fits, load_model_weights  # noqa: E402
from src.weights.convert import convert_official_checkpoint, to_mindspore_names  # noqa: E402
from tools.calibrate import calibrate, structured_images  # noqa: E402

MARGIN = 1e-5   # a z-score (SViG) or candidate distance (kNN) this close to its decision may flip in float32
RTOL = 1e-5     # per node: max |ours - official| / max |official|


# ----------------------------------------------------------------------------- the threshold graph

def z_scores(x):
    """float64 rule: z-scored similarity of L2-normalised nodes over each image's N x N matrix (ddof 1)."""
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    s = 2 * x @ x.transpose(0, 2, 1) - 2
    return (s - s.mean((1, 2), keepdims=True)) / s.std((1, 2), ddof=1, keepdims=True)


def separated_features(shape, z, seed):
    """Random nodes whose z-scores all stay clear of the threshold z (float32 must then agree exactly)."""
    rng = np.random.default_rng(seed)
    for _ in range(100):
        x = rng.standard_normal(shape).astype(np.float32)
        if np.abs(z_scores(x.astype(np.float64)) - z).min() > 1e-4:
            return x
    raise AssertionError("could not draw features clear of the threshold")


def masked_max_rule(x, mask):
    """NumPy: max over the node itself and its neighbours, and which node wins per channel."""
    out, winner = np.empty_like(x), np.empty(x.shape, np.int64)
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            members = [i] + list(np.flatnonzero(mask[b, i]))
            out[b, i] = x[b, members].max(0)
            winner[b, i] = np.asarray(members)[x[b, members].argmax(0)]
    return out, winner


def test_threshold_schedule_and_z():
    probs = threshold_probabilities(0.89, 0.03, 12)
    assert probs[0] == 0.89 and probs[1] == 0.89 - 0.03 and probs[2] == 0.89 - 0.03 - 0.03  # repeated subtraction
    assert probs[-1] == pytest.approx(0.56)
    from scipy.special import ndtri
    for p in (0.01, 0.5, 0.86, 0.89, 0.96):
        assert probability_to_z(p) == pytest.approx(float(ndtri(p)), abs=1e-12)
    with pytest.warns(UserWarning, match="every pair of nodes is an edge"):
        assert probability_to_z(0.0) == -math.inf
    with pytest.warns(UserWarning, match="no edges"):
        assert probability_to_z(1.0) == math.inf


@pytest.mark.parametrize("probability", [0.6, 0.85])
def test_threshold_graph_matches_the_rule(pynative, probability):
    z = probability_to_z(probability)
    x = separated_features((2, 30, 8), z, seed=int(probability * 100))
    x[1] *= 3.0  # another scale: z-scoring is per image and scale-free
    want = z_scores(x.astype(np.float64)) > z
    got = SimilarityThresholdGraph(probability)(Tensor(x), Tensor(x)).asnumpy()
    np.testing.assert_array_equal(got, want)
    degrees = want.sum(-1)
    assert len(np.unique(degrees)) > 3 and (degrees[0] != degrees[1]).any()  # degrees vary per node and image
    assert want.diagonal(axis1=1, axis2=2)[degrees > 0].all()  # a node with an edge is its own neighbour


@pytest.mark.parametrize("impl", ["native", "cpu"])
def test_masked_max_and_its_gradient_follow_the_edge_list(any_mode, impl):
    """Both formulations: the chunked static-shape one and the compiled CPU kernel (when it builds)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 13, 40)).astype(np.float32)  # 40 channels: two blocks of the kernel's backward
    mask = rng.random((2, 13, 13)) < 0.3
    mask[0, 4] = False  # an isolated node: its own value, as max(x_i - x_i) = 0 says
    want, winner = masked_max_rule(x, mask)
    weights = rng.standard_normal((2, 13, 40)).astype(np.float32)
    grad_want = np.zeros_like(x)
    for b, i, c in np.ndindex(x.shape):
        grad_want[b, winner[b, i, c], c] += weights[b, i, c]

    def check(chunk):
        net = MaskedNeighbourMax(13, 40, chunk, form=cpu_formulation() if impl == "cpu" else NATIVE)
        assert (net.kernel is not None) == (impl == "cpu" and bool(shutil.which("g++") or shutil.which("c++")))
        np.testing.assert_array_equal(net(Tensor(x), Tensor(mask)).asnumpy(), want)

        def weighted_sum(v, m):
            return (net(v, m) * Tensor(weights)).sum()

        grad = ms.grad(weighted_sum)(Tensor(x), Tensor(mask))
        np.testing.assert_allclose(grad.asnumpy(), grad_want, rtol=0, atol=1e-6)

    check(0)  # one chunk
    check(4)  # chunks of 4 key nodes, the last one shorter
    half = MaskedNeighbourMax(13, 40, form=cpu_formulation() if impl == "cpu" else NATIVE)(
        Tensor(x.astype(np.float16)), Tensor(mask))
    assert half.dtype == ms.float16  # the aggregate keeps the input dtype
    np.testing.assert_array_equal(half.asnumpy(), masked_max_rule(x.astype(np.float16), mask)[0])
    np.testing.assert_array_equal(want[0, 4], x[0, 4])


@pytest.mark.parametrize("probability, edges", [(0.0, "all"), (-0.05, "all"), (1.0, "none"), (1.02, "none")])
def test_probabilities_out_of_range(pynative, probability, edges):
    x = np.random.default_rng(1).standard_normal((1, 9, 4)).astype(np.float32)
    with pytest.warns(UserWarning):
        graph = SimilarityThresholdGraph(probability)
    mask = graph(Tensor(x), Tensor(x)).asnumpy()
    assert mask.all() if edges == "all" else not mask.any()
    with torch.no_grad():  # the official rule gives the same graph
        official = ref.threshold_adjacency(torch.from_numpy(x.transpose(0, 2, 1).reshape(1, 4, 3, 3)), probability)
    np.testing.assert_array_equal(official.numpy(), mask)
    agg = MaskedNeighbourMax(9, 4)(Tensor(x), Tensor(mask)).asnumpy()
    np.testing.assert_array_equal(agg, masked_max_rule(x, mask)[0])
    if edges == "none":
        np.testing.assert_array_equal(agg, x)  # every node aggregates only itself


def test_threshold_graph_refusals():
    with pytest.raises(ModelError, match="use conv 'mr', not 'edge'"):
        create_model("svig_ti_224_gelu", conv="edge")
    with pytest.raises(ValueError, match="no relative-position term"):
        Grapher(16, ThresholdGraphSpec(0.8), (4, 4), relative_pos=True)
    with pytest.raises(ValueError, match="use reduce_ratio 1, not 2"):
        Grapher(16, ThresholdGraphSpec(0.8), (4, 4), reduce_ratio=2)
    with pytest.raises(ModelError, match="the kNN option 'stochastic' does not apply"):
        create_model("svig_ti_224_gelu", stochastic=True)


def test_graph_specs_build_their_cells_under_the_same_names():
    """The spec alone decides the graph: kNN indices or a threshold adjacency, each with its aggregation, and
    the parameter names are the same (both are the official ``graph_conv.gconv.nn``)."""
    knn = Grapher(16, KnnGraphSpec(20, 2, stochastic=True, epsilon=0.3), (4, 4))
    threshold = Grapher(16, ThresholdGraphSpec(0.8), (4, 4))
    assert knn.graph_spec == KnnGraphSpec(16, 1, stochastic=True, epsilon=0.3)  # fitted to the 16 keys
    assert isinstance(knn.graph_conv.graph_builder, DilatedKnnGraph) and knn.graph_conv.graph_builder.k == 16
    assert isinstance(knn.graph_conv.gconv.aggregate, NeighbourMax)
    assert threshold.graph_spec == ThresholdGraphSpec(0.8)
    assert isinstance(threshold.graph_conv.graph_builder, SimilarityThresholdGraph)
    assert isinstance(threshold.graph_conv.gconv.aggregate, MaskedNeighbourMax)
    assert [p.name for p in knn.get_parameters()] == [p.name for p in threshold.get_parameters()]


# ----------------------------------------------------------------------------- tiny models

def tiny_svig(**kwargs):
    return VisionGNN(32, [ThresholdGraphSpec(0.8), ThresholdGraphSpec(0.6)], num_classes=5, img_size=64, **kwargs)


def tiny_graphconvnet(**kwargs):
    return VisionGNN(32, knn_specs([4, 6], [1, 2]), num_classes=5, img_size=64, block=GraphConvBlock, **kwargs)


def tiny_pgraphconvnet(**kwargs):
    return PyramidVisionGNN((16, 32, 32, 48), (1, 1, 1, 1), knn_specs([4] * 4, [1] * 4), num_classes=5, img_size=64,
                            block=pyramid_block, **kwargs)


TINY = {"svig": tiny_svig, "graphconvnet": tiny_graphconvnet, "pgraphconvnet": tiny_pgraphconvnet}


@pytest.mark.slow(reason="forward and backward compiled in both modes, every family")
@pytest.mark.parametrize("family", ["svig", "graphconvnet"])
def test_forward_backward_both_modes(any_mode, family):
    net = TINY[family](drop_path_rate=0.1)
    named, out = assert_trains_in_this_mode(net, Tensor(structured_images(2, 64, seed=0)),
                                            Tensor(np.array([1, 3], np.int32)))
    graph_conv = next(n for n in named if n.endswith("graph_conv.gconv.nn.0.weight"))
    assert np.abs(named[graph_conv].asnumpy()).sum() > 0
    assert out.shape == (2, 5)


@pytest.mark.parametrize("family", ["pgraphconvnet", "vig"])
def test_batch_norms_fold_into_their_convolutions(pynative, family):
    """What the CPU-form MINDIR exports: each BatchNorm right after a convolution (stem, downsampling, graph
    conv, fc1/fc2, FFN, bottleneck, head) folded into it, GraphConvNet's BatchNorm after its block's sum kept,
    and the same function in inference."""
    from src.models.layers import fold_batch_norms
    net = TINY[family]() if family in TINY else create_model("vig_nano_gelu", num_classes=5, img_size=64)
    net = calibrate(net, structured_images(4, 64, seed=1))
    net.set_train(False)
    x = Tensor(structured_images(2, 64, seed=2))
    before = net(x).asnumpy()
    norms = sum(isinstance(c, nn.BatchNorm2d) for _, c in net.cells_and_names())
    kept = sum(isinstance(c, GraphConvBlock) for _, c in net.cells_and_names())
    assert fold_batch_norms(net) == norms - kept > 0
    assert sum(isinstance(c, nn.BatchNorm2d) for _, c in net.cells_and_names()) == kept
    after = net(x).asnumpy()
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-5 * np.abs(before).max())
    assert (after.argmax(1) == before.argmax(1)).all()


@pytest.mark.slow(reason="export and reload of every family")
@pytest.mark.parametrize("family", ["svig", "pgraphconvnet"])
def test_mindir_export_reloads_with_the_same_outputs(graph_mode, tmp_path, family):
    net = calibrate(TINY[family](), structured_images(4, 64, seed=1))
    path = export_network(net, "MINDIR", str(tmp_path / family), batch_size=2, image_size=64)
    x = Tensor(structured_images(2, 64, seed=2))
    np.testing.assert_array_equal(nn.GraphCell(ms.load(path))(x).asnumpy(), net(x).asnumpy())


# ----------------------------------------------------------------------------- fidelity at full size

def block_graphers(model):
    """Our Grapher of each backbone entry (None for a Downsample), wherever the family's block holds it."""
    return [next((c for _, c in entry.cells_and_names() if isinstance(c, Grapher)), None) for entry in model.backbone]


def spread(ok, shape, radius):
    """Nodes (B, N) whose whole (2r+1)^2 spatial neighbourhood is ``ok``: a 3x3 conv after the graph part
    (GraphConvNet's bottleneck) carries a node's legitimately different output to its neighbours."""
    grid = ok.reshape(ok.shape[0], *shape)
    out = grid.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = np.ones_like(grid)
            h, w = shape
            shifted[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
                grid[:, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
            out &= shifted
    return out.reshape(ok.shape)


def compare_teacher_forced(official, ours, images, radius=0):
    """Stem, every block (its graph where no decision is a float32 near-tie, its output per node) and head.

    Nodes whose graph legitimately differs (a near-tie) are left out of the output comparison, together
    with their spatial neighbours up to ``radius`` (1 for GraphConvNet).
    """
    to_ms = lambda t: Tensor(t.detach().numpy())  # noqa: E731
    graphers = block_graphers(ours)
    with torch.no_grad():
        x = official.forward_stem(images)
        assert relative_error(ours.embed(to_ms(images)).asnumpy(), x.numpy()) < RTOL, "stem"
        for i in range(len(official.backbone)):
            expected = official.forward_entry(i, x).numpy()
            got = ours.backbone[i](to_ms(x)).asnumpy()
            same = np.ones((got.shape[0], got.shape[2] * got.shape[3]), bool)  # (B, N): nodes with the same graph
            if graphers[i] is not None:
                want = official.neighbours(i, x).numpy()
                have = graphers[i].neighbours(to_ms(x)).asnumpy()
                clear = official.grapher(i).neighbour_margin(x).numpy() > MARGIN
                assert clear.mean() > 0.9, f"block {i}: test input too tied to be useful"
                np.testing.assert_array_equal(have[clear], want[clear], err_msg=f"block {i} graph")
                same = spread((have == want).reshape(want.shape[:2] + (-1,)).all(-1), got.shape[2:], radius)
            per_node = np.abs(got - expected).reshape(got.shape[:2] + (-1,)).max(1) / np.abs(expected).max()
            assert per_node[same].max() < RTOL, f"entry {i}"
            x = torch.from_numpy(expected)
        logits = official.forward_head(x).numpy()
        assert relative_error(ours.forward_head(to_ms(x)).asnumpy(), logits) < RTOL, "head"


def perturbed(state, seed):
    """Another copy of the weights (BN statistics kept): every weight moved a little, so that converting the
    wrong one of a file's two state dicts shows."""
    gen = torch.Generator().manual_seed(seed)
    return {k: (v + 0.01 * torch.randn(v.shape, generator=gen) * v.abs().mean()
                if v.is_floating_point() and "running_" not in k else v)
            for k, v in state.items()}


@pytest.mark.slow(reason="full-size SViG at 224 against the PyTorch reference")
def test_svig_training_checkpoint_converts_and_computes_the_official_function(pynative, tmp_path):
    """An official-format SViG file (plain and EMA state dicts, timm's training args) at 224."""
    images = ref.structured_images(2, 224, seed=42)
    official = ref.calibrate_(ref.build_svig(0.89, 0.03), ref.structured_images(4, 224, seed=0), steps=2)
    official = fit_prototype_head(official, images)
    ema = perturbed(official.state_dict(), seed=1)
    path = tmp_path / "_0_89_0_03_checkpoint-304.pth.tar"
    torch.save({"epoch": 304, "arch": "vig_ti_224_gelu", "state_dict": perturbed(official.state_dict(), seed=2),
                "state_dict_ema": ema, "args": Namespace(start_thresh=0.89, dec=0.03, lr=2e-3), "version": 2}, path)
    ckpt = str(tmp_path / "svig.ckpt")
    info = convert_official_checkpoint(str(path), ckpt, "svig_ti_224_gelu", use_ema=True)
    assert (info["tensors"], info["num_classes"]) == (399, 1000)
    assert info["graph_args"] == {"start_thresh": 0.89, "dec": 0.03}
    assert_evaluated_as_officially(ckpt, "svig_ti_224_gelu", "vig")
    official.load_state_dict(ema)  # the EMA weights are the ones converted
    ours = create_model("svig_ti_224_gelu", kernel_impl="cpu")
    load_model_weights(ours, ckpt, arch="svig_ti_224_gelu")
    ours.set_train(False)
    compare_teacher_forced(official, ours, images)
    with torch.no_grad():  # end to end, free running: the official predictions
        expected = official(images).numpy().argmax(1)
    np.testing.assert_array_equal(ours(Tensor(images.numpy())).asnumpy().argmax(1), expected)


@pytest.mark.slow(reason="full-size GraphConvNet at 224 against the PyTorch reference")
def test_graphconvnet_checkpoint_converts_and_computes_the_official_function(pynative, tmp_path):
    images = ref.structured_images(2, 224, seed=42)
    official = ref.calibrate_(ref.build_graphconvnet("graphconvnet_ti"), ref.structured_images(4, 224, seed=0),
                              steps=2)
    official = fit_prototype_head(official, images)
    path = tmp_path / "graphconvnet_ti.pth"
    torch.save(official.state_dict(), path)
    info = convert_official_checkpoint(str(path), str(tmp_path / "gcn.ckpt"), "graphconvnet_ti")
    assert (info["tensors"], info["num_classes"]) == (627, 1000) and "graph_args" not in info
    assert_evaluated_as_officially(str(tmp_path / "gcn.ckpt"), "graphconvnet_ti", "graphconvnet")
    ours = create_model("graphconvnet_ti", kernel_impl="cpu")
    load_model_weights(ours, str(tmp_path / "gcn.ckpt"), arch="graphconvnet_ti")
    ours.set_train(False)
    compare_teacher_forced(official, ours, images, radius=1)
    with torch.no_grad():
        expected = official(images).numpy().argmax(1)
    np.testing.assert_array_equal(expected, np.arange(2))
    np.testing.assert_array_equal(ours(Tensor(images.numpy())).asnumpy().argmax(1), expected)


def test_tiny_pyramid_graphconvnet_computes_the_official_function(pynative):
    """The pyramid block layout (each block one level deeper) at 64x64, relative-position tables resized."""
    official = ref.PyramidViG((16, 32, 32, 48), (1, 1, 1, 1), [4] * 4, [1, 1, 1, 1], num_classes=5,
                              block=ref._pyramid_graphconv_block)
    official = ref.calibrate_(official, ref.structured_images(4, 64, seed=3), steps=2)
    ours = tiny_pgraphconvnet()
    weights = to_mindspore_names({k: v.numpy() for k, v in official.state_dict().items()})
    check_fits(ours, weights, "reference")
    ms.load_param_into_net(ours, {n: ms.Parameter(Tensor(v), name=n) for n, v in weights.items()}, strict_load=True)
    ours.set_train(False)
    compare_teacher_forced(official, ours, ref.structured_images(2, 64, seed=5), radius=1)


@pytest.mark.parametrize("name", ["pgraphconvnet_ti", "graphconvnet_s", "pgraphconvnet_s"])
def test_every_graphconvnet_state_dict_converts(tmp_path, name):
    official = ref.build_graphconvnet(name, num_classes=10)
    torch.save(official.state_dict(), tmp_path / "w.pth")
    info = convert_official_checkpoint(str(tmp_path / "w.pth"), str(tmp_path / "w.ckpt"), name)
    assert (info["tensors"], info["num_classes"]) == (sum("num_batches" not in k for k in official.state_dict()), 10)
    assert_evaluated_as_officially(str(tmp_path / "w.ckpt"), name, "graphconvnet")


def test_converter_reports_the_training_thresholds(tmp_path):
    state = ref.build_svig(num_classes=3).state_dict()
    torch.save({"state_dict": state, "state_dict_ema": state, "args": Namespace(start_thresh=0.86, dec=0.03)},
               tmp_path / "_0_86_0_03_checkpoint-306.pth.tar")
    done = subprocess.run([sys.executable, "convert_checkpoint.py", "--arch", "svig_ti_224_gelu", "--src",
                           str(tmp_path / "_0_86_0_03_checkpoint-306.pth.tar"), "--dst", str(tmp_path / "s.ckpt")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "trained with --start_thresh 0.86 --dec 0.03: evaluate it with the same" in done.stdout


# ----------------------------------------------------------------------------- graph options from the config

def test_graph_options_reach_the_built_model():
    cfg = load_config(["--config", os.path.join(ROOT, "configs/pgraphconvnet_ti.yaml"), "--conv", "edge", "--k", "5",
                       "--use_stochastic", "true", "--epsilon", "0.3"])
    graphers = [g for g in block_graphers(model_from_config(cfg, impl="native")) if g is not None]
    specs = [g.graph_spec for g in graphers]
    assert [s.k for s in specs] == [5] * 12 and [s.dilation for s in specs] == [1] * 4 + [2] * 4 + [3] * 4
    assert all(isinstance(g.graph_conv.gconv, EdgeConv2d) for g in graphers)
    assert all(g.graph_conv.graph_builder.stochastic and g.graph_conv.graph_builder.epsilon == 0.3
               for g in graphers)
    iso = block_graphers(model_from_config(load_config(["--arch", "vig_ti_224_gelu", "--k", "6"]), impl="native"))
    assert [g.graph_spec.k for g in iso] == [6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 12]  # int(float32 linspace(6, 12, 12))
    cfg = load_config(["--config", os.path.join(ROOT, "configs/svig_ti_224_gelu.yaml"), "--start-thresh", "0.93"])
    thresholds = [g.graph_spec.probability for g in block_graphers(model_from_config(cfg, impl="native"))]
    assert thresholds == threshold_probabilities(0.93, 0.03, 12)
    with pytest.raises(ConfigError, match="svig_ti_224_gelu builds a similarity-threshold graph, which does not "
                                          "take k"):
        model_from_config(load_config(["--arch", "svig_ti_224_gelu", "--k", "9"]))
    with pytest.raises(ConfigError, match="graphconvnet_ti builds a kNN graph, which does not take start_thresh"):
        model_from_config(load_config(["--arch", "graphconvnet_ti", "--start_thresh", "0.9"]))
