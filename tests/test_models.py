"""Model construction, registry, schedules, and forward/backward of tiny configurations."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

from src.models import (PyramidVisionGNN, VisionGNN, canonical_name, create_model, list_models, model_cfg,
                        resolve_kernel_impl)
from src.models import pyramid_vig, vig
from src.models.layers import DropPath, kernels, knn_specs
from support import assert_trains_in_this_mode

OFFICIAL_COUNTS = {  # trainable, relative_pos elements (official PyTorch models)
    "vig_ti_224_gelu": (7_184_744, 0),
    "vig_s_224_gelu": (22_747_752, 0),
    "vig_b_224_gelu": (86_841_832, 0),
    "pvig_ti_224_gelu": (10_714_376, 1_771_938),
    "pvig_s_224_gelu": (27_251_912, 1_771_938),
    "pvig_m_224_gelu": (49_525_832, 2_156_098),
    "pvig_b_224_gelu": (92_980_328, 2_232_930),
    # counted on the official SViG and GraphConvNet code (github IsmaelElsharkawi/SViG, yuan0038/GraphConvNet)
    "svig_ti_224_gelu": (7_184_744, 0),
    "graphconvnet_ti": (7_666_280, 0),
    "graphconvnet_s": (24_514_152, 0),
    "pgraphconvnet_ti": (11_431_880, 1_771_938),
    "pgraphconvnet_s": (29_231_112, 1_771_938),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_parameter_counts_equal_official(name):
    net = create_model(name, kernel_impl="native")
    trainable, frozen_table = OFFICIAL_COUNTS[name]
    assert sum(p.size for p in net.trainable_params()) == trainable
    tables = [p for p in net.get_parameters() if p.name.endswith("relative_pos")]
    assert sum(p.size for p in tables) == frozen_table
    assert all(not p.requires_grad for p in tables)


def test_registry():
    assert set(list_models()) == set(OFFICIAL_COUNTS) | {"vig_nano_gelu"}
    assert canonical_name("vig_s_patch16_224") == "vig_s_224_gelu"
    assert "vig_ti_patch16_224" in list_models(include_aliases=True)
    with pytest.raises(ValueError, match="Did you mean vig_ti_224_gelu.*Registered models: .*pvig_b_224_gelu"):
        create_model("vig_ti_224_gelo")
    assert model_cfg("pvig_b_224_gelu")["crop_pct"] == 0.95
    assert model_cfg("vig_ti_patch16_224")["mean"] == (0.5, 0.5, 0.5)
    assert canonical_name("graphconvnetp_s") == "pgraphconvnet_s"
    assert model_cfg("graphconvnet_ti")["mean"] == (0.485, 0.456, 0.406)  # its training used ImageNet's
    assert model_cfg("svig_ti_224_gelu")["graph"] == "threshold" and model_cfg("pgraphconvnet_ti")["graph"] == "knn"


def test_schedule_rules_reproduce_official_lists():
    """The stored lists are what the official float32 linspace rule gives (no accumulated rounding)."""
    assert vig.knn_schedule(12) == (vig.ARCHS["vig_ti_224_gelu"]["k"], vig.ARCHS["vig_ti_224_gelu"]["dilation"])
    assert vig.knn_schedule(16) == (vig.ARCHS["vig_s_224_gelu"]["k"], vig.ARCHS["vig_b_224_gelu"]["dilation"])
    for name, spec in pyramid_vig.ARCHS.items():
        assert pyramid_vig.knn_schedule(spec["depths"])[1] == spec["dilation"], name


def test_blocks_follow_schedules():
    net = create_model("pvig_m_224_gelu", drop_path_rate=0.1, kernel_impl="native")
    graphers = [c for _, c in net.cells_and_names() if type(c).__name__ == "Grapher"]
    assert [g.graph_spec.dilation for g in graphers] == pyramid_vig.ARCHS["pvig_m_224_gelu"]["dilation"]
    assert [g.graph_spec.k for g in graphers] == [9] * 22
    assert [g.num_keys for g in graphers] == [196] * 20 + [49] * 2
    rates = [g.drop_path.rate for g in graphers]
    assert rates[0] == 0.0 and abs(rates[-1] - 0.1) < 1e-7 and rates == sorted(rates)


def test_bad_arguments_are_refused_naming_the_argument_and_what_it_takes():
    from src.models import ModelError

    for name, img_size, stride in (("vig_nano_gelu", 200, "stem stride 16"), ("pvig_ti_224_gelu", 240,
                                                                              "total stride 32"),
                                   ("vig_nano_gelu", 0, "stem stride 16"), ("vig_nano_gelu", "224", "stem stride 16"),
                                   ("vig_nano_gelu", (32, 32.0), "stem stride 16")):
        with pytest.raises(ModelError) as refused:
            create_model(name, img_size=img_size)
        assert str(refused.value) == (f"img_size must be a positive multiple of the {stride} (an int, or (height, "
                                      f"width)), got {img_size!r}")
    with pytest.raises(ModelError, match=r"^out_indices takes None \(all feature points\), an int n \(the last n\) "
                                         r"or a sequence of ints \(those points, 0\.\.5\), got 'abc'$"):
        create_model("vig_nano_gelu", img_size=32, features_only=True, out_indices="abc")
    with pytest.raises(ModelError, match=r"^frozen_stages must be an integer in 0\.\.6 for this model \(6 blocks\), "
                                         r"got 2\.5$"):
        create_model("vig_nano_gelu", img_size=32, frozen_stages=2.5)


def tiny_isotropic(**kwargs):
    return VisionGNN(32, knn_specs([4, 6, 8], [1, 2, 1]), num_classes=5, img_size=64, **kwargs)


def tiny_pyramid(**kwargs):
    return PyramidVisionGNN((16, 32, 32, 48), (1, 1, 2, 1), knn_specs([4] * 5, [1, 1, 2, 2, 1]), num_classes=5,
                            img_size=64, **kwargs)


@pytest.mark.slow(reason="forward and backward compiled in both modes")
@pytest.mark.parametrize("build", [tiny_isotropic, tiny_pyramid], ids=["isotropic", "pyramid"])
def test_forward_backward_both_modes(any_mode, build):
    net = build(drop_path_rate=0.1)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32))
    _, out = assert_trains_in_this_mode(net, x, Tensor(np.array([1, 3], np.int32)))
    assert out.shape == (2, 5)


def test_non_224_input_resizes_tables(pynative):
    """pos_embed and relative_pos keep their 224 shapes and are resized to the input's node grid."""
    net = create_model("pvig_ti_224_gelu", num_classes=7, img_size=(96, 64), kernel_impl="cpu")
    names = {p.name: p.shape for p in net.get_parameters()}
    assert names["pos_embed"] == (1, 48, 56, 56)
    assert names["backbone.0.0.relative_pos"] == (1, 3136, 196)
    first = net.backbone[0][0]
    assert first.position_bias().shape == (1, 24 * 16, 6 * 4)
    net.set_train(False)
    out = net(Tensor(np.zeros((1, 3, 96, 64), np.float32)))
    assert out.shape == (1, 7)


def small_size(name):
    """The smallest input the model takes (its parameters do not depend on the size)."""
    return 32 if name.startswith(("pvig", "pgraphconvnet")) else 16


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS) + ["vig_nano_gelu"])
def test_default_cfg_names_the_classifier_and_first_conv(name):
    """Every registered model: the default cfg's ``classifier`` and ``first_conv`` are its layers, the
    classifier is what get_classifier returns, and reset_classifier resizes it under the same names."""
    cfg = model_cfg(name)
    net = create_model(name, num_classes=10, img_size=small_size(name))
    params = {p.name: p for p in net.get_parameters()}
    assert params[f"{cfg['first_conv']}.weight"].shape[1] == 3
    assert params[f"{cfg['classifier']}.weight"].shape[0] == params[f"{cfg['classifier']}.bias"].shape[0] == 10
    assert net.get_classifier().weight is params[f"{cfg['classifier']}.weight"]
    before = {n: p.shape for n, p in params.items()}
    net.reset_classifier(3)
    after = {p.name: p.shape for p in net.get_parameters()}
    assert set(after) == set(before)
    assert {n for n in after if after[n] != before[n]} == {f"{cfg['classifier']}.weight", f"{cfg['classifier']}.bias"}
    assert after[f"{cfg['classifier']}.weight"][0] == 3


def test_reset_classifier_gives_a_working_fresh_head(pynative):
    net = create_model("vig_nano_gelu", num_classes=10, img_size=32)
    with pytest.raises(ValueError, match="num_classes must be at least 1"):
        net.reset_classifier(0)
    net.reset_classifier(4)
    assert not net.get_classifier().bias.asnumpy().any()  # initialised as the constructor does
    net.set_train(False)
    assert net(Tensor(np.zeros((2, 3, 32, 32), np.float32))).shape == (2, 4)


def test_the_formulation_is_chosen_by_the_caller(isolated_kernels):
    """create_model reads no device context: 'auto' is resolved from a device target by the caller,
    and building the default (native) formulation compiles nothing."""
    assert resolve_kernel_impl("auto", "CPU") == "cpu"
    assert resolve_kernel_impl("auto", "Ascend") == resolve_kernel_impl("auto", "GPU") == "native"
    assert resolve_kernel_impl("native", "CPU") == "native"
    with pytest.raises(ValueError, match="resolve_kernel_impl"):
        create_model("vig_nano_gelu", img_size=32, kernel_impl="auto")
    net = create_model("vig_nano_gelu", img_size=32)
    assert kernels._LOADED == {} and not isolated_kernels.exists()
    # native: only grouped (non-depthwise) convolutions run as a matmul, the form Ascend documents
    assert all(c.groups > 1 for _, c in net.cells_and_names() if getattr(c, "use_matmul", False))
    assert not any(getattr(c, "fast_gelu", None) for _, c in net.cells_and_names())


def test_graph_branch_receives_gradient(pynative):
    """The Grapher's own layers (fc1 before the graph, the graph conv) get gradient, not only the
    stem through the residual path."""
    net = tiny_isotropic()
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32))
    params = net.trainable_params()
    grads = ms.grad(lambda images: net(images).sum(), None, params)(x)
    by_name = {p.name: np.abs(g.asnumpy()).sum() for p, g in zip(params, grads)}
    for name in ("backbone.0.0.fc1.0.weight", "backbone.0.0.graph_conv.gconv.nn.0.weight",
                 "backbone.1.0.fc1.0.weight", "backbone.1.0.graph_conv.gconv.nn.0.weight"):
        assert by_name[name] > 0, name


def test_drop_path_drops_whole_samples_and_rescales(pynative):
    rate, batch = 0.25, 4000
    x = Tensor(np.ones((batch, 3, 2, 2), np.float32))
    drop = DropPath(rate)
    drop.set_train(True)
    out = drop(x).asnumpy()
    per_sample = out.reshape(batch, -1)
    assert (per_sample == per_sample[:, :1]).all()  # one decision per sample
    kept = per_sample[:, 0] != 0
    np.testing.assert_allclose(per_sample[kept, 0], 1 / (1 - rate), rtol=1e-6)  # kept samples scaled by 1/keep
    assert abs(1 - kept.mean() - rate) < 0.03  # ~rate of the samples dropped (4 sigma: 0.027)
    drop.set_train(False)
    assert drop(x).asnumpy().tobytes() == x.asnumpy().tobytes()
    zero = DropPath(0.0)
    zero.set_train(True)
    assert zero(x).asnumpy().tobytes() == x.asnumpy().tobytes()
    with pytest.raises(ValueError, match="drop path rate"):
        DropPath(1.0)
