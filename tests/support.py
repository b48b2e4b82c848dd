"""What the tests share besides fixtures (those are in conftest.py): the repository root, tiny image folders, a
short training command line, running an entry point in this process, comparing checkpoints, and the helpers of the
comparisons against the PyTorch reference. Tests import it (``from support import ...``); it imports the library
and tools only inside its functions."""
import contextlib
import hashlib
import io
import os

import mindspore as ms
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def family_representatives():
    """The smallest registered model of each family: what a test runs to cover every family cheaply."""
    from src.models import family_representatives as smallest
    return sorted(smallest().values())


@contextlib.contextmanager
def execution_mode(mode):
    previous = ms.get_context("mode")
    ms.set_context(mode=mode)
    try:
        yield
    finally:
        ms.set_context(mode=previous)


def write_image_folder(root, classes=3, train_per_class=12, val_per_class=4, size=32, seed=0):
    """A tiny ImageNet-style tree of learnable PNGs: class c is a stripe pattern at angle 60c degrees."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = os.path.join(root, split, f"class_{c}")
            os.makedirs(folder, exist_ok=True)
            angle = np.pi * c / classes
            for i in range(count):
                phase = rng.uniform(0, 2 * np.pi)
                wave = np.sin(2 * np.pi * 4 * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
                img = np.stack([wave, np.roll(wave, 3, 0), -wave], -1) * 100 + 128
                img += rng.normal(0, 10, img.shape)
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i}.png"))
    return str(root)


def snapshot(root):
    """Every file and folder under root (or the file root) with the hash of its bytes."""
    if os.path.isfile(root):
        with open(root, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                out[os.path.relpath(os.path.join(folder, name), root)] = hashlib.sha256(handle.read()).hexdigest()
    return out


WORKERS = (os.cpu_count() or 1) + 1  # one more than the machine has: the pipeline lowers it, with a warning
# job_args' evaluation transform; eval/export/predict of its checkpoints pass it too (absent keys would take the
# ModelZoo's ImageNet values, which the checkpoint refuses)
TRANSFORM = ("--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--crop_pct", "0.9")


def job_args(image_folder, out, *extra):
    """train.py's command line for a 2-epoch run of 6 steps each on ``image_folder`` (3 classes, 32 px)."""
    return ["--arch", "vig_nano_gelu", "--data_url", str(image_folder), "--train_url", str(out), "--num_classes", "3",
            "--image_size", "32", "--batch_size", "6", "--num_parallel_workers", str(WORKERS), "--epochs", "2",
            "--cooldown_epochs", "0", "--warmup_length", "1", "--base_lr", "0.002", "--drop_path_rate", "0.0",
            "--repeated_aug", "0", "--mix_up", "0.8", "--cutmix", "1.0", "--auto_augment", "rand-m9-mstd0.5-inc1",
            "--re_prob", "0.25", "--amp_level", "O2", "--ema_decay", "0.9", "--save_every", "1", "--keep_last", "1",
            "--log_every", "3", "--loss_scale", "1024", "--lr_batch_size", "null", *TRANSFORM, *extra]


def assert_same_checkpoints(got, expected):
    """Every entry of two checkpoints (read_checkpoint) is the same: tensors bit for bit, texts exactly."""
    import numpy as np

    assert set(got) == set(expected)
    for name, value in expected.items():
        if isinstance(value, str):
            assert got[name] == value, name
        else:
            np.testing.assert_array_equal(got[name].asnumpy(), value.asnumpy(), err_msg=name)


# The evaluation normalisation of the official models (their repositories' eval transforms): ViG, Pyramid ViG and
# SViG use timm's inception values, GraphConvNet ImageNet's statistics.
OFFICIAL_NORMALISATION = {"vig": (0.5, 0.5, 0.5, 0.5, 0.5, 0.5),
                          "graphconvnet": (0.485, 0.456, 0.406, 0.229, 0.224, 0.225)}


def assert_evaluated_as_officially(ckpt, arch, family, crop_pct=0.9, image_size=224):
    """A converted checkpoint makes eval.py without a config file use the official evaluation transform."""
    from src.app.builders import resolve_transform
    from src.app.config import load_config

    cfg, sources = resolve_transform(load_config(["--arch", arch, "--pretrained", ckpt], entry="eval"), ckpt)
    assert cfg.mean + cfg.std == OFFICIAL_NORMALISATION[family], arch
    assert (cfg.crop_pct, cfg.image_size) == (crop_pct, image_size), arch
    assert set(sources.values()) == {ckpt}, sources


class NoBadImages:
    """The bad-image policy (``bad_image_policy``) of a pipeline in which every image is readable."""

    def add(self, found):
        raise AssertionError(f"no image is unreadable here, got {found}")

    def summary(self):
        pass


def in_process(main, argv):
    """An entry point through run_cli in this process: (exit status, stderr)."""
    from src.app.cli import run_cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        run_cli(lambda: main(argv))
    return done.value.code, err.getvalue()


def relative_error(got, expected):
    """max |got - expected| / max |expected|."""
    import numpy as np

    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12))


def fit_prototype_head(model, images):
    """A classifier like a trained one, on a PyTorch reference model: class c's row is image c's normalised head
    feature.

    Randomly weighted models have near-equal logits, so the official float32 and float64 runs of the *same* model
    already disagree on their argmax; a fitted head has the margins trained models have, and predicted classes then
    compare two implementations end to end.
    """
    import torch

    with torch.no_grad():
        x = model.forward_stem(images)
        for entry in model.backbone:
            x = entry(x)
        feats = model.prediction[:4](torch.nn.functional.adaptive_avg_pool2d(x, 1)).flatten(1)
        weight = torch.zeros_like(model.prediction[4].weight)
        weight[:len(images), :, 0, 0] = 10 * feats / feats.norm(dim=1, keepdim=True)
        model.prediction[4].weight.copy_(weight)
        model.prediction[4].bias.zero_()
    return model


def assert_trains_in_this_mode(net, x, labels):
    """One training forward and backward of ``net`` on ``x``: finite loss and gradients, a gradient for every
    trainable parameter, the stem's first convolution learning; then a finite eval forward. Returns
    (gradients by parameter name, eval output)."""
    import numpy as np
    from mindspore import nn

    loss_fn = nn.CrossEntropyLoss()

    def forward(images, targets):
        return loss_fn(net(images), targets)

    net.set_train(True)
    loss, grads = ms.value_and_grad(forward, None, net.trainable_params())(x, labels)
    assert np.isfinite(loss.asnumpy())
    assert len(grads) == len(net.trainable_params())
    assert all(np.isfinite(g.asnumpy()).all() for g in grads)
    named = dict(zip([p.name for p in net.trainable_params()], grads))
    assert np.abs(named["stem.convs.0.weight"].asnumpy()).sum() > 0
    net.set_train(False)
    out = net(x).asnumpy()
    assert np.isfinite(out).all()
    return named, out
