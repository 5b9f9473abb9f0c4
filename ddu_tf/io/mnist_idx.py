"""MNIST and Fashion-MNIST from IDX files: locate, download, verify, parse.

The IDX format (LeCun et al.) is a big-endian header followed by raw bytes:

    magic = 0x00 0x00 <dtype code> <ndim>    (4 bytes; dtype 0x08 = unsigned byte)
    dims  = ndim x uint32 big-endian
    data  = prod(dims) items of that dtype

Files are looked for, in order, in

1. ``data_dir`` passed by the caller (e.g. a TFDS ``manual_dir``),
2. the directory named by the environment variable ``DDU_TF_DATA_DIR``,

using the layout ``<dir>/<dataset>/<file>[.gz]`` (``<dir>/<file>[.gz]`` is accepted too, so a
folder holding the four files can be passed directly). Gzipped and uncompressed files are both
accepted. Because re-gzipped copies differ from the official ``.gz`` bytes, integrity is checked
on the SHA-256 of the DECOMPRESSED IDX bytes (`IDX_SHA256`), so an official download and a
re-compressed copy both pass and anything else raises `IdxChecksumError`.

Example:
    images, labels = load_idx_arrays("mnist", "train")   # uint8 [60000, 28, 28], int64 [60000]
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pathlib
import struct
import urllib.request
from typing import Optional, Sequence, Tuple

import numpy as np

from ddu_tf.io.atomic import atomic_write

ENV_VAR = "DDU_TF_DATA_DIR"

DATASETS = ("mnist", "fashion_mnist")
SPLITS = ("train", "test")

#: Official download locations (the ``.gz`` files are appended to these prefixes).
URLS = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

#: split -> (images file, labels file), without the ``.gz`` suffix.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: SHA-256 of the decompressed IDX bytes, per (dataset, file).
IDX_SHA256 = {
    ("mnist", "train-images-idx3-ubyte"):
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ("mnist", "train-labels-idx1-ubyte"):
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ("mnist", "t10k-images-idx3-ubyte"):
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ("mnist", "t10k-labels-idx1-ubyte"):
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ("fashion_mnist", "train-images-idx3-ubyte"):
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ("fashion_mnist", "train-labels-idx1-ubyte"):
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ("fashion_mnist", "t10k-images-idx3-ubyte"):
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ("fashion_mnist", "t10k-labels-idx1-ubyte"):
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

#: Number of examples per split (both data sets).
NUM_EXAMPLES = {"train": 60000, "test": 10000}

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IdxFormatError(ValueError):
    """An IDX file whose header (magic, dims) or length is not what was expected."""


class IdxChecksumError(ValueError):
    """An IDX file whose decompressed SHA-256 differs from the published one."""


class DataNotFoundError(FileNotFoundError):
    """The data files are not in any of the directories looked in."""


def _check_dataset_split(dataset: str, split: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"Expected dataset in {DATASETS}. Received: dataset={dataset!r}")
    if split not in SPLITS:
        raise ValueError(f"Expected split in {SPLITS}. Received: split={split!r}")


def parse_idx(data: bytes, expected_shape: Optional[Sequence[int]] = None,
              source: str = "<bytes>") -> np.ndarray:
    """Parses IDX bytes into an array, validating magic, dims and length.

    Args:
      data: the (decompressed) IDX file content.
      expected_shape: if given, the dims the header must declare, e.g. ``(60000, 28, 28)``.
      source: name of the file, used in error messages.

    Returns:
      Array of shape ``dims`` in native byte order (uint8 for MNIST files).

    Raises:
      IdxFormatError: bad magic (first two bytes not zero, unknown dtype code), a header
        shorter than declared, a data section whose length is not ``prod(dims) * itemsize``,
        or dims different from ``expected_shape``.
    """
    if len(data) < 4:
        raise IdxFormatError(f"{source}: {len(data)} bytes is too short for an IDX header.")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise IdxFormatError(
            f"{source}: not an IDX file (magic bytes {data[:4].hex()}; expected 0000 followed "
            f"by a dtype code in {[hex(c) for c in _IDX_DTYPES]} and ndim >= 1).")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxFormatError(f"{source}: header declares {ndim} dims but the file ends early.")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    if expected_shape is not None and tuple(dims) != tuple(expected_shape):
        raise IdxFormatError(
            f"{source}: expected shape {tuple(expected_shape)}, header declares {tuple(dims)}.")
    dtype = _IDX_DTYPES[dtype_code]
    expected_len = header_len + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected_len:
        raise IdxFormatError(
            f"{source}: {len(data)} bytes, expected {expected_len} for dims {tuple(dims)} "
            "(truncated or padded file).")
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def read_maybe_gzip(path: os.PathLike) -> bytes:
    """Returns the file's bytes, decompressed if it is gzip (by magic bytes, not name).

    Raises:
      IdxFormatError: a gzip file that is truncated or corrupt.
    """
    path = pathlib.Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, gzip.BadGzipFile) as e:
            raise IdxFormatError(f"{path}: corrupt or truncated gzip file ({e}).") from e
    return raw


def verify_sha256(data: bytes, dataset: str, name: str, source: str) -> None:
    """Checks the SHA-256 of decompressed IDX bytes against `IDX_SHA256`.

    Raises:
      IdxChecksumError: naming the file, the expected and received digests and what to do.
    """
    expected = IDX_SHA256[(dataset, name)]
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise IdxChecksumError(
            f"{source}: SHA-256 of the decompressed IDX bytes is {got}, expected {expected} "
            f"for {dataset}/{name}. The file is corrupt or not the official release: delete it "
            f"and download it again from {URLS[dataset]}{name}.gz")


def candidate_dirs(data_dir: Optional[os.PathLike] = None) -> list:
    """Directories searched for data, in order: ``data_dir``, then ``$DDU_TF_DATA_DIR``."""
    dirs = []
    if data_dir is not None:
        dirs.append(pathlib.Path(data_dir))
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(pathlib.Path(env))
    return dirs


def find_file(subdir: str, name: str, data_dir: Optional[os.PathLike] = None,
              suffixes: Sequence[str] = ("", ".gz")) -> Optional[pathlib.Path]:
    """First existing ``<dir>/<subdir>/<name><suffix>`` or ``<dir>/<name><suffix>``, or None."""
    for d in candidate_dirs(data_dir):
        for base in (d / subdir, d):
            for suffix in suffixes:
                p = base / (name + suffix)
                if p.is_file():
                    return p
    return None


def _missing_error(dataset: str, names: Sequence[str],
                   data_dir: Optional[os.PathLike]) -> DataNotFoundError:
    looked = [str(d / dataset) for d in candidate_dirs(data_dir)] or [
        f"(none: no data_dir given and ${ENV_VAR} is unset)"]
    urls = [f"{URLS[dataset]}{n}.gz" for n in names]
    return DataNotFoundError(
        f"{dataset}: files {[n + '[.gz]' for n in names]} not found. Looked in: {looked}. "
        f"Download them from {urls} into <dir>/{dataset}/ and set ${ENV_VAR}=<dir> (or pass "
        "data_dir / the TFDS manual_dir), or call download_idx_files(dataset, <dir>).")


def download_idx_files(dataset: str, dest_dir: os.PathLike, split: Optional[str] = None,
                       timeout: float = 60.0) -> pathlib.Path:
    """Downloads the official ``.gz`` files into ``dest_dir/<dataset>/`` and verifies them.

    Each file is written to a temporary name and renamed only after its decompressed SHA-256
    matched, so an interrupted or corrupt download never leaves a file that looks finished.

    Args:
      dataset: "mnist" or "fashion_mnist".
      dest_dir: root directory (the layout of ``DDU_TF_DATA_DIR``).
      split: download only this split's two files; both splits when None.
      timeout: seconds per HTTP request.

    Returns:
      The directory ``dest_dir/<dataset>``.
    """
    splits = SPLITS if split is None else (split,)
    for s in splits:
        _check_dataset_split(dataset, s)
    out = pathlib.Path(dest_dir) / dataset
    out.mkdir(parents=True, exist_ok=True)
    for s in splits:
        for name in FILES[s]:
            target = out / (name + ".gz")
            if target.is_file():
                continue
            url = f"{URLS[dataset]}{name}.gz"

            def download(tmp, url=url, name=name):
                try:
                    with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                        f.write(r.read())
                except OSError as e:
                    raise DataNotFoundError(
                        f"Could not download {url} into {out} ({e}). Without internet, copy the "
                        f"file there by hand or set ${ENV_VAR}.") from e
                verify_sha256(read_maybe_gzip(tmp), dataset, name, url)

            atomic_write(target, download)  # renamed into place only once verified
    return out


def load_idx_file(dataset: str, name: str, data_dir: Optional[os.PathLike] = None,
                  expected_shape: Optional[Sequence[int]] = None) -> np.ndarray:
    """Finds, decompresses, verifies (SHA-256) and parses one IDX file.

    Returns:
      The parsed array (see `parse_idx`).

    Raises:
      DataNotFoundError, IdxChecksumError, IdxFormatError.
    """
    path = find_file(dataset, name, data_dir)
    if path is None:
        raise _missing_error(dataset, [name], data_dir)
    return _load_verified(str(path), os.path.getmtime(path), dataset, name,
                          None if expected_shape is None else tuple(expected_shape))


@functools.lru_cache(maxsize=8)
def _load_verified(path: str, mtime: float, dataset: str, name: str,
                   expected_shape: Optional[Tuple[int, ...]]) -> np.ndarray:
    del mtime  # part of the cache key only: a replaced file is read again
    data = read_maybe_gzip(path)
    verify_sha256(data, dataset, name, path)
    arr = parse_idx(data, expected_shape, source=path)
    arr.setflags(write=False)
    return arr


def load_idx_arrays(dataset: str, split: str, data_dir: Optional[os.PathLike] = None,
                    download: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Loads one split of MNIST or Fashion-MNIST.

    Args:
      dataset: "mnist" or "fashion_mnist".
      split: "train" (60000 examples) or "test" (10000).
      data_dir: directory searched before ``$DDU_TF_DATA_DIR`` (layout ``<dir>/<dataset>/``).
      download: if the files are not found, download them into ``data_dir`` (or
        ``$DDU_TF_DATA_DIR``) from `URLS` first.

    Returns:
      ``(images, labels)``: uint8 ``[N, 28, 28]`` (pixel intensities 0..255) and int64 ``[N]``
      (classes 0..9). Fresh writable copies.

    Raises:
      DataNotFoundError: naming the files, the directories looked in and the URLs.
      IdxChecksumError / IdxFormatError: corrupt, truncated or foreign files.
    """
    _check_dataset_split(dataset, split)
    n = NUM_EXAMPLES[split]
    img_name, lbl_name = FILES[split]
    missing = [nm for nm in (img_name, lbl_name) if find_file(dataset, nm, data_dir) is None]
    if missing and download:
        dirs = candidate_dirs(data_dir)
        if not dirs:
            raise _missing_error(dataset, missing, data_dir)
        download_idx_files(dataset, dirs[0], split)
        missing = [nm for nm in (img_name, lbl_name) if find_file(dataset, nm, data_dir) is None]
    if missing:
        raise _missing_error(dataset, missing, data_dir)
    images = load_idx_file(dataset, img_name, data_dir, (n, 28, 28))
    labels = load_idx_file(dataset, lbl_name, data_dir, (n,))
    if labels.max() > 9:
        raise IdxFormatError(f"{dataset}/{lbl_name}: labels outside 0..9.")
    return np.array(images, dtype=np.uint8), labels.astype(np.int64)


def load_idx_pair(dataset: str, split: str, images_path: os.PathLike,
                  labels_path: os.PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Verifies and parses an explicit (images, labels) file pair; see `load_idx_arrays`."""
    _check_dataset_split(dataset, split)
    n = NUM_EXAMPLES[split]
    img_name, lbl_name = FILES[split]
    images = _load_verified(str(images_path), os.path.getmtime(images_path), dataset, img_name,
                            (n, 28, 28))
    labels = _load_verified(str(labels_path), os.path.getmtime(labels_path), dataset, lbl_name,
                            (n,))
    if labels.max() > 9:
        raise IdxFormatError(f"{labels_path}: labels outside 0..9.")
    return np.array(images, dtype=np.uint8), labels.astype(np.int64)


def load_idx_arrays_or_fetch(dataset: str, split: str, data_dir: Optional[os.PathLike],
                             fetch) -> Tuple[np.ndarray, np.ndarray]:
    """`load_idx_arrays` from ``data_dir`` / ``$DDU_TF_DATA_DIR``, else via ``fetch``.

    Args:
      fetch: ``{name: url} -> {name: local path}`` (e.g. a TFDS ``dl_manager.download``),
        called with the two official URLs only when the files are found in no directory.
    """
    _check_dataset_split(dataset, split)
    if all(find_file(dataset, nm, data_dir) is not None for nm in FILES[split]):
        return load_idx_arrays(dataset, split, data_dir)
    img_name, lbl_name = FILES[split]
    try:
        paths = fetch({nm: f"{URLS[dataset]}{nm}.gz" for nm in (img_name, lbl_name)})
    except Exception as e:  # network errors differ by backend (urllib, requests, TFDS)
        raise _missing_error(dataset, [img_name, lbl_name], data_dir) from e
    return load_idx_pair(dataset, split, paths[img_name], paths[lbl_name])
