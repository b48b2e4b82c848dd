"""Tests for src.weights.pth_reader: files are written with the real torch.save, read back without torch."""
from __future__ import annotations

import argparse
import collections
import io
import os
import pickle
import tarfile
import zipfile
from typing import Callable

import numpy as np
import pytest
import torch

from src.weights import pth_reader
from src.weights.pth_reader import PthFormatError, read_pth

FORMATS = ["zip", "legacy", "zip_no_byteorder"]


def _save(obj: object, path: str, fmt: str = "zip") -> str:
    if fmt == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    elif fmt == "zip_no_byteorder":  # like checkpoints from torch < 2.1
        torch.save(obj, path, _disable_byteorder_record=True)
    else:
        torch.save(obj, path)
    return path


def _ref(t: torch.Tensor) -> np.ndarray:
    """What read_pth must return for a tensor: bfloat16 widened to float32, conj resolved."""
    t = t.detach().resolve_conj().resolve_neg()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.contiguous().numpy()


def _assert_same(got: object, t: torch.Tensor) -> None:
    want = _ref(t)
    assert isinstance(got, np.ndarray), type(got)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert got.flags.c_contiguous and got.flags.writeable


def _rewrite_zip(src: str, dst: str, edit: Callable[[str, bytes], bytes | None]) -> str:
    """Copy a zip record by record; ``edit`` returns new bytes, or None to drop the record."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            data = edit(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)
    return dst


def _zip_with_pickle(path: str, payload: bytes) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")
    return path


def _tensor_zoo() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, 5, generator=gen)
    shared = torch.arange(10, dtype=torch.float32) * 1.5
    return {
        "f32": torch.randn(3, 4, generator=gen),
        "f16": torch.tensor([0.5, -1.25, 65504.0, float("inf")], dtype=torch.float16),
        "f64": torch.randn(2, 3, generator=gen, dtype=torch.float64),
        # values chosen so that bfloat16 bits are non-trivial in both halves
        "bf16": torch.tensor([1.5, -2.25, 3.0e38, 1.0e-38, 0.1, -7.0]).to(torch.bfloat16),
        "i64": torch.tensor([-(2**62), 0, 2**62 + 5]),
        "i32": torch.tensor([[-(2**31), 7], [2**31 - 1, -3]], dtype=torch.int32),
        "i16": torch.tensor([-300, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 1, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([[True, False, True]]),
        "c64": torch.tensor([1 + 2j, -3.5 - 0.25j], dtype=torch.complex64),
        "conj_view": torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64).conj(),
        "scalar": torch.tensor(123456789012, dtype=torch.int64),
        "empty": torch.empty(0, 3),
        "empty_bf16": torch.empty(2, 0, dtype=torch.bfloat16),
        "transposed": base.t(),
        "sliced": base[1:, 2:],  # non-contiguous, storage offset 7
        "strided": base[::2, ::3],
        "expanded": torch.tensor([1.0, 2.0, 3.0]).expand(2, 3),  # stride 0
        "shared_a": shared[:4],
        "shared_b": shared[3:].view(7, 1),  # same storage, offset 3
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_dtypes_views_and_shared_storage(tmp_path, fmt):
    zoo = _tensor_zoo()
    assert zoo["sliced"].storage_offset() == 7 and not zoo["sliced"].is_contiguous()
    assert zoo["shared_a"].untyped_storage().data_ptr() == zoo["shared_b"].untyped_storage().data_ptr()
    out = read_pth(_save(zoo, str(tmp_path / f"zoo_{fmt}.pth"), fmt))

    assert type(out) is dict and list(out) == list(zoo)
    for name, tensor in zoo.items():
        _assert_same(out[name], tensor)
    assert out["bf16"].dtype == np.float32
    assert out["scalar"].shape == () and int(out["scalar"]) == 123456789012
    np.testing.assert_array_equal(out["conj_view"], np.array([1 - 2j, 3 + 4j], np.complex64))
    # tensors sharing one storage come back as independent copies
    out["shared_a"][3] = -1.0
    assert out["shared_b"][0, 0] == 4.5


@pytest.mark.parametrize("fmt", FORMATS)
def test_parameters_become_arrays(tmp_path, fmt):
    frozen = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [3.5, 4.25]]), requires_grad=False)
    trained = torch.nn.Parameter(torch.linspace(-1, 1, 5))
    tagged = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    tagged.note = "written via _rebuild_parameter_with_state"
    out = read_pth(_save({"frozen": frozen, "trained": trained, "tagged": tagged},
                         str(tmp_path / "params.pth"), fmt))
    _assert_same(out["frozen"], frozen)
    _assert_same(out["trained"], trained)
    _assert_same(out["tagged"], tagged)


def _small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, bias=False),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 5),
    )
    model.train()
    model(torch.randn(2, 3, 6, 6))  # non-trivial running stats and num_batches_tracked
    return model


@pytest.mark.parametrize("fmt", FORMATS)
def test_module_state_dict_keys_order_and_values(tmp_path, fmt):
    state = _small_model().state_dict()
    out = read_pth(_save(state, str(tmp_path / "model.pth"), fmt))

    assert isinstance(out, collections.OrderedDict)
    assert list(out.keys()) == list(state.keys())
    for key, tensor in state.items():
        assert np.array_equal(out[key], tensor.numpy()), key
        assert out[key].dtype == tensor.numpy().dtype, key
    assert out["1.num_batches_tracked"].shape == () and int(out["1.num_batches_tracked"]) == 1
    assert out._metadata == state._metadata  # torch's per-module version info survives


@pytest.mark.parametrize("fmt", FORMATS)
def test_timm_style_training_checkpoint(tmp_path, fmt):
    state = _small_model().state_dict()
    ema = collections.OrderedDict((k, v.float() * 0.5 if v.is_floating_point() else v)
                                  for k, v in state.items())
    args = argparse.Namespace(model="vig_ti_224_gelu", lr=2e-3, epochs=300, amp=True,
                              mean=(0.485, 0.456, 0.406), data_dir=None)
    ckpt = {"epoch": 41, "arch": "vig_ti_224_gelu", "state_dict": state,
            "state_dict_ema": ema, "args": args, "metric": 74.25, "version": 2}
    out = read_pth(_save(ckpt, str(tmp_path / "checkpoint-41.pth.tar"), fmt))

    assert out["epoch"] == 41 and out["arch"] == "vig_ti_224_gelu"
    assert out["metric"] == 74.25 and out["version"] == 2
    assert vars(out["args"]) == vars(args)
    assert out["args"].lr == 2e-3 and out["args"].mean == (0.485, 0.456, 0.406)
    assert not isinstance(out["args"], argparse.Namespace)  # an inert stand-in, not the real class
    for key in state:
        np.testing.assert_array_equal(out["state_dict"][key], state[key].numpy())
        np.testing.assert_array_equal(out["state_dict_ema"][key], ema[key].numpy())


def test_archive_prefix_is_not_always_archive(tmp_path):
    path = _save({"w": torch.arange(3.0)}, str(tmp_path / "vig_b_82.6.pth"))
    with zipfile.ZipFile(path) as zf:
        assert all(not n.startswith("archive/") for n in zf.namelist())
    np.testing.assert_array_equal(read_pth(path)["w"], [0.0, 1.0, 2.0])


def test_big_endian_zip_is_byte_swapped(tmp_path):
    tensors = {  # data/<i> follows first use in this order
        "f32": torch.tensor([[1.5, -2.0], [3.25, 1e-3]]),
        "f16": torch.tensor([0.5, -3.0], dtype=torch.float16),
        "i64": torch.tensor([1, -2, 2**40]),
        "bf16": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
        "u8": torch.tensor([1, 255], dtype=torch.uint8),
    }
    itemsizes = [t.element_size() for t in tensors.values()]
    little = _save(tensors, str(tmp_path / "little.pth"))

    def to_big(name: str, data: bytes) -> bytes:
        if name.endswith("/byteorder"):
            return b"big"
        if "/data/" in name:
            size = itemsizes[int(name.rsplit("/", 1)[1])]
            if size > 1:
                return np.frombuffer(data, f"<u{size}").byteswap().tobytes()
        return data

    out = read_pth(_rewrite_zip(little, str(tmp_path / "big.pth"), to_big))
    for name, tensor in tensors.items():
        _assert_same(out[name], tensor)


# --------------------------------------------------------------------------- refusals


class _Evil:
    """Pickles as a call to os.system, like a booby-trapped checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_refuses_code_execution(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = _save({"w": torch.ones(2), "payload": _Evil(str(marker))}, str(tmp_path / "evil.pth"), fmt)
    with pytest.raises(PthFormatError) as err:
        read_pth(path)
    msg = str(err.value)
    assert "posix.system" in msg or "os.system" in msg
    assert "only tensor data" in msg
    assert not marker.exists()


def test_refuses_pickled_module(tmp_path):
    path = _save(torch.nn.Linear(2, 2), str(tmp_path / "whole_model.pth"))
    with pytest.raises(PthFormatError, match=r"torch\.nn\.modules\.linear\.Linear"):
        read_pth(path)


@pytest.mark.parametrize("payload", [
    # BUILD on the Namespace stand-in class itself
    b"\x80\x02cargparse\nNamespace\n}X\x03\x00\x00\x00fooK\x01sb.",
    # BUILD with slot state on a rebuild function
    b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__)s\x86b.",
    # BUILD on a storage type marker
    b"\x80\x02ctorch\nFloatStorage\nN}X\x07\x00\x00\x00np_codeX\x01\x00\x00\x00Os\x86b.",
    # calling a storage type marker
    b"\x80\x02ctorch\nFloatStorage\n)R.",
])
def test_hostile_opcodes_cannot_patch_the_reader(tmp_path, payload):
    with pytest.raises(PthFormatError, match="corrupted"):
        read_pth(_zip_with_pickle(str(tmp_path / "hostile.pth"), payload))
    assert not hasattr(pth_reader._ArgsNamespace, "foo")
    assert pth_reader._STORAGE_TYPES["FloatStorage"].np_code == "f4"
    assert pth_reader._rebuild_tensor_v2.__defaults__ == (None,)
    ok = read_pth(_save({"w": torch.tensor([1.0, 2.0])}, str(tmp_path / "ok.pth")))
    np.testing.assert_array_equal(ok["w"], [1.0, 2.0])


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_truncated_file(tmp_path, fmt):
    full = _save(_small_model().state_dict(), str(tmp_path / "full.pth"), fmt)
    raw = open(full, "rb").read()
    half = tmp_path / "half.pth"
    half.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PthFormatError, match="truncated"):
        read_pth(str(half))


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(PthFormatError, match="neither a torch.save zip archive nor"):
        read_pth(str(path))


@pytest.mark.parametrize("first_byte", [b"PK\x03\x04", b"\x80\x02"])
def test_random_bytes_behind_a_plausible_signature(tmp_path, first_byte):
    path = tmp_path / "noise.pth"
    path.write_bytes(first_byte + np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(PthFormatError, match="truncated or corrupted"):
        read_pth(str(path))


def test_text_file(tmp_path):
    path = tmp_path / "README.pth"
    path.write_text("model weights are coming soon\n")
    with pytest.raises(PthFormatError, match="not a|neither"):
        read_pth(str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(PthFormatError, match="empty"):
        read_pth(str(path))


def test_plain_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    with pytest.raises(PthFormatError, match="magic number"):
        read_pth(str(path))


def test_mindspore_checkpoint(tmp_path):
    import mindspore as ms

    path = str(tmp_path / "vig.ckpt")
    ms.save_checkpoint([{"name": "w", "data": ms.Tensor(np.ones(3, np.float32))}], path)
    with pytest.raises(PthFormatError, match="mindspore.load_checkpoint"):
        read_pth(path)


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_pth(str(tmp_path / "nope.pth"))


def test_directory(tmp_path):
    with pytest.raises(PthFormatError, match="directory"):
        read_pth(str(tmp_path))


def test_legacy_tar_format_is_refused(tmp_path):
    path = tmp_path / "ancient.pth"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("storages", "tensors", "pickle"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"\x80\x02N."))
    with pytest.raises(PthFormatError, match="tar-based format"):
        read_pth(str(path))


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/weights.bin", b"\x00" * 16)
    with pytest.raises(PthFormatError, match="data.pkl"):
        read_pth(str(path))


def test_torchscript_archive_is_refused(tmp_path):
    path = str(tmp_path / "scripted.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(PthFormatError, match="TorchScript"):
        read_pth(path)


def _one_tensor_zip(tmp_path) -> str:
    return _save({"w": torch.arange(4, dtype=torch.float32)}, str(tmp_path / "one.pth"))


def test_missing_storage_record(tmp_path):
    broken = _rewrite_zip(_one_tensor_zip(tmp_path), str(tmp_path / "broken.pth"),
                          lambda name, data: None if name.endswith("/data/0") else data)
    with pytest.raises(PthFormatError, match=r"one/data/0' is missing"):
        read_pth(broken)


def test_storage_record_shorter_than_declared(tmp_path):
    broken = _rewrite_zip(_one_tensor_zip(tmp_path), str(tmp_path / "broken.pth"),
                          lambda name, data: data[:10] if name.endswith("/data/0") else data)
    with pytest.raises(PthFormatError, match="holds 10 bytes but 16 are declared"):
        read_pth(broken)


def test_tensor_view_larger_than_its_storage(tmp_path):
    def grow_view(name: str, data: bytes) -> bytes:
        if name.endswith("/data.pkl"):
            assert data.count(b"K\x04\x85") == 1  # the size tuple (4,)
            return data.replace(b"K\x04\x85", b"K\x05\x85")
        return data

    broken = _rewrite_zip(_one_tensor_zip(tmp_path), str(tmp_path / "broken.pth"), grow_view)
    with pytest.raises(PthFormatError, match="needs 5 elements but its torch.FloatStorage holds only 4"):
        read_pth(broken)


def test_corrupted_storage_bytes_fail_the_crc(tmp_path):
    good = _one_tensor_zip(tmp_path)
    raw = bytearray(open(good, "rb").read())
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("one/data/0")
        # the payload follows the 30-byte local header, the name and the extra field
        header = raw[info.header_offset: info.header_offset + 30]
        start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") \
            + int.from_bytes(header[28:30], "little")
    raw[start + 5] ^= 0xFF
    broken = tmp_path / "flipped.pth"
    broken.write_bytes(bytes(raw))
    with pytest.raises(PthFormatError, match="corrupted"):
        read_pth(str(broken))
