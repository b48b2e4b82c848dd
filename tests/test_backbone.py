"""Backbone use: feature maps of every family at two input sizes, checkpoints into a features-only
model, frozen stages and norm_eval through a real training step."""
import numpy as np
import pytest
from mindspore import Tensor

from src.engine.optim import create_optimizer
from src.engine.train_step import build_train_step
from src.models import ModelError, create_model
from src.weights.checkpoint import load_model_weights, save_checkpoint
from support import family_representatives


FAMILIES = family_representatives()


def images(size, batch=1, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32))


@pytest.mark.slow(reason="every family compiled at two sizes")
@pytest.mark.parametrize("name", FAMILIES)
def test_feature_maps_of_every_family_at_two_sizes(pynative, name, tmp_path):
    full = create_model(name, num_classes=10, img_size=64, kernel_impl="native")
    full.set_train(False)
    pyramid = full.is_pyramid
    depth = len(full.graphers())
    x = images(64, seed=1)
    final, maps = full.forward_intermediates(x)  # the full model, all feature points, at 64
    np.testing.assert_array_equal(full.forward_head(final).asnumpy(), full(x).asnumpy())
    backbone = create_model(name, img_size=96, features_only=True, kernel_impl="native")  # a backbone at 96
    backbone.set_train(False)
    for size, outs, info in ((64, maps, full.feature_info), (96, backbone(images(96)), backbone.feature_info)):
        assert [f["reduction"] for f in info] == ([4, 8, 16, 32] if pyramid else [16] * depth)
        assert len(outs) == len(info)
        for out, f in zip(outs, info):
            side = size // f["reduction"]
            assert out.shape == (1, f["num_chs"], side, side) and f["grid"] == (side, side)
            assert np.isfinite(out.asnumpy()).all()
    # a subset, negative indices counting from the end; the full model's checkpoint loads (head dropped)
    chosen = (1, -1) if pyramid else (0, depth // 2)
    net = create_model(name, img_size=64, features_only=True, out_indices=chosen, kernel_impl="native")
    assert not any(p.name.startswith("prediction.") for p in net.get_parameters())
    ckpt = save_checkpoint({p.name: p for p in full.get_parameters()}, str(tmp_path / "full.ckpt"))
    load_model_weights(net, ckpt)
    net.set_train(False)
    outs = net(x)
    assert len(outs) == 2
    for got, want in zip(outs, (maps[chosen[0]], maps[chosen[1]])):
        np.testing.assert_array_equal(got.asnumpy(), want.asnumpy())


def test_features_only_compiles_in_graph_mode(graph_mode):
    net = create_model("pvig_ti_224_gelu", img_size=64, features_only=True, out_indices=(0, 1))
    net.set_train(False)
    outs = net(images(64, batch=1))
    assert [o.shape for o in outs] == [(1, 48, 16, 16), (1, 96, 8, 8)]
    # stages after the last chosen one are dropped from the backbone
    assert len(net.backbone) == 5 and net.dropped_prefixes[-1] == "backbone.14."


def test_bad_feature_indices_are_refused():
    with pytest.raises(ModelError, match="feature index 4 is out of range: this model has 4 feature points"):
        create_model("pvig_ti_224_gelu", img_size=64, features_only=True, out_indices=(0, 4))
    with pytest.raises(ModelError, match="pass features_only=True"):
        create_model("vig_nano_gelu", img_size=64, out_indices=(0,))
    with pytest.raises(ModelError, match=r"frozen_stages must be an integer in 0\.\.4"):
        create_model("pvig_ti_224_gelu", img_size=64, frozen_stages=5)


def _train(net, steps=1):
    lrs = np.full(steps, 1e-2, np.float32)
    step = build_train_step(net, create_optimizer(net.trainable_params(), "adamw", lrs, 0.05))
    x, y = images(64, batch=2), Tensor(np.array([0, 3], np.int32))
    for _ in range(steps):
        step(x, y)


def _values(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def _stage_prefixes(net, stages):
    entries = [i for stage in net.stages()[:stages] for i in stage]
    return ("stem.", "pos_embed") + tuple(f"backbone.{i}." for i in entries)


@pytest.mark.slow(reason="training steps of every family")
@pytest.mark.parametrize("name", ["pvig_ti_224_gelu", "vig_nano_gelu"])
def test_frozen_stages_do_not_learn(pynative, name):
    net = create_model(name, num_classes=4, img_size=64, drop_path_rate=0.1, frozen_stages=2, kernel_impl="native")
    frozen = _stage_prefixes(net, 2)
    trainable = {p.name for p in net.trainable_params()}
    assert trainable and not any(n.startswith(frozen) for n in trainable)  # no optimizer sees them: no gradient
    assert {p.name for p in net.get_parameters() if p.requires_grad and not p.name.startswith(frozen)} == trainable
    before = _values(net)
    _train(net)
    after = _values(net)
    for n in before:
        if n.startswith(frozen):  # weights and BatchNorm statistics of the frozen part stay put
            np.testing.assert_array_equal(after[n], before[n], err_msg=n)
    changed = [n for n in trainable if not np.array_equal(after[n], before[n])]
    assert len(changed) > 0.9 * len(trainable)
    later_stats = [n for n in before if n.endswith("moving_mean") and not n.startswith(frozen)]
    assert any(not np.array_equal(after[n], before[n]) for n in later_stats)  # the rest still trains its BN


def test_norm_eval_keeps_every_backbone_statistic(pynative):
    net = create_model("vig_nano_gelu", num_classes=4, img_size=64, norm_eval=True, kernel_impl="native")
    before = _values(net)
    _train(net)
    after = _values(net)
    stats = [n for n in before if n.endswith(("moving_mean", "moving_variance"))]
    for n in stats:
        if n.startswith("prediction."):
            assert not np.array_equal(after[n], before[n]), "the head's BatchNorm trains"
        else:
            np.testing.assert_array_equal(after[n], before[n], err_msg=n)
    assert not np.array_equal(after["stem.convs.1.gamma"], before["stem.convs.1.gamma"])  # affine still learns


def test_fine_tuning_keys_reach_the_training_model():
    from src.app.builders import model_from_config
    from src.app.config import load_config
    cfg = load_config(["--arch", "vig_nano_gelu", "--num_classes", "3", "--image_size", "64", "--frozen_stages", "2",
                       "--norm_eval", "true"], entry="train")
    trained = model_from_config(cfg, training=True, impl="native")
    assert (trained.frozen_stages, trained.norm_eval) == (2, True)
    assert not trained.pos_embed.requires_grad and not trained.backbone[1][0].fc1[0].weight.requires_grad
    assert trained.backbone[2][0].fc1[0].weight.requires_grad
    evaluated = model_from_config(cfg, impl="native")  # validation and export copies are plain models
    assert (evaluated.frozen_stages, evaluated.norm_eval) == (0, False)
