"""Gradient accumulation: N micro-batches of b make the same update as one batch of N * b."""
import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor, nn

from src.engine.optim import create_optimizer
from src.engine.train_step import build_train_step, create_loss_scale


def _net():
    """No BatchNorm: its batch statistics are the one thing that depends on the micro-batch size."""
    ms.set_seed(3)
    return nn.SequentialCell([nn.Dense(6, 8), nn.GELU(approximate=False), nn.Dense(8, 3)])


def _step(accumulation, scale=1024.0):
    net = _net()
    optimizer = create_optimizer(net.trainable_params(), "adamw", np.full(4, 0.05, np.float32), weight_decay=0.05)
    step = build_train_step(net, optimizer, "O0", nn.CrossEntropyLoss(), create_loss_scale(True, scale, 2),
                            clip_norm=0.05, ema_decay=0.9, accumulation=accumulation)
    return net, step


def _state(step):
    return {p.name: p.asnumpy().copy() for p in step.get_parameters() if not p.name.startswith("accumulated.")}


@pytest.mark.parametrize("accumulation", [2, 3])
def test_micro_batches_make_one_update(graph_mode, accumulation):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 4 * accumulation, 6)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 4 * accumulation)).astype(np.int32)
    _, whole = _step(1)
    _, micro = _step(accumulation)
    for update in range(2):  # the second update checks that the sums restart from zero
        whole(Tensor(images[update]), Tensor(labels[update]))
        for part in np.split(np.arange(4 * accumulation), accumulation):
            loss, overflow, _ = micro(Tensor(images[update][part]), Tensor(labels[update][part]))
            assert not bool(overflow.asnumpy())
        expected, got = _state(whole), _state(micro)
        assert int(got["global_step"][0]) == update + 1  # the schedule counts updates
        assert expected.keys() == got.keys() and any(k.startswith("ema.") for k in got)
        for name in expected:  # weights, AdamW moments, EMA, loss-scale counters
            np.testing.assert_allclose(got[name], expected[name], rtol=2e-5, atol=2e-6, err_msg=name)
    assert all(not np.any(p.asnumpy()) for p in micro.get_parameters() if p.name.startswith("accumulated."))


def test_an_overflowing_micro_batch_skips_the_whole_update(graph_mode):
    net, step = _step(2)
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    labels = Tensor(np.zeros(4, np.int32))
    _, first, _ = step(Tensor(np.full((4, 6), 3e38, np.float32)), labels)  # non-finite gradients
    _, second, scale = step(Tensor(np.ones((4, 6), np.float32)), labels)  # a clean one completes the update
    assert not bool(first.asnumpy()) and bool(second.asnumpy())  # decided once, at the update
    assert float(scale.asnumpy()) == 512.0 and int(step.optimizer.global_step.asnumpy()[0]) == 0
    for p in net.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name])
    assert all(not np.any(p.asnumpy()) for p in step.get_parameters() if p.name.startswith("accumulated."))


def test_a_skipped_update_puts_back_the_statistics_of_all_its_micro_batches(graph_mode):
    ms.set_seed(3)
    net = nn.SequentialCell([nn.Dense(6, 8), nn.BatchNorm1d(8), nn.Dense(8, 3)])
    optimizer = create_optimizer(net.trainable_params(), "adamw", np.full(4, 0.05, np.float32), weight_decay=0.05)
    step = build_train_step(net, optimizer, "O0", nn.CrossEntropyLoss(), create_loss_scale(True, 1024.0, 2),
                            accumulation=2)
    statistics = {p.name: p for p in net.get_parameters() if p.name.endswith(("moving_mean", "moving_variance"))}
    before = {name: p.asnumpy().copy() for name, p in statistics.items()}
    labels = Tensor(np.zeros(4, np.int32))
    rng = np.random.default_rng(1)
    step(Tensor(rng.normal(size=(4, 6)).astype(np.float32)), labels)  # a clean micro-batch moves the statistics
    assert any(not np.array_equal(p.asnumpy(), before[name]) for name, p in statistics.items())
    _, overflow, _ = step(Tensor(np.full((4, 6), np.inf, np.float32)), labels)
    assert bool(overflow.asnumpy()) and step.update_done
    for name, p in statistics.items():  # as before the update's first micro-batch
        np.testing.assert_array_equal(p.asnumpy(), before[name], err_msg=name)
