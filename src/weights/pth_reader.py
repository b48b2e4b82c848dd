"""Read PyTorch checkpoints (``.pth`` / ``.pth.tar``) into numpy without PyTorch.

Why this exists: converting a timm/PyTorch checkpoint to MindSpore should not
require installing PyTorch, and ``torch.load`` unpickles arbitrary objects, so a
downloaded checkpoint could run code on this machine.  This reader understands
only the pieces of the ``torch.save`` formats that carry tensor data and refuses
every other pickled global, so nothing named in the file is ever imported or
called.

Supported on-disk formats:

* the zip format written by ``torch.save`` since torch 1.6
  (``<archive>/data.pkl`` plus one ``<archive>/data/<key>`` record per storage,
  optionally ``<archive>/byteorder``);
* the legacy pickle-stream format (``_use_new_zipfile_serialization=False``).

The older tar-based format of very early PyTorch releases is refused.
"""
from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
from typing import Any, Callable

import numpy as np

__all__ = ["PthFormatError", "read_pth"]

# What torch.save writes before the object in the legacy format.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_RE_SAVE_HINT = "re-download the file or re-save it with torch.save"


class PthFormatError(ValueError):
    """The file is not a readable PyTorch checkpoint, or holds more than tensor data."""


class _StorageType:
    """Inert stand-in for a ``torch.<X>Storage`` global.

    It is deliberately not callable and immutable, so a hostile pickle cannot
    use it in REDUCE/BUILD to run or alter anything.
    """

    __slots__ = ("torch_name", "np_code", "itemsize", "is_bfloat16")

    def __init__(self, torch_name: str, np_code: str, is_bfloat16: bool = False) -> None:
        object.__setattr__(self, "torch_name", torch_name)
        object.__setattr__(self, "np_code", np_code)
        object.__setattr__(self, "itemsize", np.dtype(np_code).itemsize)
        object.__setattr__(self, "is_bfloat16", is_bfloat16)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("storage type markers are read-only")

    def __repr__(self) -> str:
        return f"<torch.{self.torch_name} marker>"

    def file_dtype(self, byteorder: str) -> np.dtype:
        """The dtype of the raw bytes as they sit in the file (bfloat16 read as uint16)."""
        dtype = np.dtype(self.np_code)
        return dtype.newbyteorder(byteorder) if dtype.itemsize > 1 else dtype


_STORAGE_TYPES: dict[str, _StorageType] = {
    name: _StorageType(name, code, bf16)
    for name, code, bf16 in (
        ("FloatStorage", "f4", False),
        ("DoubleStorage", "f8", False),
        ("HalfStorage", "f2", False),
        ("BFloat16Storage", "u2", True),
        ("LongStorage", "i8", False),
        ("IntStorage", "i4", False),
        ("ShortStorage", "i2", False),
        ("CharStorage", "i1", False),
        ("ByteStorage", "u1", False),
        ("BoolStorage", "?", False),
        ("ComplexFloatStorage", "c8", False),
        ("ComplexDoubleStorage", "c16", False),
    )
}


class _Storage:
    """One storage's raw bytes; ``data`` is None while only the layout is being scanned."""

    __slots__ = ("stype", "numel", "data", "byteorder", "_flat")

    def __init__(self, stype: _StorageType, numel: int, data: bytes | memoryview | None,
                 byteorder: str = "<") -> None:
        # Read-only afterwards, like the markers: a pickle BUILD must not resize or retarget it.
        for name, value in (("stype", stype), ("numel", numel), ("data", data),
                            ("byteorder", byteorder), ("_flat", None)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("storages are read-only")

    def flat(self) -> np.ndarray:
        """A read-only 1-d view of the bytes, made once so shared storages are decoded once."""
        if self._flat is None:
            flat = np.frombuffer(self.data, dtype=self.stype.file_dtype(self.byteorder),
                                 count=self.numel)
            object.__setattr__(self, "_flat", flat)
        return self._flat


class _ArgsNamespace:
    """Inert replacement for ``argparse.Namespace`` (timm stores its training args as one).

    It only holds attributes; nothing from ``argparse`` is imported or called.
    Use ``vars(ns)`` to get them as a dict.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        # Accept only plain attribute dicts, written straight into __dict__ so
        # that keys such as "__class__" stay inert data.
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise PthFormatError("the pickled argparse.Namespace state is not a dict of attributes")
        self.__dict__.update(state)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _ArgsNamespace):
            return NotImplemented
        return vars(self) == vars(other)

    def __contains__(self, key: str) -> bool:
        return key in self.__dict__

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"Namespace({body})"


class _Rebuilder:
    """Immutable callable wrapper, so BUILD/setattr in a hostile pickle cannot patch our functions."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "_fn", fn)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("rebuild functions are read-only")

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)


def _check_int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PthFormatError(f"a tensor has an invalid {what} ({value!r}), so the pickle is corrupted")
    return value


def _check_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)):
        raise PthFormatError(f"a tensor has an invalid {what} ({value!r}), so the pickle is corrupted")
    return tuple(_check_int(v, what) for v in value)


def _tensor_from_storage(storage: Any, offset: Any, size: Any, stride: Any,
                         metadata: Any = None) -> np.ndarray | None:
    """Materialise one tensor view as its own C-contiguous numpy array."""
    if not isinstance(storage, _Storage):
        raise PthFormatError("a tensor does not refer to a tensor storage, so the pickle is corrupted")
    offset = _check_int(offset, "storage offset")
    shape = _check_int_tuple(size, "size")
    strides = _check_int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise PthFormatError(
            f"a tensor has size {shape} but stride {strides} of a different length, "
            "so the pickle is corrupted")
    if metadata is not None and not isinstance(metadata, dict):
        raise PthFormatError(f"a tensor has invalid metadata {metadata!r}, so the pickle is corrupted")
    flags = {k for k, v in (metadata or {}).items() if v}
    if flags - {"conj", "neg"}:
        raise PthFormatError(f"a tensor carries unsupported metadata {sorted(flags)}; "
                             "save plain tensors (call .resolve_conj().resolve_neg() first)")
    stype = storage.stype
    count = math.prod(shape)
    if count:
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
        if last >= storage.numel:
            raise PthFormatError(
                f"a tensor of shape {shape} (storage offset {offset}, strides {strides}) needs "
                f"{last + 1} elements but its torch.{stype.torch_name} holds only {storage.numel}, "
                f"so the file is corrupted; {_RE_SAVE_HINT}")
    if storage.data is None:  # layout-only scan of a legacy file
        return None
    if count == 0:
        out = np.zeros(shape, dtype=np.dtype(stype.np_code))
    else:
        flat = storage.flat()
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=shape, strides=tuple(s * flat.itemsize for s in strides),
            writeable=False)
        out = np.array(view, order="C", copy=True)
        if not out.dtype.isnative:
            out = out.astype(out.dtype.newbyteorder("="))
    if stype.is_bfloat16:
        # bfloat16 is the top half of a float32, so widening is exact.
        out = (out.astype(np.uint32) << 16).view(np.float32)
    if "conj" in flags:
        out = np.conj(out)
    if "neg" in flags:
        out = np.negative(out)
    return out


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> np.ndarray | None:
    return _tensor_from_storage(storage, offset, size, stride)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, metadata: Any = None) -> np.ndarray | None:
    # requires_grad and hooks are training state, meaningless for a numpy array.
    return _tensor_from_storage(storage, offset, size, stride, metadata)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> Any:
    if data is not None and not isinstance(data, np.ndarray):
        raise PthFormatError("an nn.Parameter does not wrap a tensor, so the pickle is corrupted")
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any,
                                  state: Any) -> Any:
    # Python attributes attached to a Parameter are dropped: only the values matter here.
    return _rebuild_parameter(data, requires_grad, backward_hooks)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _Rebuilder(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Rebuilder(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Rebuilder(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Rebuilder(_rebuild_parameter_with_state),
    ("argparse", "Namespace"): _ArgsNamespace,
    **{("torch", name): stype for name, stype in _STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals and delegates storages."""

    def __init__(self, stream: io.BytesIO,
                 resolve_storage: Callable[[tuple[Any, ...]], _Storage] | None) -> None:
        super().__init__(stream, encoding="utf-8")
        self._resolve_storage = resolve_storage

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise PthFormatError(
                f"refused to load the pickled global '{module}.{name}': only tensor data "
                "(state dicts of tensors, numbers, strings and containers) is accepted and "
                "nothing named in the file is imported or run; re-save the checkpoint with "
                "torch.save(model.state_dict(), path)") from None

    def persistent_load(self, pid: Any) -> Any:
        if self._resolve_storage is None:
            raise PthFormatError("a tensor reference appears outside the object pickle, "
                                 "so the file is corrupted")
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            kind = pid[0] if isinstance(pid, tuple) and pid else pid
            raise PthFormatError(f"unsupported persistent reference {kind!r}: only tensor "
                                 "storages are accepted; save a state_dict instead")
        return self._resolve_storage(pid)


def _unpickle(stream: io.BytesIO,
              resolve_storage: Callable[[tuple[Any, ...]], _Storage] | None, what: str) -> Any:
    """Run the restricted unpickler, turning low-level failures into one clear error."""
    try:
        return _RestrictedUnpickler(stream, resolve_storage).load()
    except (PthFormatError, MemoryError):
        raise
    except Exception as exc:  # pickle, EOF, struct, type errors from malformed opcodes
        raise PthFormatError(f"the {what} is truncated or corrupted ({type(exc).__name__}: "
                             f"{exc}); {_RE_SAVE_HINT}") from None


def _decode(value: Any) -> Any:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _check_storage_pid(stype: Any, key: Any, numel: Any) -> tuple[_StorageType, str, int]:
    if not isinstance(stype, _StorageType):
        raise PthFormatError(f"a storage has unsupported type {stype!r}; only the plain "
                             "torch.<Type>Storage dtypes are accepted")
    key = _decode(key)
    if not isinstance(key, (str, int)):
        raise PthFormatError(f"a storage has an invalid key {key!r}, so the pickle is corrupted")
    return stype, str(key), _check_int(numel, "storage size")


# --------------------------------------------------------------------------- zip format


def _read_zip(path: str) -> Any:
    try:
        zf = zipfile.ZipFile(path)
    except MemoryError:
        raise
    except Exception as exc:  # BadZipFile, EOFError, struct.error, ... on a damaged directory
        raise PthFormatError(
            f"the file starts like a torch.save zip archive but its zip directory is unreadable "
            f"({exc}), so it is truncated or corrupted; {_RE_SAVE_HINT}") from None
    with zf:
        names = zf.namelist()
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if not pickles:
            raise PthFormatError("the zip archive has no '<archive>/data.pkl' record, so it was not "
                                 "written by torch.save; pass a checkpoint written by torch.save")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}constants.pkl" in names or any(n.startswith(f"{prefix}code/") for n in names):
            raise PthFormatError("this is a TorchScript archive (torch.jit.save), not a torch.save "
                                 "checkpoint; save model.state_dict() with torch.save and read that")

        def record(name: str) -> bytes:
            try:
                return zf.read(name)
            except KeyError:
                raise PthFormatError(f"the record '{name}' is missing from the archive, so the "
                                     f"checkpoint is incomplete; {_RE_SAVE_HINT}") from None
            except MemoryError:
                raise
            except Exception as exc:  # CRC mismatch, zlib/EOF errors, bad local headers
                raise PthFormatError(f"the record '{name}' is corrupted ({type(exc).__name__}: "
                                     f"{exc}); {_RE_SAVE_HINT}") from None

        byteorder = "<"  # torch assumes little endian when the record is absent
        if f"{prefix}byteorder" in names:
            mark = record(f"{prefix}byteorder").strip()
            if mark not in (b"little", b"big"):
                raise PthFormatError(f"the byteorder record says {mark!r} instead of 'little' or "
                                     f"'big', so the archive is corrupted; {_RE_SAVE_HINT}")
            byteorder = "<" if mark == b"little" else ">"

        storages: dict[str, _Storage] = {}

        def resolve(pid: tuple[Any, ...]) -> _Storage:
            if len(pid) != 5:
                raise PthFormatError(f"a storage reference has {len(pid)} fields instead of 5, "
                                     "so the pickle is corrupted")
            stype, key, numel = _check_storage_pid(pid[1], pid[2], pid[4])
            if key not in storages:
                name = f"{prefix}data/{key}"
                data = record(name)
                need = numel * stype.itemsize
                if len(data) < need:
                    raise PthFormatError(
                        f"the storage record '{name}' holds {len(data)} bytes but {need} are "
                        f"declared ({numel} torch.{stype.torch_name} elements), so the file is "
                        f"truncated or corrupted; {_RE_SAVE_HINT}")
                storages[key] = _Storage(stype, numel, memoryview(data)[:need], byteorder)
            return storages[key]

        return _unpickle(io.BytesIO(record(pickles[0])), resolve, "pickle record 'data.pkl'")


# --------------------------------------------------------------------------- legacy format


def _read_legacy(raw: bytes) -> Any:
    stream = io.BytesIO(raw)
    magic = _unpickle(stream, None, "file header")
    if magic != _LEGACY_MAGIC:
        raise PthFormatError("the file is a pickle but lacks the torch.save magic number, so it is "
                             "not a PyTorch checkpoint; pass a file written by torch.save")
    version = _unpickle(stream, None, "file header")
    if version != _LEGACY_PROTOCOL:
        raise PthFormatError(f"the legacy checkpoint has protocol version {version!r} instead of "
                             f"{_LEGACY_PROTOCOL}; re-save it with a recent torch.save")
    _unpickle(stream, None, "file header")  # sys info; legacy storages are always little endian

    # Pass 1: learn each storage's dtype and size, which the raw data section
    # after the pickle needs but does not record itself.
    layout: dict[str, tuple[_StorageType, int]] = {}

    def scan(pid: tuple[Any, ...]) -> _Storage:
        stype, key, numel, view = _legacy_pid(pid)
        layout.setdefault(key, (stype, numel))
        if view is not None:
            return _Storage(stype, view[2], None)
        return _Storage(stype, numel, None)

    start = stream.tell()
    _unpickle(stream, scan, "object pickle")
    end = stream.tell()
    keys = _unpickle(stream, None, "storage key list")
    if not isinstance(keys, list):
        raise PthFormatError(f"the storage key list is a {type(keys).__name__}, so the file is "
                             f"corrupted; {_RE_SAVE_HINT}")

    view = memoryview(raw)
    pos = stream.tell()
    roots: dict[str, _Storage] = {}
    for key in keys:
        key = str(_decode(key))
        if key not in layout:
            raise PthFormatError(f"the data section lists storage {key!r} that no tensor uses, so "
                                 f"the file is corrupted; {_RE_SAVE_HINT}")
        stype, numel = layout[key]
        if pos + 8 > len(raw):
            raise PthFormatError(f"the file ends before the data of storage {key!r}, so it is "
                                 f"truncated; {_RE_SAVE_HINT}")
        (stored,) = struct.unpack_from("<q", raw, pos)
        pos += 8
        if stored != numel:
            raise PthFormatError(f"storage {key!r} holds {stored} elements in the data section but "
                                 f"{numel} are declared, so the file is corrupted; {_RE_SAVE_HINT}")
        nbytes = numel * stype.itemsize
        if pos + nbytes > len(raw):
            raise PthFormatError(f"the file ends inside the data of storage {key!r} ({nbytes} bytes "
                                 f"expected), so it is truncated; {_RE_SAVE_HINT}")
        roots[key] = _Storage(stype, numel, view[pos:pos + nbytes], "<")
        pos += nbytes
    missing = sorted(set(layout) - set(roots))
    if missing:
        raise PthFormatError(f"storages {missing} have no data section, so the file is truncated "
                             f"or corrupted; {_RE_SAVE_HINT}")

    # Pass 2: the same object pickle again, now with the bytes available.
    views: dict[str, _Storage] = {}

    def resolve(pid: tuple[Any, ...]) -> _Storage:
        stype, key, _numel, view_meta = _legacy_pid(pid)
        root = roots[key]
        if view_meta is None:
            return root
        view_key, offset, size = view_meta
        if view_key not in views:
            if offset + size > root.numel:
                raise PthFormatError(f"a storage view reaches past the end of storage {key!r}, so "
                                     f"the file is corrupted; {_RE_SAVE_HINT}")
            item = root.stype.itemsize
            views[view_key] = _Storage(root.stype, size,
                                       root.data[offset * item:(offset + size) * item], "<")
        return views[view_key]

    return _unpickle(io.BytesIO(raw[start:end]), resolve, "object pickle")


def _legacy_pid(pid: tuple[Any, ...]) -> tuple[_StorageType, str, int, tuple[str, int, int] | None]:
    if len(pid) != 6:
        raise PthFormatError(f"a storage reference has {len(pid)} fields instead of 6, so the "
                             "pickle is corrupted")
    stype, key, numel = _check_storage_pid(pid[1], pid[2], pid[4])
    view = pid[5]
    if view is not None:
        if not isinstance(view, tuple) or len(view) != 3:
            raise PthFormatError(f"a storage view {view!r} is malformed, so the pickle is corrupted")
        view = (str(_decode(view[0])), _check_int(view[1], "view offset"),
                _check_int(view[2], "view size"))
    return stype, key, numel, view


# --------------------------------------------------------------------------- entry point


def read_pth(path: str | os.PathLike[str]) -> object:
    """Load a torch.save checkpoint with every tensor and Parameter as a numpy array.

    Nothing from the file is imported or executed: pickled globals outside a
    small allow-list (tensor rebuilders, storage types, OrderedDict,
    argparse.Namespace) make it raise :class:`PthFormatError`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, "PyTorch checkpoint not found, check the path", path)
    if os.path.isdir(path):
        raise PthFormatError(f"cannot read PyTorch checkpoint '{path}': it is a directory; "
                             "pass the path of the .pth file itself")
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
        if not head:
            raise PthFormatError("the file is empty; " + _RE_SAVE_HINT)
        if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            return _read_zip(path)
        if head[0] == 0x80:  # pickle protocol >= 2, as torch.save writes
            with open(path, "rb") as fh:
                return _read_legacy(fh.read())
        if head[257:262] == b"ustar":
            raise PthFormatError("the file uses the tar-based format of very old PyTorch releases, "
                                 "which is not supported; load it with that old torch and re-save "
                                 "it with a recent torch.save")
        raise PthFormatError("the file is neither a torch.save zip archive nor a legacy torch.save "
                             "pickle (a MindSpore .ckpt, for instance, must be read with "
                             "mindspore.load_checkpoint); pass a checkpoint written by torch.save")
    except PthFormatError as exc:
        raise PthFormatError(f"cannot read PyTorch checkpoint '{path}': {exc}") from None
