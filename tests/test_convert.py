"""Official PyTorch checkpoints -> our models: the converted model computes the official function.

The official function is ``tools/torch_reference.py`` (an independent PyTorch implementation with
the official module tree, checked bit for bit against the official code). Checkpoints are real
``torch.save`` files. Comparisons are block by block with teacher forcing (each block gets the
reference's input), because a free-running float32 run legitimately flips near-tied neighbours;
neighbour lists are compared wherever the float64 margin between candidates exceeds 1e-5.
"""
import os
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

torch = pytest.importorskip("torch")

from tools import torch_reference as ref  # noqa: E402
from support import ROOT, assert_evaluated_as_officially, fit_prototype_head, relative_error  # noqa: E402
from src.models import PyramidVisionGNN, VisionGNN, create_model  # noqa: E402
from src.models.layers import knn_specs  # noqa: E402
from src.weights.checkpoint import CheckpointError, check_fits, load_model_weights  # noqa: E402
from src.weights.convert import (convert_official_checkpoint, select_state_dict, to_mindspore_names,  # noqa: E402
                                 to_official_names)
from src.weights.pth_reader import PthFormatError, read_pth  # noqa: E402

MARGIN = 1e-5   # candidate-distance gaps below this may order differently in another float32 implementation
RTOL = 1e-5     # block outputs: max |ours - official| / max |official|


def calibrated(model, size, seed=0):
    return ref.calibrate_(model, ref.structured_images(8, size, seed=seed), steps=2, seed=seed)


def save_pth(model, path):
    torch.save(model.state_dict(), path)
    return str(path)


def to_ms(x):
    return Tensor(x.detach().numpy())


def compare_block_by_block(official, ours, images):
    """Teacher-forced comparison of stem, every backbone entry (with its neighbours) and the head."""
    with torch.no_grad():
        x = official.forward_stem(images)
        ours_stem = ours.embed(to_ms(images)).asnumpy()
        assert relative_error(ours_stem, x.numpy()) < RTOL, "stem"
        graphers = set(official.grapher_entries())
        for i in range(len(official.backbone)):
            expected = official.forward_entry(i, x).numpy()
            got = ours.backbone[i](to_ms(x)).asnumpy()
            nodes_ok = np.ones(expected.shape[0:1] + expected.shape[2:], bool)  # (B, H, W)
            if i in graphers:
                want = official.neighbours(i, x).numpy()
                have = ours.backbone[i][0].neighbours(to_ms(x)).asnumpy()
                margin = official.grapher(i).neighbour_margin(x).numpy()
                clear = margin > MARGIN
                assert clear.mean() > 0.9, f"entry {i}: test input too tied to be useful"
                np.testing.assert_array_equal(have[clear], want[clear], err_msg=f"entry {i} neighbours")
                same = (have == want).all(-1)  # nodes whose neighbours agree compute the same output
                nodes_ok = same.reshape(nodes_ok.shape)
            mask = np.broadcast_to(nodes_ok[:, None], expected.shape)
            assert relative_error(got[mask], expected[mask]) < RTOL, f"entry {i}"
            x = torch.from_numpy(expected)
        logits = official.forward_head(x).numpy()
        assert relative_error(ours.forward_head(to_ms(x)).asnumpy(), logits) < RTOL, "head"


@pytest.mark.slow(reason="full-size models at 224 against the PyTorch reference")
@pytest.mark.parametrize("arch", ["vig_ti_224_gelu", "pvig_ti_224_gelu"])
def test_converted_official_model_computes_the_official_function(pynative, tmp_path, arch):
    images = ref.structured_images(4, 224, seed=42)
    official = fit_prototype_head(calibrated(ref.build_official(arch), 224), images)
    pth = save_pth(official, tmp_path / f"{arch}.pth")
    ckpt = str(tmp_path / f"{arch}.ckpt")
    info = convert_official_checkpoint(pth, ckpt, arch)
    assert (info["tensors"], info["num_classes"]) == (len([k for k in official.state_dict() if "num_batches" not in k]),
                                                      1000)
    assert_evaluated_as_officially(ckpt, arch, "vig")
    ours = create_model(arch, kernel_impl="cpu")
    load_model_weights(ours, ckpt, arch=arch)
    ours.set_train(False)
    compare_block_by_block(official, ours, images)
    # end to end, free running (graph mode): the official predictions
    ms.set_context(mode=ms.GRAPH_MODE)
    with torch.no_grad():
        expected = official(images).numpy().argmax(1)
    np.testing.assert_array_equal(expected, np.arange(4))
    np.testing.assert_array_equal(ours(to_ms(images)).asnumpy().argmax(1), expected)


@pytest.mark.parametrize("conv", ["mr", "edge", "sage", "gin"])
@pytest.mark.parametrize("family", ["isotropic", "pyramid"])
def test_every_graph_conv_at_a_non_224_size(pynative, family, conv):
    """Tiny models at 64x64 (position tables resized, k capped) in both kernel forms."""
    if family == "isotropic":
        official = ref.build_isotropic(channels=32, depth=3, k=4, num_classes=7, conv=conv, img_size=64)
        ks, ds = official.schedule()
        build = partial(VisionGNN, 32, knn_specs(ks, ds, conv))
    else:
        official = ref.build_pyramid(channels=(16, 32, 32, 48), depths=(1, 1, 2, 1), k=5, num_classes=7, conv=conv,
                                     img_size=64)
        ks, ds = official.schedule()
        build = partial(PyramidVisionGNN, (16, 32, 32, 48), (1, 1, 2, 1), knn_specs(ks, ds, conv))
    official = calibrated(official, 64, seed=3)
    weights = to_mindspore_names({k: v.numpy() for k, v in official.state_dict().items()})
    for impl in ("cpu", "native"):
        ours = build(num_classes=7, img_size=64, kernel_impl=impl)
        check_fits(ours, weights, "reference")
        ms.load_param_into_net(ours, {n: ms.Parameter(Tensor(v), name=n) for n, v in weights.items()},
                               strict_load=True)
        ours.set_train(False)
        compare_block_by_block(official, ours, ref.structured_images(2, 64, seed=5))


@pytest.mark.parametrize("arch", ["pvig_ti_224_gelu", "pgraphconvnet_ti"])
def test_our_names_map_back_to_the_official_state_dict(arch):
    """``to_official_names`` gives the official keys (PyTorch fills in num_batches_tracked) and inverts
    ``to_mindspore_names``."""
    ours = {p.name: p.asnumpy() for p in create_model(arch, kernel_impl="native").get_parameters()}
    official = to_official_names(ours)
    assert set(official) == {k for k in ref.build_named(arch).state_dict() if "num_batches" not in k}
    back = to_mindspore_names(official)
    assert list(back) == list(ours) and all(np.array_equal(back[k], ours[k]) for k in ours)


@pytest.mark.slow(reason="the official schedules step by step")
def test_schedules_equal_the_reference():
    for name in ref.OFFICIAL_CONFIGS:
        graphers = [c for _, c in create_model(name, kernel_impl="native").cells_and_names()
                    if type(c).__name__ == "Grapher"]
        specs = [g.graph_spec for g in graphers]
        assert ([s.k for s in specs], [s.dilation for s in specs]) == ref.OFFICIAL_SCHEDULES[name], name


def test_training_checkpoint_with_ema_and_module_prefix(tmp_path):
    official = ref.build_official("vig_ti_224_gelu", num_classes=10)
    state = official.state_dict()
    ema = {k: (v + 1 if v.is_floating_point() else v) for k, v in state.items()}
    path = tmp_path / "train.pth.tar"
    torch.save({"epoch": 300, "state_dict": {f"module.{k}": v for k, v in state.items()}, "state_dict_ema": ema,
                "args": __import__("argparse").Namespace(lr=2e-3)}, path)
    plain = to_mindspore_names(select_state_dict(read_pth(str(path))))
    averaged = to_mindspore_names(select_state_dict(read_pth(str(path)), use_ema=True))
    np.testing.assert_array_equal(plain["stem.convs.1.gamma"], state["stem.convs.1.weight"].numpy())
    np.testing.assert_array_equal(averaged["stem.convs.1.gamma"], ema["stem.convs.1.weight"].numpy())
    assert "stem.convs.1.num_batches_tracked" not in plain and "stem.convs.1.moving_variance" in plain
    info = convert_official_checkpoint(str(path), str(tmp_path / "ema.ckpt"), "vig_ti_patch16_224", use_ema=True)
    assert info["num_classes"] == 10


def test_refusals(tmp_path):
    good = save_pth(ref.build_official("pvig_s_224_gelu"), tmp_path / "pvig_s.pth")
    with pytest.raises(CheckpointError, match=r"'pos_embed' has shape \(1, 80, 56, 56\).*\(1, 48, 56, 56\)"):
        convert_official_checkpoint(good, str(tmp_path / "x.ckpt"), "pvig_ti_224_gelu")
    with pytest.raises(CheckpointError, match=r"'pos_embed' has shape \(1, 80, 56, 56\).*\(1, 320, 14, 14\)"):
        convert_official_checkpoint(good, str(tmp_path / "x.ckpt"), "vig_s_224_gelu")
    state = torch.load(good)
    state["backbone.99.0.fc1.0.weight"] = state.pop("backbone.2.conv.0.weight")
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"1 model parameters are missing from it \(first: "
                                              r"'backbone.2.conv.0.weight'\).*'backbone.99.0.fc1.0.weight'"):
        convert_official_checkpoint(str(tmp_path / "renamed.pth"), str(tmp_path / "x.ckpt"), "pvig_s_224_gelu")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(good, "rb").read()[:100_000])
    with pytest.raises(PthFormatError):
        convert_official_checkpoint(str(truncated), str(tmp_path / "x.ckpt"), "pvig_s_224_gelu")
    with pytest.raises(CheckpointError, match="no 'state_dict_ema'"):
        convert_official_checkpoint(good, str(tmp_path / "x.ckpt"), "pvig_s_224_gelu", use_ema=True)
    existing = tmp_path / "exists.ckpt"
    existing.write_bytes(b"mine")
    with pytest.raises(CheckpointError, match="already exists"):
        convert_official_checkpoint(good, str(existing), "pvig_s_224_gelu")
    assert existing.read_bytes() == b"mine"
    assert not (tmp_path / "x.ckpt").exists()


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_command_line_refuses_code_with_one_line(tmp_path):
    evil = RunsCode()
    evil.marker = str(tmp_path / "pwned")
    torch.save({"pos_embed": torch.zeros(1), "payload": evil}, tmp_path / "evil.pth")
    done = subprocess.run([sys.executable, "convert_checkpoint.py", "--arch", "vig_ti_224_gelu", "--src",
                           str(tmp_path / "evil.pth"), "--dst", str(tmp_path / "out.ckpt")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "system" in done.stderr
    assert not os.path.exists(evil.marker) and not (tmp_path / "out.ckpt").exists()
