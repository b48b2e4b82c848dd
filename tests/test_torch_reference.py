"""Fast self-checks of the PyTorch oracle in tools/torch_reference.py (no official code needed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tools import torch_reference as R

Key = tuple[str, tuple[int, ...]]


# ---------------------------------------------------------------- expected keys from the patterns

def _conv(prefix: str, c_out: int, c_in: int, kernel: int = 1) -> list[Key]:
    return [(f"{prefix}.weight", (c_out, c_in, kernel, kernel)), (f"{prefix}.bias", (c_out,))]


def _bn(prefix: str, c: int) -> list[Key]:
    stats = [(f"{prefix}.{leaf}", (c,)) for leaf in ("weight", "bias", "running_mean", "running_var")]
    return stats + [(f"{prefix}.num_batches_tracked", ())]


def _conv_bn(prefix: str, c_out: int, c_in: int, kernel: int = 1) -> list[Key]:
    return _conv(f"{prefix}.0", c_out, c_in, kernel) + _bn(f"{prefix}.1", c_out)


def _block(i: int, c: int, rel: tuple[int, ...] | None = None) -> list[Key]:
    g, f = f"backbone.{i}.0", f"backbone.{i}.1"
    keys = [(f"{g}.relative_pos", rel)] if rel else []
    keys += _conv_bn(f"{g}.fc1", c, c)
    keys += _conv(f"{g}.graph_conv.gconv.nn.0", 2 * c, 2 * c // 4) + _bn(f"{g}.graph_conv.gconv.nn.1", 2 * c)
    keys += _conv_bn(f"{g}.fc2", c, 2 * c)
    return keys + _conv_bn(f"{f}.fc1", 4 * c, c) + _conv_bn(f"{f}.fc2", c, 4 * c)


def _stem(widths: list[int]) -> list[Key]:
    keys: list[Key] = []
    for j, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        keys += _conv(f"stem.convs.{3 * j}", c_out, c_in, 3) + _bn(f"stem.convs.{3 * j + 1}", c_out)
    j = 3 * (len(widths) - 1)
    return keys + _conv(f"stem.convs.{j}", widths[-1], widths[-1], 3) + _bn(f"stem.convs.{j + 1}",
                                                                            widths[-1])


def _head(c: int) -> list[Key]:
    return _conv("prediction.0", 1024, c) + _bn("prediction.1", 1024) + _conv("prediction.4", 1000, 1024)


def expected_vig_ti() -> list[Key]:
    c = 192
    keys = [("pos_embed", (1, c, 14, 14))] + _stem([3, 24, 48, 96, 192])
    for i in range(12):
        keys += _block(i, c)
    return keys + _head(c)


def expected_pvig_ti() -> list[Key]:
    chs, depths, ratios = (48, 96, 240, 384), (2, 2, 6, 2), (4, 2, 1, 1)
    keys = [("pos_embed", (1, 48, 56, 56))] + _stem([3, 24, 48])
    entry, n = 0, 56 * 56
    for s, (c, depth) in enumerate(zip(chs, depths)):
        if s:
            keys += _conv_bn(f"backbone.{entry}.conv", c, chs[s - 1], 3)
            entry, n = entry + 1, n // 4
        for _ in range(depth):
            keys += _block(entry, c, (1, n, n // ratios[s] ** 2))
            entry += 1
    return keys + _head(384)


def _listing(model: torch.nn.Module) -> list[Key]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("name, expected, count, spot", [
    ("vig_ti_224_gelu", expected_vig_ti, 465, {
        "pos_embed": (1, 192, 14, 14), "stem.convs.12.weight": (192, 192, 3, 3),
        "stem.convs.13.num_batches_tracked": (),
        "backbone.0.0.graph_conv.gconv.nn.0.weight": (384, 96, 1, 1),
        "backbone.11.1.fc1.0.weight": (768, 192, 1, 1), "prediction.4.weight": (1000, 1024, 1, 1)}),
    ("pvig_ti_224_gelu", expected_pvig_ti, 484, {
        "pos_embed": (1, 48, 56, 56), "stem.convs.6.weight": (48, 48, 3, 3),
        "backbone.0.0.relative_pos": (1, 3136, 196), "backbone.3.0.relative_pos": (1, 784, 196),
        "backbone.6.0.relative_pos": (1, 196, 196), "backbone.13.0.relative_pos": (1, 49, 49),
        "backbone.2.conv.0.weight": (96, 48, 3, 3), "backbone.12.conv.0.weight": (384, 240, 3, 3),
        "backbone.13.0.graph_conv.gconv.nn.0.weight": (768, 192, 1, 1),
        "prediction.0.weight": (1024, 384, 1, 1)}),
])
def test_state_dict_matches_official_listing(name, expected, count, spot) -> None:
    got = _listing(R.build_official(name))
    assert len(got) == count
    assert got == expected()
    as_dict = dict(got)
    for key, shape in spot.items():
        assert as_dict[key] == shape, key
    keys = [k for k, _ in got]
    assert keys[0] == "pos_embed"
    if "relative_pos" in " ".join(keys):
        assert keys[keys.index("backbone.0.0.relative_pos") + 1] == "backbone.0.0.fc1.0.weight"
    assert len(R.mindspore_param_dict(R.build_official(name))) == count - sum(
        k.endswith("num_batches_tracked") for k in keys)


@pytest.mark.parametrize("name, trainable, total", [
    ("vig_ti_224_gelu", 7_184_744, 7_184_744),
    ("vig_s_224_gelu", 22_747_752, 22_747_752),
    ("vig_b_224_gelu", 86_841_832, 86_841_832),
    ("pvig_ti_224_gelu", 10_714_376, 12_486_314),
    ("pvig_s_224_gelu", 27_251_912, 29_023_850),
    ("pvig_m_224_gelu", 49_525_832, 51_681_930),
    ("pvig_b_224_gelu", 92_980_328, 95_213_258),
])
def test_parameter_counts(name: str, trainable: int, total: int) -> None:
    model = R.build_official(name)
    assert R.count_params(model) == (trainable, total)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.endswith("relative_pos"))


def test_official_schedules_follow_the_rules() -> None:
    for name, (ks, ds) in R.OFFICIAL_SCHEDULES.items():
        cfg = R.OFFICIAL_CONFIGS[name]
        if cfg["kind"] == "isotropic":
            assert R.isotropic_schedule(9, cfg["depth"], 196) == (ks, ds)
            assert R.build_isotropic(cfg["channels"], cfg["depth"]).schedule() == (ks, ds)
        else:
            assert R.pyramid_schedule(9, cfg["depths"], 49) == (ks, ds)
        assert R.build_official(name).schedule() == (ks, ds)


def test_relative_pos_table() -> None:
    raw = -torch.from_numpy(np.float32(2 * (e := R._sincos_2d(48, 56)) @ e.T / 48))
    assert torch.equal(R.relative_pos_table(48, 3136, 1)[0], raw)
    assert torch.all(torch.diagonal(raw) == -1)
    # r = 4: fixed 4-tap filter along the flattened key index (the official quirk)
    t4 = R.relative_pos_table(48, 3136, 4)[0].double()
    c = raw.double()
    j = torch.arange(196)
    want = 0.59375 * (c[:, 16 * j + 7] + c[:, 16 * j + 8]) - 0.09375 * (c[:, 16 * j + 6] + c[:, 16 * j + 9])
    assert t4.shape == (3136, 196)
    assert torch.allclose(t4, want, atol=1e-6, rtol=0)


def test_capping_rule() -> None:
    assert R.capped_k_dilation(9, 3, 196) == (9, 3)
    assert R.capped_k_dilation(9, 5, 36) == (9, 4)
    assert R.capped_k_dilation(9, 2, 9) == (9, 1)
    assert R.capped_k_dilation(18, 3, 16) == (16, 1)


def test_tiny_models_at_other_sizes() -> None:
    torch.manual_seed(0)
    iso = R.build_isotropic(channels=32, depth=5, k=4, num_classes=7)
    assert iso.schedule() == ([4, 5, 6, 7, 8], [1, 1, 1, 1, 2])
    pyr = R.build_pyramid(channels=(16, 32, 48, 64), depths=(1, 1, 2, 1), k=4, num_classes=7)
    assert pyr.schedule() == ([4] * 5, [1, 1, 1, 1, 2])
    R.calibrate_(iso, R.structured_images(4, 96, seed=1), steps=2)
    R.calibrate_(pyr, R.structured_images(4, 96, seed=1), steps=2)
    assert iso.pos_embed.shape == (1, 32, 14, 14) and pyr.pos_embed.shape == (1, 16, 56, 56)
    # isotropic: 40 px -> 3x3 nodes (block 4: k=8, d=2 capped to d=1); 32 px -> 2x2 (k capped to 4)
    for size, n_nodes, ks in [(40, 9, [4, 5, 6, 7, 8]), (32, 4, [4, 4, 4, 4, 4])]:
        images = R.structured_images(2, size, seed=3)
        trace = iso.trace(images)
        assert trace["logits"].shape == (2, 7) and torch.isfinite(trace["logits"]).all()
        for i, k in zip(iso.grapher_entries(), ks):
            nb = trace["neighbours"][i]
            assert nb.shape == (2, n_nodes, k) and int(nb.max()) < n_nodes
    # pyramid at 96: stage sides 24, 12, 6, 3 -> keys 36, 36, 36, 9; relative_pos resized
    images = R.structured_images(2, 96, seed=3)
    trace = pyr.trace(images)
    assert trace["logits"].shape == (2, 7) and torch.isfinite(trace["logits"]).all()
    shapes = {i: tuple(nb.shape) for i, nb in trace["neighbours"].items()}
    assert shapes == {0: (2, 576, 4), 2: (2, 144, 4), 4: (2, 36, 4), 5: (2, 36, 4), 7: (2, 9, 4)}
    assert int(trace["neighbours"][7].max()) < 9
    # teacher-forced pieces compose to the full forward, bitwise
    with torch.no_grad():
        x = pyr.forward_stem(images)
        for i in range(len(pyr.backbone)):
            x = pyr.forward_entry(i, x)
        assert torch.equal(pyr.forward_head(x), pyr(images))
        assert torch.equal(pyr.forward_head(x), trace["logits"])


def test_neighbours_match_forward_and_margins() -> None:
    torch.manual_seed(0)
    model = R.build_pyramid(channels=(16, 32, 48, 64), depths=(1, 1, 1, 1), k=5, num_classes=3)
    R.calibrate_(model, R.structured_images(4, 224, seed=1), steps=2)
    images = R.structured_images(2, 224, seed=2)
    g = model.grapher(0)
    g.record_neighbours = True
    with torch.no_grad():
        x = model.forward_stem(images)
        model.forward_entry(0, x)
    assert torch.equal(g.last_neighbours, g.neighbours(x))
    assert g.relative_pos is g._relative_pos_for(3136, 196)  # no resize at 224
    margins = model.neighbour_margins(images)
    nodes = {i: nb.shape[:2] for i, nb in model.trace(images)["neighbours"].items()}
    assert {i: m.shape[:2] for i, m in margins.items()} == nodes
    assert all(bool((m >= 0).all()) for m in margins.values())
    set_margins = model.neighbour_margins(images, set_only=True)
    assert all(bool((set_margins[i] >= margins[i]).all()) for i in margins)
    # d = 1: only the boundary between the k-th and (k+1)-th candidate changes the set
    with torch.no_grad():
        h = g.fc1(x).double()
        nodes = torch.nn.functional.normalize(h.flatten(2), dim=1).transpose(1, 2)
        keys = torch.nn.functional.normalize(torch.nn.functional.avg_pool2d(h, 4).flatten(2), dim=1)
        dist = 2 - 2 * nodes @ keys + g.relative_pos.double()
        ranked = torch.sort(dist, dim=-1)[0]
    assert torch.allclose(g.neighbour_margin(x, set_only=True), ranked[..., 5] - ranked[..., 4],
                          atol=1e-9, rtol=0)


def test_helpers() -> None:
    a, b = R.structured_images(3, (32, 48), seed=4), R.structured_images(3, (32, 48), seed=4)
    assert a.dtype == torch.float32 and a.shape == (3, 3, 32, 48) and torch.equal(a, b)
    assert float(a.min()) == -1.0 and float(a.max()) == 1.0
    model = R.build_isotropic(channels=16, depth=1, num_classes=2)
    R.calibrate_(model, R.structured_images(4, 64, seed=0), steps=2)
    assert not model.training
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bn.momentum == 0.1 and int(bn.num_batches_tracked) == 2 for bn in bns)
    assert float(bns[0].running_var.min()) != 1.0 and float(model.pos_embed.detach().abs().max()) > 0
    assert 0.5 < float(bns[0].weight.detach().mean()) < 1.5
