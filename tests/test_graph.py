"""The kNN graph, neighbour aggregation, position tables and bicubic resizing against NumPy/PyTorch."""
import shutil

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

from src.models.layers import (BicubicResize, DilatedKnnGraph, DyGraphConv2d, Formulation, bicubic_resize_np, cap_knn,
                               compiled_batch_norm, compiled_gelu, cpu_formulation, formulation, gather_rows,
                               relative_pos_table)
from src.models.layers import KnnGraphSpec, NeighbourMax, knn_specs
from src.models.layers import graph as graph_module


def knn_reference(x, y, k, dilation, relative_pos=None):
    """float64 NumPy kNN: L2-normalise, squared distance, sort, keep every d-th of the k*d nearest."""
    xn = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    yn = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-12)
    dist = (xn ** 2).sum(-1)[:, :, None] - 2 * xn @ yn.transpose(0, 2, 1) + (yn ** 2).sum(-1)[:, None, :]
    if relative_pos is not None:
        dist = dist + relative_pos
    order = np.argsort(dist, axis=-1, kind="stable")
    ranked = np.take_along_axis(dist, order, -1)[:, :, :k * dilation + 1]
    min_gap = np.diff(ranked, axis=-1).min()
    return order[:, :, :k * dilation:dilation], min_gap


def well_separated(shape, k, dilation, seed, relative_pos=None, keys=None):
    """Random features whose ranked distances have no near ties (so float32 must agree exactly)."""
    rng = np.random.default_rng(seed)
    for _ in range(50):
        x = rng.standard_normal(shape).astype(np.float32)
        y = x if keys is None else keys(x)
        ref, gap = knn_reference(x.astype(np.float64), y.astype(np.float64), k, dilation, relative_pos)
        if gap > 1e-4:
            return x, y, ref
    raise AssertionError("could not draw well-separated features")


@pytest.mark.parametrize("k,dilation", [(4, 1), (3, 2), (5, 3)])
def test_knn_matches_numpy(pynative, k, dilation):
    x, y, ref = well_separated((2, 40, 8), k, dilation, seed=k * 10 + dilation)
    idx = DilatedKnnGraph(k, dilation)(Tensor(x), Tensor(y)).asnumpy()
    assert idx.shape == (2, 40, k) and idx.dtype == np.int32
    np.testing.assert_array_equal(idx, ref)
    # with r = 1 a node is its own nearest neighbour
    np.testing.assert_array_equal(idx[:, :, 0], np.broadcast_to(np.arange(40), (2, 40)))


def test_knn_relative_pos_changes_the_graph(pynative):
    rel = -relative_pos_table(16, 6, 1).astype(np.float64)  # a positive bias: the largest effect
    x, y, ref = well_separated((1, 36, 16), 4, 2, seed=3, relative_pos=-rel)
    idx = DilatedKnnGraph(4, 2)(Tensor(x), Tensor(y), Tensor(-rel.astype(np.float32))).asnumpy()
    np.testing.assert_array_equal(idx, ref)
    plain = DilatedKnnGraph(4, 2)(Tensor(x), Tensor(y)).asnumpy()
    assert (plain != idx).any()


def test_pooled_keys_for_reduce_ratio(pynative):
    """r = 2: keys are 2x2 average-pooled nodes; queries are the full-resolution nodes."""
    conv = DyGraphConv2d(8, 16, KnnGraphSpec(3, 2), reduce_ratio=2)
    rng = np.random.default_rng(0)
    for _ in range(50):
        img = rng.standard_normal((2, 8, 8, 8)).astype(np.float32)
        pooled = img.reshape(2, 8, 4, 2, 4, 2).mean((3, 5))
        nodes = img.reshape(2, 8, 64).transpose(0, 2, 1)
        keys = pooled.reshape(2, 8, 16).transpose(0, 2, 1)
        ref, gap = knn_reference(nodes.astype(np.float64), keys.astype(np.float64), 3, 2)
        if gap > 1e-4:
            break
    got_nodes, got_keys, idx = conv.graph(Tensor(img))
    np.testing.assert_allclose(got_keys.asnumpy(), keys, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_nodes.asnumpy(), nodes)
    np.testing.assert_array_equal(idx.asnumpy(), ref)


def test_stochastic_dilation_picks_candidates_in_training_only(pynative):
    x, y, ref = well_separated((1, 30, 8), 3, 3, seed=1)
    graph = DilatedKnnGraph(3, 3, stochastic=True, epsilon=1.0)
    graph.set_train(False)
    np.testing.assert_array_equal(graph(Tensor(x), Tensor(y)).asnumpy(), ref)
    graph.set_train(True)
    idx = graph(Tensor(x), Tensor(y)).asnumpy()
    candidates = knn_reference(x.astype(np.float64), y.astype(np.float64), 9, 1)[0]
    assert idx.shape == (1, 30, 3)
    for i in range(30):  # k distinct members of the k*d candidate set
        assert len(set(idx[0, i])) == 3 and set(idx[0, i]) <= set(candidates[0, i])


def test_cap_knn():
    assert cap_knn(9, 3, 196) == (9, 3)     # untouched at 224
    assert cap_knn(18, 4, 196) == (18, 4)
    assert cap_knn(9, 4, 16) == (9, 1)      # fewer keys than k*d: dilation shrinks first
    assert cap_knn(9, 2, 4) == (4, 1)       # fewer keys than k: k shrinks
    with pytest.raises(ValueError):
        cap_knn(9, 1, 0)


def test_neighbour_gathers(pynative):
    rng = np.random.default_rng(0)
    table = rng.standard_normal((3, 7, 5)).astype(np.float32)
    idx = rng.integers(0, 7, (3, 4, 6)).astype(np.int32)
    expected = np.take_along_axis(table[:, None], idx[..., None], axis=2)  # (3, 4, 6, 5)
    np.testing.assert_array_equal(gather_rows(Tensor(table), Tensor(idx)).asnumpy(), expected)
    for impl in ("cpu", "native"):
        aggregate = NeighbourMax(5, formulation(impl))
        np.testing.assert_array_equal(aggregate(Tensor(table), Tensor(idx)).asnumpy(), expected.max(2))


def test_neighbour_max_gradient_goes_to_the_winner(any_mode):
    """d/d table of sum(w * max_t table[idx]): each w lands on the row that attained the max."""
    rng = np.random.default_rng(1)
    table = rng.standard_normal((2, 6, 4)).astype(np.float32)
    idx = rng.integers(0, 6, (2, 5, 3)).astype(np.int32)
    weights = rng.standard_normal((2, 5, 4)).astype(np.float32)
    gathered = np.take_along_axis(table[:, None], idx[..., None], axis=2)  # (2, 5, 3, 4)
    winner = gathered.argmax(2)
    expected = np.zeros_like(table)
    for b, i, c in np.ndindex(2, 5, 4):
        expected[b, idx[b, i, winner[b, i, c]], c] += weights[b, i, c]

    def weighted_sum(aggregate):
        return lambda t: (aggregate(t, Tensor(idx)) * Tensor(weights)).sum()

    for impl in ("cpu", "native"):
        grad = ms.grad(weighted_sum(NeighbourMax(4, formulation(impl))))(Tensor(table))
        np.testing.assert_allclose(grad.asnumpy(), expected, rtol=1e-6, atol=1e-6)


def test_bicubic_matches_torch(pynative):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 14, 14)).astype(np.float32)
    for out_hw in [(4, 4), (8, 12), (20, 16), (14, 7)]:
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=out_hw, mode="bicubic",
                                              align_corners=False).numpy()
        np.testing.assert_allclose(bicubic_resize_np(x, out_hw), ref, rtol=1e-5, atol=1e-5)
        got = BicubicResize((14, 14), out_hw)(Tensor(x)).asnumpy()
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert BicubicResize((14, 14), (14, 14))(Tensor(x)).asnumpy().tobytes() == x.tobytes()


def test_relative_pos_table_properties():
    table = relative_pos_table(48, 8, 1)[0]
    assert table.shape == (64, 64) and table.dtype == np.float32
    np.testing.assert_allclose(np.diag(table), -1.0, atol=1e-6)  # negated cosine-like similarity
    np.testing.assert_allclose(table, table.T, atol=1e-6)
    assert table.max() <= 1.0 + 1e-6 and table.min() >= -1.0 - 1e-6
    # the pooled-key table is the bicubic resize of the full one along the flattened key index
    reduced = relative_pos_table(48, 8, 2)[0]
    assert reduced.shape == (64, 16)
    np.testing.assert_allclose(reduced[:, 3], 0.59375 * (table[:, 13] + table[:, 14])
                               - 0.09375 * (table[:, 12] + table[:, 15]), atol=1e-6)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="no C++ compiler")
@pytest.mark.parametrize("k,dilation", [(9, 1), (4, 3), (6, 2)])
def test_compiled_selection_equals_topk(any_mode, k, dilation):
    """The CPU selection kernel returns top-k + dilation slicing's indices, stochastic positions too."""
    x, y, ref = well_separated((2, 50, 8), k, dilation, seed=7 * k + dilation)
    graph = DilatedKnnGraph(k, dilation, stochastic=True, epsilon=1.0, form=cpu_formulation())
    assert graph.knn is not None, "the CPU kernel did not compile here"
    graph.set_train(False)
    np.testing.assert_array_equal(graph(Tensor(x), Tensor(y)).asnumpy(), ref)
    graph.set_train(True)  # epsilon 1: random positions among the k*d candidates
    idx = graph(Tensor(x), Tensor(y)).asnumpy()
    candidates = knn_reference(x.astype(np.float64), y.astype(np.float64), k * dilation, 1)[0]
    assert all(set(idx[b, i]) <= set(candidates[b, i]) and len(set(idx[b, i])) == k
               for b in range(2) for i in range(50))


@pytest.mark.parametrize("impl", ["native", "cpu"])
def test_chunked_queries_give_the_one_pass_graph(any_mode, monkeypatch, impl):
    """Above CHUNK_ELEMENTS distances per image the queries go in chunks (here 25 rows: 96 is no multiple),
    each with its rows of the relative-position term, resized chunk by chunk from the 224 table or
    sliced from the whole term: the neighbours of one pass."""
    table = relative_pos_table(16, 8, 2)                  # (1, 64, 16): a stage at its table grid
    num_queries, num_keys = 8 * 12, 4 * 6                 # the stage at another input size
    resize = BicubicResize(table.shape[1:], (num_queries, num_keys))
    term = resize(Tensor(table))
    x, y, ref = well_separated((2, num_queries, 16), 4, 2, seed=5, relative_pos=term.asnumpy().astype(np.float64),
                               keys=lambda v: v.reshape(2, 8, 12, 16)[:, ::2, ::2].reshape(2, num_keys, 16))
    form = formulation(impl)
    one_pass = DilatedKnnGraph(4, 2, form=form, position_resize=resize)(Tensor(x), Tensor(y), Tensor(table))
    np.testing.assert_array_equal(one_pass.asnumpy(), ref)
    monkeypatch.setattr(graph_module, "CHUNK_ELEMENTS", 25 * num_keys)
    assert graph_module.query_chunks(num_queries, num_keys)[-1] == (75, 96)
    for bias in (Tensor(table), term):
        chunked = DilatedKnnGraph(4, 2, form=form, position_resize=resize)(Tensor(x), Tensor(y), bias)
        np.testing.assert_array_equal(chunked.asnumpy(), ref)


def test_resized_rows_equal_the_whole_resize(pynative):
    """The rows a chunk resizes are those of the whole resize, bit for bit (on both axes, or the key axis only)."""
    table = Tensor(relative_pos_table(16, 8, 2))
    for out_hw in [(96, 24), (64, 24)]:
        resize = BicubicResize((64, 16), out_hw)
        whole = resize(table).asnumpy()
        rows = np.concatenate([resize.rows(table, start, min(start + 7, out_hw[0])).asnumpy()
                               for start in range(0, out_hw[0], 7)], axis=1)
        assert rows.tobytes() == whole.tobytes()


@pytest.mark.slow(reason="a pyramid model in two forms")
def test_pyramid_logits_do_not_depend_on_the_knn_formulation(pynative, monkeypatch):
    """A pyramid model (pvig_ti's layout, fewer and narrower blocks) at a size whose relative-position terms
    are resized: the compiled kNN gives the logits of MindSpore's dense kNN in the same CPU formulation,
    and the native formulation with its queries in chunks gives those of one pass, bit for bit."""
    from src.models.pyramid_vig import PyramidVisionGNN
    from tools.calibrate import calibrate, structured_images
    size = (64, 96)
    images = Tensor(structured_images(2, size, seed=2))

    def pyramid(kernel_impl):
        return PyramidVisionGNN((16, 32, 48, 64), (1, 1, 2, 1), knn_specs([9] * 5, [1, 1, 2, 2, 1]), num_classes=5,
                                img_size=size, kernel_impl=kernel_impl)

    native = calibrate(pyramid("native"), structured_images(4, size, seed=1))

    def logits(kernel_impl):
        net = pyramid(kernel_impl)
        ms.load_param_into_net(net, native.parameters_dict(), strict_load=True)
        net.set_train(False)
        return net(images).asnumpy()

    assert cpu_formulation().topk is not None or not shutil.which("g++"), "the CPU kernel did not compile here"
    without_graph_kernels = Formulation(cpu_ops=True, gelu=compiled_gelu(), batch_norm=compiled_batch_norm())
    assert logits(cpu_formulation()).tobytes() == logits(without_graph_kernels).tobytes()
    one_pass = native(images).asnumpy()
    monkeypatch.setattr(graph_module, "CHUNK_ELEMENTS", 1000)  # stage 1: 384 x 24 distances in 10 chunks
    assert graph_module.query_chunks(384, 24)[-1] == (369, 384)
    assert native(images).asnumpy().tobytes() == one_pass.tobytes()
