"""Reads tensors saved by ``torch.save`` without torch, without running pickled code, and
without allocating more than the file's tensors need.

A ``.pt`` file is a pickle whose tensors are rebuilt by calling
``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
backward_hooks[, metadata])`` on raw storages referenced through ``persistent_load``. Two
containers exist:

* zip format (torch >= 1.6, the default): a zip archive ``<prefix>/data.pkl`` (the pickle),
  ``<prefix>/data/<key>`` (raw storage bytes, stored uncompressed), ``<prefix>/version``
  and, in newer files, ``<prefix>/byteorder`` ("little" or "big"; little when absent).
  Persistent ids are ``("storage", storage_type, key, location, numel)``.
* legacy format (``_use_new_zipfile_serialization=False``): consecutive pickles
  (magic number, protocol version 1001, sys_info, the object, the list of storage keys)
  followed by, per key, an int64 element count and the raw bytes. Persistent ids are
  ``("storage", storage_type, key, location, numel, view_metadata)``.

Safety (these files come from the internet):

* Unpickling goes through :class:`ddu_tf.io.safe_pickle.RestrictedUnpickler`: only the
  globals of `ALLOWED_GLOBALS` (the tensor-rebuild function, the storage classes,
  ``collections.OrderedDict``) resolve, to local stand-ins; any other global (``os.system``,
  ``builtins.eval``, ...) raises `UnsafePickleError` before anything is called.
* Nothing is read before every declared size has been checked. The pickle is read first
  (at most `MAX_PICKLE_BYTES`), recording storages and tensors without data; then, per
  storage: the tensors using it must fit in it (offset + extent <= numel), it must not be far
  larger than they need (storage bytes <= `STORAGE_RATIO` x their bytes + `SLACK_BYTES`), its
  zip entry must hold exactly ``numel * itemsize`` bytes, uncompressed (as ``torch.save``
  writes them) and inside the archive, and a legacy element count must equal the declared
  one and fit in the bytes left in the file. The tensors' total size must not exceed
  `STORAGE_RATIO` x the storages' (stride-0 expansions). Storages are then read into
  preallocated arrays in chunks, so peak memory is the storages plus the output tensors:
  a small multiple of the real tensor size.
* Every failure is a `TorchFileFormatError` or `UnsafePickleError` (never ``MemoryError``,
  ``KeyError``, or zipfile / pickle internals); a missing file is ``FileNotFoundError``.

Example:
    samples = load_pt_tensor("amnist_samples.pt")   # float32 [12000, 1, 28, 28]
"""
from __future__ import annotations

import collections
import io
import math
import os
import zipfile
from typing import Any, Dict, List, Optional

import numpy as np

from ddu_tf.io.safe_pickle import (BoundedReader, RestrictedUnpickler, UnsafePickleError,
                                   check_shape, restricted_load)

__all__ = ["load_pt", "load_pt_tensor", "TorchFileFormatError", "UnsafePickleError",
           "STORAGE_DTYPES", "ALLOWED_GLOBALS"]

#: torch storage class name -> NumPy dtype (element type of the raw bytes).
STORAGE_DTYPES: Dict[str, np.dtype] = {
    "FloatStorage": np.dtype("float32"),
    "DoubleStorage": np.dtype("float64"),
    "HalfStorage": np.dtype("float16"),
    "LongStorage": np.dtype("int64"),
    "IntStorage": np.dtype("int32"),
    "ShortStorage": np.dtype("int16"),
    "CharStorage": np.dtype("int8"),
    "ByteStorage": np.dtype("uint8"),
    "BoolStorage": np.dtype("bool"),
}

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

#: Largest ``data.pkl`` (the pickle without the storages) accepted, in bytes.
MAX_PICKLE_BYTES = 64 << 20
#: A storage may be at most this many times the bytes of the tensors using it (plus
#: `SLACK_BYTES`), and the tensors at most this many times the storages' bytes.
STORAGE_RATIO = 4
#: Allowance for tiny tensors (a 1-element view of a 1000-element storage is fine).
SLACK_BYTES = 1 << 16
_CHUNK_BYTES = 1 << 22  # storages are read in 4 MiB chunks into preallocated arrays


class TorchFileFormatError(ValueError):
    """The file is not a well-formed torch.save file (zip or legacy), or declares sizes that
    do not match its tensors or its length."""


class _StorageType:
    """Stand-in for ``torch.<X>Storage``: only carries the element dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _StorageRef:
    """A storage declared by the pickle; ``array`` is filled only after every check."""

    __slots__ = ("key", "dtype", "numel", "tensors", "array")

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.tensors: List[_TensorRef] = []
        self.array: Optional[np.ndarray] = None

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class _TensorRef:
    """A tensor declared by the pickle: a strided view of a storage, not yet read."""

    __slots__ = ("storage", "offset", "size", "stride", "numel", "extent")

    def __init__(self, storage: _StorageRef, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.numel = math.prod(size)
        # Elements [offset, extent) of the storage are read (none for an empty tensor).
        self.extent = (offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
                       if self.numel else 0)

    def materialise(self) -> np.ndarray:
        """``out[i_0, ..., i_k] = storage[offset + sum_j i_j * stride[j]]``, a contiguous copy."""
        flat = self.storage.array
        if self.numel == 0:
            return np.zeros(self.size, dtype=flat.dtype)
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size,
            strides=tuple(s * flat.itemsize for s in self.stride), writeable=False)
        return np.array(view, order="C")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: checks the geometry, reads nothing."""
    del requires_grad, backward_hooks, metadata  # autograd state is irrelevant for arrays
    if not isinstance(storage, _StorageRef):
        raise TorchFileFormatError(
            f"_rebuild_tensor_v2 expects a storage, received {type(storage).__name__}.")
    size = check_shape(size, TorchFileFormatError, "tensor size")
    stride = check_shape(stride, TorchFileFormatError, "tensor stride")
    if (len(size) != len(stride) or not isinstance(storage_offset, int)
            or isinstance(storage_offset, bool) or storage_offset < 0):
        raise TorchFileFormatError(
            f"Bad tensor geometry: size={size}, stride={stride}, offset={storage_offset!r}.")
    tensor = _TensorRef(storage, storage_offset, size, stride)
    storage.tensors.append(tensor)
    return tensor


#: (module, name) -> local object. Everything else is rejected.
ALLOWED_GLOBALS: Dict[tuple, Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _StorageTable:
    """``persistent_load`` of the tensor pickle: records each storage once, reads nothing."""

    def __init__(self, pid_length: int):
        self.pid_length = pid_length
        self.storages: Dict[str, _StorageRef] = {}

    def __call__(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == self.pid_length and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], (str, int))
                and isinstance(pid[4], int) and not isinstance(pid[4], bool) and pid[4] >= 0
                and len(str(pid[2])) <= 64):
            raise TorchFileFormatError(f"Unexpected persistent id {pid!r}: expected "
                                       f"('storage', <type>, key, location, numel"
                                       f"{', view' if self.pid_length == 6 else ''}).")
        if self.pid_length == 6 and pid[5] is not None:
            raise TorchFileFormatError("Legacy storage views are not supported.")
        key, dtype, numel = str(pid[2]), pid[1].dtype, pid[4]
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = _StorageRef(key, dtype, numel)
        elif ref.dtype != dtype or ref.numel != numel:
            raise TorchFileFormatError(
                f"Storage {key} is declared twice: {ref.numel} x {ref.dtype} and "
                f"{numel} x {dtype}.")
        return ref


def _check_storages(storages: Dict[str, _StorageRef], what: str) -> None:
    """Checks every storage against the tensors using it, before any storage is read."""
    total_out = total_storage = 0
    for ref in storages.values():
        needed = max((t.extent for t in ref.tensors), default=0)
        if needed > ref.numel:
            raise TorchFileFormatError(
                f"{what}: a tensor reads element {needed - 1} of storage {ref.key}, which "
                f"declares {ref.numel} elements (storage too small for its tensors).")
        out_bytes = sum(t.numel for t in ref.tensors) * ref.dtype.itemsize
        if ref.nbytes > STORAGE_RATIO * out_bytes + SLACK_BYTES:
            raise TorchFileFormatError(
                f"{what}: storage {ref.key} declares {ref.nbytes} bytes but the tensors using "
                f"it hold {out_bytes} (more than {STORAGE_RATIO}x): refused. A view of a "
                "larger tensor saves the whole storage; save a copy (tensor.clone()) instead.")
        total_out += out_bytes
        total_storage += ref.nbytes
    if total_out > STORAGE_RATIO * total_storage + SLACK_BYTES:
        raise TorchFileFormatError(
            f"{what}: the tensors declare {total_out} bytes from {total_storage} bytes of "
            f"storage (expanded, stride-0 tensors beyond {STORAGE_RATIO}x): refused.")


def _materialise(obj: Any, depth: int = 0) -> Any:
    if depth > 100:
        raise TorchFileFormatError("Containers nested more than 100 deep.")
    if isinstance(obj, _TensorRef):
        return obj.materialise()
    if isinstance(obj, _StorageRef):
        raise TorchFileFormatError("Bare storages (not inside a tensor) are not supported.")
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v, depth + 1)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, depth + 1) for v in obj)
    return obj


def _read_into(read, array: np.ndarray, what: str) -> None:
    """Fills ``array`` from ``read(n) -> bytes`` in chunks (no second full-size buffer)."""
    view = memoryview(array.reshape(-1).view(np.uint8))
    done = 0
    while done < view.nbytes:
        chunk = read(min(_CHUNK_BYTES, view.nbytes - done))
        if not chunk:
            raise TorchFileFormatError(f"{what}: file ends {view.nbytes - done} bytes early "
                                       "(truncated file?).")
        view[done:done + len(chunk)] = chunk
        done += len(chunk)


def _zip_entry(zf: zipfile.ZipFile, name: str, archive_bytes: int, what: str,
               max_bytes: int, stored_only: bool) -> zipfile.ZipInfo:
    """The entry ``name``, after checking its declared sizes against limits and the archive."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise TorchFileFormatError(f"{what}: missing zip entry {name}.") from None
    if info.file_size > max_bytes:
        raise TorchFileFormatError(f"{what}: entry {name} declares {info.file_size} bytes; at "
                                   f"most {max_bytes} are expected.")
    if info.compress_size > archive_bytes:
        raise TorchFileFormatError(f"{what}: entry {name} declares {info.compress_size} "
                                   f"compressed bytes in a {archive_bytes}-byte file "
                                   "(truncated file?).")
    if info.compress_type != zipfile.ZIP_STORED and (
            stored_only or info.compress_type != zipfile.ZIP_DEFLATED):
        raise TorchFileFormatError(
            f"{what}: entry {name} is compressed (method {info.compress_type}); torch.save "
            "writes storages uncompressed. Re-save the tensor with torch.save.")
    return info


def _read_zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: np.ndarray,
                    what: str) -> None:
    with zf.open(info) as fh:
        _read_into(fh.read, out, f"{what}:{info.filename}")
        if fh.read(1):  # also completes zipfile's CRC check
            raise TorchFileFormatError(f"{what}: entry {info.filename} is longer than declared.")


def _load_zip(f, archive_bytes: int, what: str) -> Any:
    zf = zipfile.ZipFile(f)
    pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
        raise TorchFileFormatError(f"{what}: zip archive without exactly one "
                                   "'<prefix>/data.pkl' entry; not a torch.save file.")
    prefix = pkl[0][: -len("data.pkl")]
    order = "<"
    if prefix + "byteorder" in zf.namelist():
        info = _zip_entry(zf, prefix + "byteorder", archive_bytes, what, 16, False)
        raw = np.empty(info.file_size, np.uint8)
        _read_zip_entry(zf, info, raw, what)
        text = raw.tobytes().decode("ascii", "replace").strip()
        if text not in ("little", "big"):
            raise TorchFileFormatError(f"{what}: unknown byteorder {text!r}.")
        order = "<" if text == "little" else ">"

    info = _zip_entry(zf, pkl[0], archive_bytes, what, MAX_PICKLE_BYTES, False)
    raw = np.empty(info.file_size, np.uint8)
    _read_zip_entry(zf, info, raw, what)
    table = _StorageTable(pid_length=5)
    pickle_bytes = raw.tobytes()
    del raw
    unpickler = RestrictedUnpickler(
        BoundedReader(io.BytesIO(pickle_bytes), len(pickle_bytes), TorchFileFormatError, what),
        ALLOWED_GLOBALS, persistent_load=table)
    obj = restricted_load(unpickler, TorchFileFormatError, what)
    _check_storages(table.storages, what)

    entries = {}
    for ref in table.storages.values():
        name = f"{prefix}data/{ref.key}"
        info = _zip_entry(zf, name, archive_bytes, what, ref.nbytes, True)
        if info.file_size != ref.nbytes:
            raise TorchFileFormatError(
                f"{what}: entry {name} holds {info.file_size} bytes; the pickle declares "
                f"{ref.numel} x {ref.dtype} = {ref.nbytes} bytes (wrong size or dtype).")
        entries[ref.key] = info
    for ref in table.storages.values():
        array = np.empty(ref.numel, ref.dtype.newbyteorder(order))
        _read_zip_entry(zf, entries[ref.key], array, what)
        ref.array = array.astype(ref.dtype, copy=False)
    return _materialise(obj)


def _load_legacy(f, file_bytes: int, what: str) -> Any:
    reader = BoundedReader(f, file_bytes, TorchFileFormatError, what)

    def plain_pickle():
        return restricted_load(RestrictedUnpickler(reader, {}), TorchFileFormatError, what)

    magic, protocol, sys_info = plain_pickle(), plain_pickle(), plain_pickle()
    if magic != LEGACY_MAGIC_NUMBER or protocol != LEGACY_PROTOCOL_VERSION:
        raise TorchFileFormatError(
            f"{what}: bad legacy header (magic={magic!r}, protocol={protocol!r}); not a "
            "torch.save file.")
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    order = "<" if little else ">"
    table = _StorageTable(pid_length=6)
    obj = restricted_load(RestrictedUnpickler(reader, ALLOWED_GLOBALS, persistent_load=table),
                          TorchFileFormatError, what)
    keys = plain_pickle()
    if (not isinstance(keys, list) or len(keys) != len(table.storages)
            or set(map(str, keys)) != set(table.storages)):
        raise TorchFileFormatError(f"{what}: storage key list does not match the pickle.")
    _check_storages(table.storages, what)
    needed = sum(8 + ref.nbytes for ref in table.storages.values())
    if needed != reader.remaining:
        raise TorchFileFormatError(
            f"{what}: the storages declare {needed} bytes (counts included) but "
            f"{reader.remaining} bytes follow the pickles (truncated or altered file).")
    for key in keys:
        ref = table.storages[str(key)]
        count = int(np.frombuffer(reader.read(8), dtype=order + "i8")[0])
        if count != ref.numel:
            raise TorchFileFormatError(
                f"{what}: storage {key} holds {count} elements; the pickle declares "
                f"{ref.numel}.")
        array = np.empty(ref.numel, ref.dtype.newbyteorder(order))
        _read_into(reader.read, array, what)
        ref.array = array.astype(ref.dtype, copy=False)
    return _materialise(obj)


def load_pt(path: os.PathLike) -> Any:
    """Loads a ``torch.save`` file (zip or legacy format) into NumPy, executing no code.

    Args:
      path: the ``.pt`` file.

    Returns:
      The saved object with every tensor replaced by a contiguous ``np.ndarray`` of the same
      shape and dtype (float32 for ``torch.float32``, int64 for ``torch.int64``, ...).

    Raises:
      FileNotFoundError: no such file.
      UnsafePickleError: the pickle references anything but tensor-rebuild globals.
      TorchFileFormatError: not a torch.save file, truncated, corrupt, or declaring sizes
        that do not match its tensors or its length (checked before anything is read).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        file_bytes = os.fstat(f.fileno()).st_size
        head = f.read(4)
        f.seek(0)
        if head[:2] == b"PK":
            load = _load_zip
        elif head[:1] == b"\x80":
            load = _load_legacy
        else:
            raise TorchFileFormatError(
                f"{path}: neither a zip archive nor a pickle (first bytes {head.hex()}); not a "
                "torch.save file.")
        try:
            return load(f, file_bytes, path)
        except (TorchFileFormatError, UnsafePickleError):
            raise
        except (Exception, MemoryError) as e:  # noqa: B902 -- zipfile/numpy internals, mapped
            raise TorchFileFormatError(
                f"{path}: corrupt or truncated file ({type(e).__name__}: {e}).") from e


def load_pt_tensor(path: os.PathLike, dtype: Optional[np.dtype] = None,
                   ndim: Optional[int] = None) -> np.ndarray:
    """Loads a ``.pt`` file that holds a single tensor and checks its dtype and rank.

    Raises:
      FileNotFoundError: no such file.
      UnsafePickleError: the pickle references anything but tensor-rebuild globals.
      TorchFileFormatError: the file is malformed, holds something else, or dtype/ndim differ.
    """
    obj = load_pt(path)
    if not isinstance(obj, np.ndarray):
        raise TorchFileFormatError(f"{path}: expected a single tensor, found {type(obj).__name__}.")
    if dtype is not None and obj.dtype != np.dtype(dtype):
        raise TorchFileFormatError(f"{path}: expected dtype {np.dtype(dtype)}, found {obj.dtype}.")
    if ndim is not None and obj.ndim != ndim:
        raise TorchFileFormatError(f"{path}: expected {ndim} dims, found shape {obj.shape}.")
    return obj
