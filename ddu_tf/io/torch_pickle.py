"""Reads tensors saved by ``torch.save`` without torch and without running pickled code.

A ``.pt`` file is a pickle whose tensors are rebuilt by calling
``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
backward_hooks[, metadata])`` on raw storages referenced through ``persistent_load``. Two
containers exist:

* zip format (torch >= 1.6, the default): a zip archive ``<prefix>/data.pkl`` (the pickle),
  ``<prefix>/data/<key>`` (raw storage bytes), ``<prefix>/version`` and, in newer files,
  ``<prefix>/byteorder`` ("little" or "big"; little when absent). Persistent ids are
  ``("storage", storage_type, key, location, numel)``.
* legacy format (``_use_new_zipfile_serialization=False``): consecutive pickles
  (magic number, protocol version 1001, sys_info, the object, the list of storage keys)
  followed by, per key, an int64 element count and the raw bytes. Persistent ids are
  ``("storage", storage_type, key, location, numel, view_metadata)``.

`RestrictedUnpickler` resolves ONLY the globals in `ALLOWED_GLOBALS` (the tensor-rebuild
function, the storage classes, ``collections.OrderedDict``) to local NumPy stand-ins; any other
global (``os.system``, ``builtins.eval``, ...) raises `UnsafePickleError` before anything is
called, so a malicious file cannot execute code.

Example:
    samples = load_pt_tensor("amnist_samples.pt")   # float32 [12000, 1, 28, 28]
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any, Dict, Optional

import numpy as np

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


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the tensor-rebuild allow-list."""


class TorchFileFormatError(ValueError):
    """The file is not a well-formed torch.save file (zip or legacy)."""


class _StorageType:
    """Stand-in for ``torch.<X>Storage``: only carries the element dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """A raw storage: a flat NumPy array of ``numel`` elements."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """NumPy version of ``torch._utils._rebuild_tensor_v2``.

    ``out[i_0, ..., i_k] = storage[storage_offset + sum_j i_j * stride[j]]`` (strides in
    elements). Bounds are checked against the storage size; returns a contiguous copy.
    """
    del requires_grad, backward_hooks, metadata  # autograd state is irrelevant for arrays
    if not isinstance(storage, _Storage):
        raise TorchFileFormatError(
            f"_rebuild_tensor_v2 expects a storage, received {type(storage).__name__}.")
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    offset = int(storage_offset)
    flat = storage.array
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
        raise TorchFileFormatError(
            f"Bad tensor geometry: size={size}, stride={stride}, offset={offset}.")
    if 0 in size:
        return np.zeros(size, dtype=flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise TorchFileFormatError(
            f"Tensor of size {size}, stride {stride}, offset {offset} reads element {last} of a "
            f"storage of {flat.size} elements (truncated file?).")
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride),
        writeable=False)
    return np.array(view, order="C")


#: (module, name) -> local object. Everything else is rejected.
ALLOWED_GLOBALS: Dict[tuple, Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only knows the tensor-rebuild globals and raw storages.

    Args:
      file: binary file object positioned at the pickle.
      load_storage: ``(storage_type, key, numel) -> flat np.ndarray`` giving a storage's data.
    """

    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage
        self._storages: Dict[str, _Storage] = {}

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"Refusing to load global {module}.{name}: only tensor data "
                f"({sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS)}) is accepted. The file is "
                "not a plain tensor saved by torch.save, or it is malicious.") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(f"Unexpected persistent id {pid!r}: expected a storage.")
        if self._load_storage is None:
            raise TorchFileFormatError(f"Storage reference {pid!r} outside the tensor pickle.")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if len(pid) == 6 and pid[5] is not None:
            raise TorchFileFormatError("Legacy storage views are not supported.")
        if key not in self._storages:
            self._storages[key] = _Storage(self._load_storage(storage_type, key, numel))
        return self._storages[key]


def _check_numel(arr: np.ndarray, numel: int, where: str) -> np.ndarray:
    if arr.size < numel:
        raise TorchFileFormatError(
            f"{where}: storage holds {arr.size} elements, the pickle declares {numel} "
            "(truncated file?).")
    return arr[:numel]


def _load_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise TorchFileFormatError(
                f"{path}: zip archive without exactly one '<prefix>/data.pkl' entry; not a "
                "torch.save file.")
        prefix = pkl[0][: -len("data.pkl")]
        order = "little"
        if prefix + "byteorder" in names:
            order = zf.read(prefix + "byteorder").decode("ascii").strip()
            if order not in ("little", "big"):
                raise TorchFileFormatError(f"{path}: unknown byteorder {order!r}.")

        def load_storage(storage_type: _StorageType, key: str, numel: int) -> np.ndarray:
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise TorchFileFormatError(f"{path}: missing storage entry {entry}.")
            dtype = storage_type.dtype.newbyteorder("<" if order == "little" else ">")
            raw = zf.read(entry)
            if len(raw) % dtype.itemsize:
                raise TorchFileFormatError(f"{path}: storage {entry} has a partial element.")
            arr = np.frombuffer(raw, dtype=dtype).astype(storage_type.dtype)
            return _check_numel(arr, numel, f"{path}:{entry}")

        return RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), load_storage).load()


class _LazyTensor:
    """A legacy-format tensor whose storage bytes come after the pickle."""

    __slots__ = ("args",)

    def __init__(self, args):
        self.args = args


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return _rebuild_tensor_v2(*obj.args)
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


class _LegacyUnpickler(RestrictedUnpickler):
    """Defers tensor rebuilding until the storages (stored after the pickle) are read."""

    def find_class(self, module, name):
        obj = super().find_class(module, name)
        if obj is _rebuild_tensor_v2:
            return lambda *args: _LazyTensor(args)
        return obj


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
      TorchFileFormatError: not a torch.save file, truncated storages, bad geometry.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":
        try:
            return _load_zip(path)
        except (zipfile.BadZipFile, EOFError) as e:
            raise TorchFileFormatError(f"{path}: corrupt or truncated zip archive ({e}).") from e
    if head[:1] == b"\x80":
        return _load_legacy(path)
    raise TorchFileFormatError(
        f"{path}: neither a zip archive nor a pickle (first bytes {head.hex()}); not a "
        "torch.save file.")


def _load_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        try:
            magic = RestrictedUnpickler(f, None).load()
            protocol = RestrictedUnpickler(f, None).load()
            sys_info = RestrictedUnpickler(f, None).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            if isinstance(e, UnsafePickleError):
                raise
            raise TorchFileFormatError(f"{path}: not a torch.save file ({e}).") from e
        if magic != LEGACY_MAGIC_NUMBER or protocol != LEGACY_PROTOCOL_VERSION:
            raise TorchFileFormatError(
                f"{path}: bad legacy header (magic={magic!r}, protocol={protocol!r}).")
        little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
        declared: Dict[str, tuple] = {}

        def record_storage(storage_type: _StorageType, key: str, numel: int) -> np.ndarray:
            declared[key] = (storage_type, numel)
            return np.empty(0, dtype=storage_type.dtype)

        unpickler = _LegacyUnpickler(f, record_storage)
        try:
            obj = unpickler.load()
            keys = RestrictedUnpickler(f, None).load()
        except EOFError as e:
            raise TorchFileFormatError(f"{path}: truncated legacy file ({e}).") from e
        if not isinstance(keys, list) or set(map(str, keys)) != set(declared):
            raise TorchFileFormatError(f"{path}: storage key list does not match the pickle.")
        for key in keys:
            storage_type, numel = declared[str(key)]
            dtype = storage_type.dtype.newbyteorder("<" if little else ">")
            count_bytes = f.read(8)
            if len(count_bytes) != 8:
                raise TorchFileFormatError(f"{path}: file ends before storage {key}.")
            count = int(np.frombuffer(count_bytes, dtype="<i8" if little else ">i8")[0])
            raw = f.read(max(count, 0) * dtype.itemsize)
            if count < 0 or len(raw) != count * dtype.itemsize:
                raise TorchFileFormatError(f"{path}: storage {key} is truncated.")
            arr = np.frombuffer(raw, dtype=dtype).astype(storage_type.dtype)
            unpickler._storages[str(key)].array = _check_numel(arr, numel, f"{path}:{key}")
    return _materialise(obj)


def load_pt_tensor(path: os.PathLike, dtype: Optional[np.dtype] = None,
                   ndim: Optional[int] = None) -> np.ndarray:
    """Loads a ``.pt`` file that holds a single tensor and checks its dtype and rank.

    Raises:
      TorchFileFormatError: the file holds something else, or dtype/ndim differ.
    """
    obj = load_pt(path)
    if not isinstance(obj, np.ndarray):
        raise TorchFileFormatError(f"{path}: expected a single tensor, found {type(obj).__name__}.")
    if dtype is not None and obj.dtype != np.dtype(dtype):
        raise TorchFileFormatError(f"{path}: expected dtype {np.dtype(dtype)}, found {obj.dtype}.")
    if ndim is not None and obj.ndim != ndim:
        raise TorchFileFormatError(f"{path}: expected {ndim} dims, found shape {obj.shape}.")
    return obj
