"""Learning-rate schedule, AdamW, the train step (overflow, clipping, EMA), and training end to end."""
import json
import math
import os

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn

from support import NoBadImages
from src.app.config import OPTIONS
from src.models import VisionGNN
from src.models.layers import knn_specs
from src.engine.optim import AdamW, create_optimizer, no_weight_decay, param_groups
from src.engine.schedule import create_lr_schedule
from src.engine.train_step import TrainOneStep, create_loss_scale, ema_source_params


def test_lr_schedule_at_known_steps():
    lrs = create_lr_schedule("cosine_lr", base_lr=1e-3, steps_per_epoch=10, epochs=20, warmup_length=2,
                             warmup_lr=1e-6, min_lr=1e-5, cooldown_epochs=3)
    assert len(lrs) == (20 + 3) * 10 and lrs.dtype == np.float32
    assert lrs[0] == pytest.approx(1e-6)
    assert lrs[10] == pytest.approx(1e-6 + 10 * (1e-3 - 1e-6) / 20)          # half-way through warm-up
    cosine = lambda t: 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * t / 200))  # noqa: E731
    for t in (20, 57, 100, 199):
        assert lrs[t] == pytest.approx(cosine(t), rel=1e-6)
    assert lrs[100] == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-6)            # the cosine's midpoint
    assert np.all(lrs[200:] == np.float32(1e-5))                             # cooldown at min_lr
    assert np.all(np.diff(lrs[20:200]) <= 0)
    flat = create_lr_schedule("constant_lr", 0.1, 5, 4, warmup_length=1, warmup_lr=0.0)
    assert flat[0] == 0 and np.all(flat[5:] == np.float32(0.1))
    with pytest.raises(ValueError, match="unknown lr_scheduler"):
        create_lr_schedule("step_lr", 0.1, 5, 4)


def test_weight_decay_groups():
    net = VisionGNN(32, knn_specs([4], [1]), num_classes=3, img_size=32)
    names = {p.name for p in net.trainable_params() if no_weight_decay(p)}
    assert "pos_embed" in names and "stem.convs.0.bias" in names and "stem.convs.1.gamma" in names
    assert "stem.convs.0.weight" not in names and "prediction.4.weight" not in names
    groups = param_groups(net.trainable_params(), 0.05)
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(net.trainable_params())
    assert [g["weight_decay"] for g in groups[:2]] == [0.05, 0.0]


def test_adamw_matches_torch(pynative):
    """Bias-corrected moments and decoupled decay, step for step like torch.optim.AdamW."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0, b0 = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    grads = [(rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32))
             for _ in range(5)]
    lrs = np.array([1e-2, 2e-2, 3e-2, 2e-2, 1e-2], np.float32)

    tw, tb = torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.tensor(b0))
    topt = torch.optim.AdamW([{"params": [tw], "weight_decay": 0.1}, {"params": [tb], "weight_decay": 0.0}],
                             lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    mw, mb = Parameter(Tensor(w0), name="w.weight"), Parameter(Tensor(b0), name="w.bias")
    mopt = create_optimizer([mw, mb], "adamw", lrs, weight_decay=0.1, beta=(0.9, 0.99), eps=1e-8)
    assert isinstance(mopt, AdamW)
    for step, (gw, gb) in enumerate(grads):
        for group in topt.param_groups:
            group["lr"] = float(lrs[step])
        tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
        topt.step()
        mopt((Tensor(gw), Tensor(gb)))
    np.testing.assert_allclose(mw.asnumpy(), tw.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mb.asnumpy(), tb.detach().numpy(), rtol=1e-5, atol=1e-6)


class Quadratic(nn.Cell):
    """loss = scale * sum((w - target)^2): gradients of known size."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.w = Parameter(Tensor(np.zeros(4, np.float32)), name="w")
        self.scale = scale

    def construct(self, target):
        return self.scale * ((self.w - target) ** 2).sum()


def make_step(net, optimizer="sgd", lr=1.0, loss_scale=None, clip=0.0, ema=0.0, momentum=0.0):
    opt = create_optimizer(net.trainable_params(), optimizer, np.full(100, lr, np.float32), 0.0, momentum=momentum)
    scale = loss_scale if loss_scale is not None else Tensor(1.0, ms.float32)
    return TrainOneStep(net, opt, scale, clip_norm=clip, ema_decay=ema, ema_params=ema_source_params(net))


def test_forced_overflow_skips_the_update_and_lowers_the_scale(any_mode):
    net = Quadratic()
    step = make_step(net, loss_scale=create_loss_scale(True, 2.0 ** 10, 2), ema=0.5)
    target = Tensor(np.ones(4, np.float32))
    step(target)  # a clean step
    before, ema_before = net.w.asnumpy().copy(), step.ema[0].asnumpy().copy()
    step.scale_sense.set_data(Tensor(3.0e38, ms.float32))  # scaled gradients overflow float32
    loss, overflow, scale = step(target)
    assert bool(overflow.asnumpy())
    np.testing.assert_array_equal(net.w.asnumpy(), before)
    np.testing.assert_array_equal(step.ema[0].asnumpy(), ema_before)
    assert float(step.scale_sense.asnumpy()) == pytest.approx(1.5e38, rel=1e-6)
    assert int(step.optimizer.global_step.asnumpy()[0]) == 1  # the skipped step does not advance the schedule
    step.scale_sense.set_data(Tensor(4.0, ms.float32))
    for _ in range(2):  # two clean steps (scale_window 2) double the scale
        _, overflow, _ = step(target)
        assert not bool(overflow.asnumpy())
    assert float(step.scale_sense.asnumpy()) == 8.0


def test_fixed_loss_scale_is_unscaled(any_mode):
    plain, scaled = Quadratic(), Quadratic()
    make_step(plain)(Tensor(np.ones(4, np.float32)))
    make_step(scaled, loss_scale=Tensor(1024.0, ms.float32))(Tensor(np.ones(4, np.float32)))
    np.testing.assert_allclose(scaled.w.asnumpy(), plain.w.asnumpy(), rtol=1e-6)


def test_clipping_bounds_the_global_norm(any_mode):
    net = Quadratic(scale=50.0)  # gradient 100 per entry, global norm 200
    step = make_step(net, lr=1.0, clip=0.5)
    step(Tensor(np.ones(4, np.float32)))
    delta = net.w.asnumpy()  # SGD without momentum: delta = -lr * clipped gradient
    assert np.linalg.norm(delta) == pytest.approx(0.5, rel=1e-5)
    np.testing.assert_allclose(delta, np.full(4, 0.25), rtol=1e-5)  # direction kept


def test_ema_follows_its_formula(any_mode):
    net = Quadratic()
    step = make_step(net, lr=0.1, ema=0.9)
    target = Tensor(np.arange(4, dtype=np.float32))
    expected = net.w.asnumpy().copy()
    for _ in range(3):
        step(target)
        expected = 0.9 * expected + 0.1 * net.w.asnumpy()
        np.testing.assert_allclose(step.ema[0].asnumpy(), expected, rtol=1e-6, atol=1e-7)
    assert step.ema[0].name == "ema.w"


def test_pretrained_initialisation_keeps_a_new_classifier(tmp_path):
    """Fine-tuning: every weight comes from the checkpoint except a classifier of another class count."""
    from src.models import create_model, model_cfg
    from src.weights.checkpoint import load_model_weights, save_checkpoint

    source = create_model("vig_nano_gelu", num_classes=3, img_size=32)
    save_checkpoint({p.name: p for p in source.get_parameters()}, str(tmp_path / "src.ckpt"))
    target = create_model("vig_nano_gelu", num_classes=5, img_size=32)
    head_before = target.parameters_dict()["prediction.4.weight"].asnumpy().copy()
    classifier = model_cfg("vig_nano_gelu")["classifier"]
    loaded = load_model_weights(target, str(tmp_path / "src.ckpt"), new_classifier=classifier + ".")
    assert loaded.reinitialised == ["prediction.4.weight", "prediction.4.bias"] and not loaded.ema
    weights = target.parameters_dict()
    np.testing.assert_array_equal(weights["prediction.4.weight"].asnumpy(), head_before)
    for param in source.get_parameters():
        if not param.name.startswith("prediction.4."):
            np.testing.assert_array_equal(weights[param.name].asnumpy(), param.asnumpy(), err_msg=param.name)


class _Batches:
    """The iterator interface of a ``create_dataset`` pipeline, over fixed (input, label) pairs."""

    bad_image_policy = NoBadImages()

    def __init__(self, items):
        self.items = items

    def create_tuple_iterator(self, num_epochs=1):
        return iter([(x, y, Tensor(np.full(1, -1, np.int32))) for x, y in self.items])


class PairQuadratic(nn.Cell):
    """Quadratic's loss for the trainer's (images, labels) call."""

    def __init__(self):
        super().__init__()
        self.w = Parameter(Tensor(np.zeros(4, np.float32)), name="w")

    def construct(self, x, y):
        return ((self.w - x) ** 2).sum() + 0 * y.sum()


def test_logged_lr_is_the_applied_one_after_skipped_steps(tmp_path, pynative):
    """The schedule counts updates: after two overflow-skipped steps the logged lr is the schedule's first."""
    import logging
    from src.engine.run_checkpoints import RunCheckpoints, new_run_meta
    from src.engine.trainer import TrainJob, _StepClock, train_epoch

    net = PairQuadratic()
    lrs = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], np.float32)
    opt = create_optimizer(net.trainable_params(), "sgd", lrs, 0.0, momentum=0.0)
    # gradients of 2000 x scale overflow float32 at 2^119 and 2^118; the scale halves to 2^117, where they fit
    step = TrainOneStep(net, opt, create_loss_scale(True, 2.0 ** 119, 1000))
    batch = (Tensor(np.full(4, 1000.0, np.float32)), Tensor(np.zeros(1, np.float32)))
    metrics = tmp_path / "metrics.jsonl"
    job = TrainJob(model=net, step=step, eval_net=net, train_data=lambda epoch: _Batches([batch] * 4), val_data=None,
                   lrs=lrs, steps_per_epoch=4, total_epochs=1, checkpoints=RunCheckpoints(str(tmp_path), 1, False),
                   log=logging.getLogger("test.lr"), images_per_step=1, metrics_path=str(metrics),
                   **dict(POLICIES, log_every=1))
    record = train_epoch(job, 0, new_run_meta(), _StepClock())
    updates = int(step.optimizer.global_step.asnumpy()[0])
    assert record["overflow_steps"] == 2 and updates == 2
    logged = [json.loads(line)["lr"] for line in open(metrics)]
    # before the first update the next update's lr is shown; then always that of the latest update
    np.testing.assert_allclose(logged, [0.1, 0.1, 0.1, 0.2], rtol=1e-6)
    # with SGD (no momentum) the weights moved by the applied rates only: w = 1000 (1 - prod(1 - 2 lr_i))
    expected = 1000 * (1 - (1 - 2 * 0.1) * (1 - 2 * 0.2))
    np.testing.assert_allclose(net.w.asnumpy(), np.full(4, expected), rtol=1e-5)


# TrainJob's run policies as the configuration schema sets them by default
POLICIES = {key: OPTIONS[key].default for key in ("log_every", "eval_every", "save_every", "max_overflow_fraction",
                                                  "overflow_window")}


def quadratic_job(tmp_path, step, steps, **options):
    """A ``TrainJob`` of ``PairQuadratic`` over ``steps`` batches of target 1 per epoch (rank 0 writes)."""
    import logging
    from src.engine.run_checkpoints import RunCheckpoints
    from src.engine.trainer import TrainJob

    batch = (Tensor(np.ones(4, np.float32)), Tensor(np.zeros(1, np.float32)))
    return TrainJob(model=step.network, step=step, eval_net=step.network, val_data=None,
                    train_data=lambda epoch: _Batches([batch] * steps), lrs=np.full(100, 0.1, np.float32),
                    steps_per_epoch=steps, checkpoints=RunCheckpoints(str(tmp_path), 1, True),
                    log=logging.getLogger("test.fit"), images_per_step=1, **{**POLICIES, **options})


def test_a_run_shorter_than_the_overflow_window_is_judged(tmp_path, pynative):
    """A fixed loss scale that overflows every gradient: every update is skipped. The run has 18 steps,
    the window 100: it is judged once 10 updates are counted, and stops with one line before any checkpoint."""
    from src.engine.run_checkpoints import new_run_meta
    from src.engine.trainer import TrainingDiverged, fit

    step = make_step(PairQuadratic(), loss_scale=Tensor(3.0e38, ms.float32))
    job = quadratic_job(tmp_path, step, 18, total_epochs=1, overflow_window=100)
    with pytest.raises(TrainingDiverged, match=r"^training stopped at epoch 1 step 10/18: 10 of the last 10 updates "
                                               r"were skipped for non-finite loss or gradients, more than "
                                               r"max_overflow_fraction 0\.5 \(loss scale now 3e\+38\); the run "
                                               r"diverged\. .* Lower base_lr"):
        fit(job, new_run_meta())
    assert os.listdir(tmp_path) == []


def test_the_first_skips_of_a_dynamic_loss_scale_are_not_counted():
    from src.engine.trainer import OverflowWatch

    settling = OverflowWatch(0.5, 100, dynamic=True)
    for halvings in range(1, 10):  # halving on each skip from 2^24, before any update
        settling.add(True, 2.0 ** (24 - halvings))
    assert not settling.flags
    for skipped in (False, True, False, False, True, False, False, False, False, True):
        settling.add(skipped, 2.0 ** 14)
    assert list(settling.flags)[:2] == [False, True] and not settling.exceeded()  # 3 of 10
    never_fits = OverflowWatch(0.5, 100, dynamic=True)
    for scale in [2.0] + [1.0] * 10:  # the scale reached 1 and the gradients still overflow
        never_fits.add(True, scale)
    assert len(never_fits.flags) == 10 and never_fits.exceeded()
    fixed = OverflowWatch(0.5, 4, dynamic=False)
    for skipped in (True, True, False):
        fixed.add(skipped, 1024.0)
    assert not fixed.exceeded()  # 3 counted: fewer than min(window 4, 10)
    fixed.add(True, 1024.0)
    assert fixed.exceeded()  # 3 of 4


def test_a_non_finite_validation_stops_the_run_and_never_becomes_best(tmp_path, pynative, monkeypatch):
    """The EMA validates with a NaN loss and a top-1 that would win: the run stops with one line before
    writing best.ckpt or an epoch checkpoint."""
    import src.engine.trainer as trainer
    from src.engine.run_checkpoints import new_run_meta

    monkeypatch.setattr(trainer, "validate", lambda *args: {"top1": 50.0, "top5": 100.0, "loss": 1.0,
                                                            "ema_top1": 100.0, "ema_top5": 100.0,
                                                            "ema_loss": float("nan")})
    job = quadratic_job(tmp_path, make_step(PairQuadratic(), ema=0.5), 2, total_epochs=2, with_ema=True)
    with pytest.raises(trainer.TrainingDiverged, match=r"^training stopped after epoch 1: the EMA validation loss is "
                                                       r"nan; the run diverged\."):
        trainer.fit(job, new_run_meta())
    assert os.listdir(tmp_path) == []


class BatchNormQuadratic(nn.Cell):
    """A BatchNorm layer (its running statistics updated by every forward pass) in front of a quadratic loss."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(4, momentum=0.5)
        self.w = Parameter(Tensor(np.zeros(4, np.float32)), name="w")

    def construct(self, x):
        return ((self.norm(x) * self.w - 1.0) ** 2).sum()


def test_a_skipped_step_keeps_the_batchnorm_statistics(any_mode):
    """Forward passes of skipped steps (overflowing gradients; an input that makes the loss and the statistics
    non-finite) leave the running statistics and their EMA as they were; a clean step updates them."""
    net = BatchNormQuadratic()
    net.set_train(True)
    step = make_step(net, loss_scale=create_loss_scale(True, 2.0 ** 10, 1000), ema=0.5)
    statistics = [p for p in net.get_parameters() if p.name.endswith(("moving_mean", "moving_variance"))]
    assert len(statistics) == 2 and len(step.ema) == 5  # w, gamma, beta and the statistics
    rng = np.random.default_rng(0)
    batch = Tensor(rng.standard_normal((8, 4)).astype(np.float32) * 3 + 2)
    step(batch)  # a clean step
    before = [p.asnumpy().copy() for p in statistics] + [e.asnumpy().copy() for e in step.ema]
    step.scale_sense.set_data(Tensor(3.0e38, ms.float32))  # scaled gradients overflow float32
    assert bool(step(batch)[1].asnumpy())
    step.scale_sense.set_data(Tensor(4.0, ms.float32))
    infinite = Tensor(np.full((8, 4), np.inf, np.float32))
    loss, overflow, _ = step(infinite)
    assert bool(overflow.asnumpy()) and not np.isfinite(loss.asnumpy())
    after = [p.asnumpy() for p in statistics] + [e.asnumpy() for e in step.ema]
    for got, expected in zip(after, before):
        np.testing.assert_array_equal(got, expected)
    assert not bool(step(batch)[1].asnumpy())
    assert not np.array_equal(statistics[0].asnumpy(), before[0])


def test_one_overflow_check_per_step_sees_gradients_loss_and_statistics(pynative, monkeypatch):
    """On Ascend 910A all_finite reads and clears the NPU float-status register whatever its inputs, so a second
    call in a step would check nothing: the step makes one call, over the gradients, the loss and the statistics."""
    seen = []

    def counted(inputs, check=ms.amp.all_finite):
        seen.append(len(inputs))
        return check(inputs)

    monkeypatch.setattr(ms.amp, "all_finite", counted)
    net = BatchNormQuadratic()
    net.set_train(True)
    step = make_step(net, loss_scale=create_loss_scale(True, 2.0 ** 10, 1000))
    step(Tensor(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)))
    assert seen == [len(step.weights) + 1 + 2]  # w, gamma, beta; the loss; moving mean and variance
