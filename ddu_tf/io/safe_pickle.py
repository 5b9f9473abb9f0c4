"""Restricted, size-bounded unpickling of files that come from the internet.

``pickle.load`` runs whatever callable a file names, and the C unpickler allocates what a
file declares before checking that the bytes exist (a 6-byte memo index can make it zero
several gigabytes). This module is the one place where ddu_tf unpickles foreign files:

* Only the globals of an explicit allow-list are resolved, to local stand-ins (never to the
  real library objects); any other global raises :class:`UnsafePickleError` before anything
  is called, so a malicious file cannot execute code. ``BUILD`` (``__setstate__``) is
  accepted only on instances of the stand-in types the caller lists, so a file cannot
  mutate module state either.
* Reads go through :class:`BoundedReader`: a field that declares more bytes than the file
  has left is refused before anything is allocated, and the pure-Python unpickler (dict
  memo, no recursion) is used instead of the C one. Memory is then bounded by a small
  multiple of the file size.
* Every failure surfaces as the caller's own error type (or :class:`UnsafePickleError`):
  never ``MemoryError``, ``KeyError``, ``EOFError`` or pickle internals.

:func:`load_numpy_pickle` reads pickles of plain data -- dicts, lists, tuples, str, numbers
and numeric NumPy arrays (``pickle.dumps`` of ``np.ndarray``, protocols 2-5) -- without
importing anything the file names. ``ddu_tf.io.torch_pickle`` builds the torch ``.pt``
reader on :class:`RestrictedUnpickler`.

Example:
    data = load_numpy_pickle("mnist1d_data.pkl")   # {"x": float64 [4000, 40], ...}
"""
from __future__ import annotations

import math
import os
import pickle
import struct
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Type

import numpy as np

__all__ = ["UnsafePickleError", "PickleFileError", "BoundedReader", "RestrictedUnpickler",
           "restricted_load", "load_numpy_pickle", "check_shape", "MAX_NDIM"]

#: Largest tensor / array rank accepted (NumPy's own limit is 64).
MAX_NDIM = 32


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global (or an operation) outside the reader's allow-list."""


class PickleFileError(ValueError):
    """A file that is not the well-formed pickle of plain data that was expected."""


class BoundedReader:
    """Binary file wrapper that refuses reads past a byte budget instead of allocating them.

    Args:
        file: binary file object (or ``io.BytesIO``) positioned at the data.
        size: bytes that may be read from the current position (the rest of the file).
        error_type: exception class raised for a read past the budget.
        what: name of the file, for messages.
    """

    def __init__(self, file, size: int, error_type: Type[Exception], what: str):
        self._file = file
        self.remaining = int(size)
        self._error_type = error_type
        self._what = what

    def _claim(self, n: int) -> None:
        if n > self.remaining:
            raise self._error_type(
                f"{self._what}: a field declares {n} bytes but only {self.remaining} remain in "
                "the file (truncated or hostile file). Download the file again.")
        self.remaining -= n

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n is None or n < 0 else int(n)
        self._claim(n)
        data = self._file.read(n)
        if len(data) != n:
            raise self._error_type(f"{self._what}: file ends {n - len(data)} bytes early "
                                   "(truncated file?).")
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        self._claim(view.nbytes)
        done = 0
        while done < view.nbytes:
            got = self._file.readinto(view[done:])
            if not got:
                raise self._error_type(f"{self._what}: file ends {view.nbytes - done} bytes "
                                       "early (truncated file?).")
            done += got
        return done

    def readline(self) -> bytes:
        line = self._file.readline(self.remaining)
        self.remaining -= len(line)
        return line


def _load_bytearray8_bounded(self):
    """``BYTEARRAY8`` that checks the declared length before allocating it."""
    (length,) = struct.unpack("<Q", self.read(8))
    frame = self._unframer.current_frame
    in_frame = 0 if frame is None else len(frame.getbuffer()) - frame.tell()
    if length > self._reader.remaining + in_frame:
        raise self._reader._error_type(
            f"{self._reader._what}: a bytearray declares {length} bytes but only "
            f"{self._reader.remaining + in_frame} remain (truncated or hostile file).")
    buffer = bytearray(length)
    self.readinto(buffer)
    self.append(buffer)


def _load_build_restricted(self):
    """``BUILD`` only on instances of the caller's stand-in types (``buildable``)."""
    inst = self.stack[-2] if len(self.stack) >= 2 else None
    if not isinstance(inst, self._buildable):
        raise UnsafePickleError(
            f"Refusing BUILD (__setstate__) on a {type(inst).__name__}: only "
            f"{[t.__name__ for t in self._buildable]} accept state. The file is not plain "
            "data, or it is malicious.")
    state = self.stack.pop()
    self.stack[-1].__setstate__(state)


class RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: dict memo
    """Unpickler resolving only ``allowed`` globals, with reads bounded by a :class:`BoundedReader`.

    Args:
        reader: a :class:`BoundedReader` positioned at the pickle.
        allowed: ``(module, name) -> object`` stand-ins; every other global is refused.
        buildable: stand-in types whose instances accept ``BUILD`` (``__setstate__``).
        persistent_load: ``pid -> object``, or None to refuse persistent ids.
        encoding: how Python 2 ``str`` data decode ("latin1" keeps bytes intact).
    """

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8_bounded
    dispatch[pickle.BUILD[0]] = _load_build_restricted

    def __init__(self, reader: BoundedReader, allowed: Mapping[Tuple[str, str], Any],
                 buildable: Tuple[type, ...] = (),
                 persistent_load: Optional[Callable[[Any], Any]] = None,
                 encoding: str = "ASCII"):
        super().__init__(reader, encoding=encoding)
        self._reader = reader
        self._allowed = allowed
        self._buildable = tuple(buildable)
        self._persistent = persistent_load

    def find_class(self, module, name):
        key = (module, name)
        if key in self._allowed:
            return self._allowed[key]
        raise UnsafePickleError(
            f"Refusing to load global {module}.{name}: only "
            f"{sorted(f'{m}.{n}' for m, n in self._allowed)} are accepted. The file is not "
            "plain data of the expected kind, or it is malicious.")

    def persistent_load(self, pid):
        if self._persistent is None:
            raise UnsafePickleError(f"Unexpected persistent id {pid!r} in a plain-data pickle.")
        return self._persistent(pid)


def restricted_load(unpickler: RestrictedUnpickler, error_type: Type[Exception],
                    what: str) -> Any:
    """Runs ``unpickler.load()``, turning every foreign exception into ``error_type``.

    ``UnsafePickleError`` and ``error_type`` pass through; anything else a crafted stream can
    provoke inside the unpickler or the stand-ins (``EOFError``, ``KeyError`` of a missing memo
    entry, ``TypeError`` of a bad call, ``MemoryError``, ...) becomes one ``error_type``
    naming the file, with the original exception chained.
    """
    try:
        return unpickler.load()
    except (UnsafePickleError, error_type):
        raise
    except (Exception, MemoryError, RecursionError) as e:  # noqa: B902 -- mapped, not hidden
        raise error_type(f"{what}: corrupt pickle ({type(e).__name__}: {e}).") from e


def check_shape(shape: Any, error_type: Type[Exception], what: str) -> Tuple[int, ...]:
    """Validates a declared shape: a tuple of at most ``MAX_NDIM`` non-negative ints."""
    if (not isinstance(shape, (tuple, list)) or len(shape) > MAX_NDIM
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                       for s in shape)):
        raise error_type(f"{what}: expected a shape of at most {MAX_NDIM} non-negative "
                         f"integers. Received: {shape!r}")
    return tuple(shape)


# ---- plain NumPy data -------------------------------------------------------------------

#: dtype kinds accepted in plain-data pickles: bool, signed/unsigned integers, floats.
_NUMERIC_KINDS = "biuf"


class _Dtype:
    """Stand-in for ``numpy.dtype(spec, align, copy)``; its state gives the byte order."""

    __slots__ = ("dtype", "error_type", "what")

    def __init__(self, spec, error_type, what):
        try:
            dtype = np.dtype(spec) if isinstance(spec, str) and len(spec) <= 8 else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in _NUMERIC_KINDS:
            raise error_type(f"{what}: only numeric arrays ({_NUMERIC_KINDS!r} dtypes) are "
                             f"accepted. Received: dtype {spec!r}")
        self.dtype = dtype
        self.error_type = error_type
        self.what = what

    def __setstate__(self, state):
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if (not isinstance(state, tuple) or len(state) < 5 or state[1] not in ("<", ">", "|", "=")
                or any(v is not None for v in state[2:5])):
            raise self.error_type(f"{self.what}: unexpected dtype state {state!r}: only plain "
                                  "numeric dtypes are accepted.")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


class _PendingArray:
    """Stand-in for ``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')``.

    Its ``BUILD`` state ``(version, shape, dtype, is_fortran, rawdata)`` is checked (numeric
    dtype, ``prod(shape) * itemsize == len(rawdata)``) and turned into an array by
    :func:`_materialise`.
    """

    __slots__ = ("array", "error_type", "what")

    def __init__(self, error_type, what):
        self.array = None
        self.error_type = error_type
        self.what = what

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 5 and isinstance(state[4], str):
            state = state[:4] + (state[4].encode("latin1"),)  # Python 2 pickles: str data
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], _Dtype)
                and isinstance(state[4], (bytes, bytearray)) and self.array is None):
            raise self.error_type(f"{self.what}: unexpected array state (only numeric arrays "
                                  "with inline data are accepted).")
        _, shape, dtype, fortran, raw = state
        self.array = _array_from_bytes(raw, dtype.dtype, shape, "F" if fortran else "C",
                                       self.error_type, self.what)


def _array_from_bytes(raw, dtype: np.dtype, shape, order: str, error_type, what) -> np.ndarray:
    shape = check_shape(shape, error_type, what)
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise error_type(f"{what}: array of shape {shape} and dtype {dtype} needs {expected} "
                         f"bytes; the file holds {len(raw)}.")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape, order=order)
    return array.astype(dtype.newbyteorder("="), order="C")  # native order, writeable copy


def _materialise(obj: Any, error_type, what, depth: int = 0) -> Any:
    """Replaces stand-ins by arrays in dicts / lists / tuples (iterative depth guard)."""
    if depth > 100:
        raise error_type(f"{what}: containers nested more than 100 deep.")
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            raise error_type(f"{what}: an array without data.")
        return obj.array
    if isinstance(obj, (np.ndarray, np.generic, str, bytes, int, float, bool, type(None))):
        return obj
    if isinstance(obj, dict):
        return {k: _materialise(v, error_type, what, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, error_type, what, depth + 1) for v in obj)
    raise error_type(f"{what}: unexpected {type(obj).__name__} in a plain-data pickle.")


def load_numpy_pickle(path: os.PathLike, error_type: Type[Exception] = PickleFileError) -> Any:
    """Loads a pickle of plain data and numeric NumPy arrays, executing no code.

    Accepted: dict, list, tuple, str, bytes, int, float, bool, None, numeric ``np.ndarray``
    (bool / int / uint / float, any byte order, C or Fortran order, pickle protocols 2-5
    with in-band data) and NumPy scalars. Everything else -- object arrays, other classes,
    any other global (``os.system``, ``builtins.eval``, ...) -- is refused.

    Args:
        path: the pickle file.
        error_type: exception class for a malformed file (a ``ValueError`` subclass).

    Returns:
        The unpickled object; arrays are native-byte-order, C-contiguous, writeable copies.

    Raises:
        FileNotFoundError: no such file.
        UnsafePickleError: a global or operation outside the allow-list (nothing was run).
        error_type: truncated, corrupt, or declaring more bytes than the file holds.
    """
    path = os.fspath(path)
    what = path

    def dtype(spec, align=False, copy=True):
        del align, copy
        return _Dtype(spec, error_type, what)

    def reconstruct(cls, shape, typecode):
        del shape, typecode
        if cls is not _NDARRAY:
            raise UnsafePickleError(f"{what}: _reconstruct of {cls!r} refused.")
        return _PendingArray(error_type, what)

    def encode(text, encoding="utf-8"):  # protocol 2 writes bytes as _codecs.encode(s, latin1)
        if not isinstance(text, str) or encoding != "latin1":
            raise error_type(f"{what}: unexpected _codecs.encode arguments.")
        return text.encode("latin1")

    def empty_bytes(*args):  # protocol 2 writes b"" as bytes()
        if args:
            raise error_type(f"{what}: unexpected bytes() arguments.")
        return b""

    def frombuffer(buffer, dt, shape, order):
        if not isinstance(dt, _Dtype) or not isinstance(buffer, (bytes, bytearray)):
            raise error_type(f"{what}: unexpected protocol-5 array arguments.")
        return _array_from_bytes(buffer, dt.dtype, shape, "F" if order == "F" else "C",
                                 error_type, what)

    def scalar(dt, raw=None):
        if not isinstance(dt, _Dtype) or not isinstance(raw, bytes):
            raise error_type(f"{what}: unexpected NumPy scalar arguments.")
        return _array_from_bytes(raw, dt.dtype, (), "C", error_type, what)[()]

    allowed: Dict[Tuple[str, str], Any] = {("numpy", "ndarray"): _NDARRAY,
                                           ("numpy", "dtype"): dtype,
                                           ("_codecs", "encode"): encode,
                                           ("__builtin__", "bytes"): empty_bytes,
                                           ("builtins", "bytes"): empty_bytes}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    with open(path, "rb") as f:
        reader = BoundedReader(f, os.fstat(f.fileno()).st_size, error_type, what)
        unpickler = RestrictedUnpickler(reader, allowed, buildable=(_Dtype, _PendingArray),
                                        encoding="latin1")
        obj = restricted_load(unpickler, error_type, what)
        if reader.remaining:
            raise error_type(f"{what}: {reader.remaining} bytes after the end of the pickle.")
    return _materialise(obj, error_type, what)


class _NdarrayMarker:
    """The ``numpy.ndarray`` global of an array pickle (only ever passed to _reconstruct)."""

    __slots__ = ()


_NDARRAY = _NdarrayMarker()
