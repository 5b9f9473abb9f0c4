"""Ambiguous-MNIST files: the shipped regenerated file (format, deterministic writer, checked
reader) and the official release (``amnist_samples.pt`` / ``amnist_labels.pt``: find, download,
MD5-verify, read without torch, flatten into (image, label) pairs; see the last section).

The file (``ddu_tf/io/data/ambiguous_mnist_generated.npz``) is written by
`ddu_tf.generation.ambiguous_mnist` (command: `REBUILD_COMMAND`) and holds, for ``N`` images
(``[0, N/2)`` train, ``[N/2, N)`` test; the official set has N = 12000):

    images              uint8   [N, 28, 28]  pixels 0..255 (= round(255 x) of x in [0, 1])
    labels              uint8   [N, 10]      10 labels per image, classes 0..9
    probs               float32 [N, 10]      ensemble-mean softmax the labels were drawn from
    predictive_entropy  float32 [N]          H[probs] in nats
    mutual_information  float32 [N]          ensemble mutual information in nats
    metadata            0-d unicode array    JSON: config, counts, histograms, the command

It is a zip of ``.npy`` members, as written by ``np.savez_compressed``, but with fixed member
order and timestamps, so the same arrays always give the same bytes (and the same SHA-256).
Reading never unpickles: `load_generated` checks the SHA-256 first (`GENERATED_SHA256` for the
shipped file), then loads with ``allow_pickle=False`` and validates keys, dtypes, shapes and
ranges; any failure is a `GeneratedFileError` (or ``FileNotFoundError``) naming the file.

Example:
    data = load_generated()            # the shipped file, digest-checked
    data.images.shape, data.labels.shape   # (12000, 28, 28) float32 in [0, 1], (12000, 10) int64
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import urllib.request
import zipfile
from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np

from ddu_tf.io import mnist_idx, torch_pickle
from ddu_tf.io.atomic import atomic_write

#: Package data path of the shipped file.
DEFAULT_PATH = pathlib.Path(__file__).resolve().parent / "data" / "ambiguous_mnist_generated.npz"

#: SHA-256 of the shipped file. None until the full build has been run and its digest recorded.
GENERATED_SHA256: Optional[str] = "9b68929be49484260fef0842541ba74224fba638efc111ab738eeb7bfb0d7fb9"

#: How to rebuild the shipped file (run from the repository root).
REBUILD_COMMAND = ("DDU_TF_DATA_DIR=<dir holding mnist/train-*-ubyte.gz> "
                   ".venv/bin/python experiments/build_ambiguous_mnist.py")

NUM_CLASSES = 10
LABELS_PER_IMAGE = 10
#: key -> (dtype, shape after the leading N), in the order they are written.
ARRAYS = {
    "images": (np.dtype(np.uint8), (28, 28)),
    "labels": (np.dtype(np.uint8), (LABELS_PER_IMAGE,)),
    "probs": (np.dtype(np.float32), (NUM_CLASSES,)),
    "predictive_entropy": (np.dtype(np.float32), ()),
    "mutual_information": (np.dtype(np.float32), ()),
}
KEYS = tuple(ARRAYS) + ("metadata",)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: identical arrays -> identical bytes


class GeneratedFileError(ValueError):
    """A generated Ambiguous-MNIST file that fails its checksum or its format checks."""


class GeneratedAmbiguousMnist(NamedTuple):
    """Contents of a generated Ambiguous-MNIST file (``[0, N/2)`` train, ``[N/2, N)`` test).

    Attributes:
      images: float32 ``[N, 28, 28]`` in [0, 1] (the stored uint8 / 255).
      labels: int64 ``[N, 10]`` classes 0..9.
      probs: float32 ``[N, 10]`` ensemble-mean softmax.
      predictive_entropy, mutual_information: float32 ``[N]`` (nats).
      metadata: dict parsed from the file's JSON.
    """

    images: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    predictive_entropy: np.ndarray
    mutual_information: np.ndarray
    metadata: Dict[str, Any]


def file_digest(path: os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest (``hashlib`` ``algorithm``) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_arrays(arrays: Dict[str, np.ndarray], where: str) -> int:
    """Validates dtypes, shapes and ranges; returns N. Raises GeneratedFileError."""
    n = None
    for key, (dtype, tail) in ARRAYS.items():
        a = arrays[key]
        if a.dtype != dtype:
            raise GeneratedFileError(f"{where}: expected `{key}` of dtype {dtype}. "
                                     f"Received: dtype={a.dtype}.")
        if a.ndim != 1 + len(tail) or tuple(a.shape[1:]) != tail:
            raise GeneratedFileError(f"{where}: expected `{key}` of shape [N, "
                                     f"{', '.join(map(str, tail))}]. Received: shape={a.shape}.")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise GeneratedFileError(f"{where}: expected every array to have N={n} rows. "
                                     f"Received: `{key}` with {a.shape[0]}.")
    if n == 0 or n % 2:
        raise GeneratedFileError(f"{where}: expected an even, positive number of images "
                                 f"(half train, half test). Received: N={n}.")
    if arrays["labels"].max() >= NUM_CLASSES:
        raise GeneratedFileError(f"{where}: expected labels in 0..{NUM_CLASSES - 1}. Received: "
                                 f"max label {int(arrays['labels'].max())}.")
    probs = arrays["probs"]
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise GeneratedFileError(f"{where}: expected finite probs in [0, 1]. Received: range "
                                 f"[{np.nanmin(probs)}, {np.nanmax(probs)}].")
    worst = float(np.abs(probs.astype(np.float64).sum(1) - 1.0).max())
    if worst > 1e-4:
        raise GeneratedFileError(f"{where}: expected probs rows summing to 1. Received: a row "
                                 f"off by {worst:.3g}.")
    for key in ("predictive_entropy", "mutual_information"):
        v = arrays[key]
        if not np.isfinite(v).all() or v.min() < -1e-5 or v.max() > np.log(NUM_CLASSES) + 1e-5:
            raise GeneratedFileError(f"{where}: expected finite `{key}` in [0, log 10] nats. "
                                     f"Received: range [{np.nanmin(v)}, {np.nanmax(v)}].")
    return n


def save_generated(path: os.PathLike, images: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                   predictive_entropy: np.ndarray, mutual_information: np.ndarray,
                   metadata: Dict[str, Any]) -> str:
    """Writes the file atomically (temporary file + rename) and returns its SHA-256.

    Arrays are converted to the format's dtypes (images must already be uint8 0..255; labels
    0..9). ``metadata`` is stored as JSON with sorted keys. Same inputs -> same bytes.

    Raises:
      GeneratedFileError: arrays that violate the format (see module docstring).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise GeneratedFileError(f"Expected uint8 images (0..255). Received: dtype={images.dtype}.")
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise GeneratedFileError(f"Expected labels in 0..{NUM_CLASSES - 1}. Received: range "
                                 f"[{labels.min()}, {labels.max()}].")
    arrays = {"images": images, "labels": labels.astype(np.uint8),
              "probs": np.asarray(probs, np.float32),
              "predictive_entropy": np.asarray(predictive_entropy, np.float32),
              "mutual_information": np.asarray(mutual_information, np.float32)}
    _check_arrays(arrays, "save_generated")
    arrays["metadata"] = np.array(json.dumps(metadata, sort_keys=True))
    def write(tmp):
        with open(tmp, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED,
                                                   allowZip64=True) as z:
            for key in KEYS:
                buf = io.BytesIO()
                np.lib.format.write_array(buf, arrays[key], allow_pickle=False)
                info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                z.writestr(info, buf.getvalue(), compresslevel=9)
        os.chmod(tmp, 0o644)  # a package data file is world-readable

    atomic_write(path, write)
    return file_digest(path)


def load_generated(path: Optional[os.PathLike] = None, sha256: Optional[str] = None
                   ) -> GeneratedAmbiguousMnist:
    """Reads a generated Ambiguous-MNIST file after checking its SHA-256.

    Args:
      path: the file; default `DEFAULT_PATH` (the shipped package data).
      sha256: expected hex digest; default `GENERATED_SHA256` when ``path`` is the shipped file.
        A file at another path needs its digest passed explicitly.

    Returns:
      `GeneratedAmbiguousMnist` (images float32 ``[N, 28, 28]`` in [0, 1], labels int64
      ``[N, 10]``, probs float32 ``[N, 10]``, PE and MI float32 ``[N]``, metadata dict).

    Raises:
      FileNotFoundError: no file at ``path`` (the message gives the rebuild command).
      GeneratedFileError: digest mismatch (both digests and the rebuild command), no digest to
        check against, or a file that is not a valid generated set (missing key, wrong dtype or
        shape, label out of 0..9, pixel/probability out of range, odd N, pickled objects).
    """
    shipped = path is None
    path = pathlib.Path(DEFAULT_PATH if path is None else path)
    if sha256 is None:
        if not shipped and path.resolve() != DEFAULT_PATH:
            raise GeneratedFileError(
                f"Expected sha256=<hex digest> for a generated Ambiguous-MNIST file other than "
                f"the shipped one. Received: path={str(path)!r} and no sha256.")
        sha256 = GENERATED_SHA256
    if not path.is_file():
        raise FileNotFoundError(
            f"Generated Ambiguous-MNIST file not found: {path}. Rebuild it with "
            f"`{REBUILD_COMMAND} --output {path}`.")
    if sha256 is None:
        raise GeneratedFileError(
            f"No SHA-256 is recorded for the shipped file {path} "
            "(ddu_tf.io.ambiguous_mnist.GENERATED_SHA256 is None): build it with "
            f"`{REBUILD_COMMAND}` and record its digest, or pass sha256= explicitly.")
    actual = file_digest(path)
    if actual != sha256.lower():
        raise GeneratedFileError(
            f"SHA-256 mismatch for {path}: expected {sha256.lower()}, received {actual}. The "
            f"file is corrupt or from another build; rebuild it with "
            f"`{REBUILD_COMMAND} --output {path}`.")
    where = str(path)
    if not zipfile.is_zipfile(path):
        raise GeneratedFileError(f"{where}: expected an .npz (zip) file of arrays. Received: a "
                                 "file that is not a zip archive.")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in KEYS if k not in z.files]
            extra = sorted(set(z.files) - set(KEYS))
            if missing or extra:
                raise GeneratedFileError(f"{where}: expected exactly the arrays {list(KEYS)}. "
                                         f"Received: missing {missing}, unexpected {extra}.")
            arrays = {k: z[k] for k in KEYS}
    except GeneratedFileError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):  # numpy refuses object arrays with allow_pickle=False
            raise GeneratedFileError(f"{where}: holds pickled objects, which are refused (never "
                                     f"unpickled): {e}") from e
        raise GeneratedFileError(f"{where}: an array could not be read: {e}") from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise GeneratedFileError(f"{where}: not a readable .npz file: {e}") from e
    _check_arrays(arrays, where)
    meta = arrays["metadata"]
    if meta.shape != () or meta.dtype.kind != "U":
        raise GeneratedFileError(f"{where}: expected `metadata` as a 0-d unicode (JSON) array. "
                                 f"Received: dtype={meta.dtype}, shape={meta.shape}.")
    try:
        metadata = json.loads(str(meta))
    except json.JSONDecodeError as e:
        raise GeneratedFileError(f"{where}: `metadata` is not valid JSON: {e}") from e
    if not isinstance(metadata, dict):
        raise GeneratedFileError(f"{where}: expected `metadata` to be a JSON object. "
                                 f"Received: {type(metadata).__name__}.")
    return GeneratedAmbiguousMnist(
        images=arrays["images"].astype(np.float32) / np.float32(255.0),
        labels=arrays["labels"].astype(np.int64),
        probs=arrays["probs"], predictive_entropy=arrays["predictive_entropy"],
        mutual_information=arrays["mutual_information"], metadata=metadata)


# ---- the official release (.pt files) --------------------------------------------------------
AMBIGUOUS_SUBDIR = "ambiguous_mnist"
AMBIGUOUS_URL = "https://github.com/BlackHC/ddu_dirty_mnist/releases/download/data-v1.0.0/"
#: role -> (file name, MD5 of the official release asset).
AMBIGUOUS_FILES = {
    "samples": ("amnist_samples.pt", "4f7865093b1d28e34019847fab917722"),
    "labels": ("amnist_labels.pt", "3bfc055a9f91a76d8d493e8b898c3c95"),
}


class AmbiguousChecksumError(ValueError):
    """An Ambiguous-MNIST .pt file whose MD5 differs from the official release."""


def find_ambiguous_files(data_dir: Optional[os.PathLike] = None
                         ) -> Optional[Dict[str, pathlib.Path]]:
    """``{"samples": path, "labels": path}`` under ``<dir>/ambiguous_mnist/`` (or ``<dir>/``)
    for ``data_dir`` then ``$DDU_TF_DATA_DIR``; None if either file is missing."""
    found = {role: mnist_idx.find_file(AMBIGUOUS_SUBDIR, name, data_dir, suffixes=("",))
             for role, (name, _) in AMBIGUOUS_FILES.items()}
    return None if any(p is None for p in found.values()) else found


def ambiguous_missing_error(data_dir: Optional[os.PathLike] = None) -> FileNotFoundError:
    """The error raised when the official .pt files are nowhere to be found."""
    looked = [str(d / AMBIGUOUS_SUBDIR) for d in mnist_idx.candidate_dirs(data_dir)] or [
        f"(none: no data_dir given and ${mnist_idx.ENV_VAR} is unset)"]
    names = [n for n, _ in AMBIGUOUS_FILES.values()]
    urls = [AMBIGUOUS_URL + n for n in names]
    return mnist_idx.DataNotFoundError(
        f"Ambiguous-MNIST files {names} not found. Looked in: {looked}. Download {urls} into "
        f"<dir>/{AMBIGUOUS_SUBDIR}/ and set ${mnist_idx.ENV_VAR}=<dir> (or pass data_dir / the "
        "TFDS manual_dir), call download_ambiguous_files(<dir>), or use the offline "
        "regeneration (variant='generated', TFDS 'ambiguous_mnist/generated').")


def download_ambiguous_files(dest_dir: os.PathLike, timeout: float = 120.0) -> pathlib.Path:
    """Downloads the official .pt files into ``dest_dir/ambiguous_mnist/`` (MD5-verified;
    written under a temporary name and renamed only when the digest matched)."""
    out = pathlib.Path(dest_dir) / AMBIGUOUS_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    for name, md5 in AMBIGUOUS_FILES.values():
        target = out / name
        if target.is_file():
            continue

        def download(tmp, name=name, md5=md5):
            try:
                with urllib.request.urlopen(AMBIGUOUS_URL + name, timeout=timeout) as r, \
                        open(tmp, "wb") as f:
                    f.write(r.read())
            except OSError as e:
                raise mnist_idx.DataNotFoundError(
                    f"Could not download {AMBIGUOUS_URL + name} into {out} ({e}).") from e
            verify_ambiguous_md5(tmp, name, md5)

        atomic_write(target, download)
    return out


def verify_ambiguous_md5(path: os.PathLike, name: str, expected: Optional[str] = None) -> None:
    """Raises `AmbiguousChecksumError` if ``path``'s MD5 is not the official one for ``name``."""
    expected = expected or dict(AMBIGUOUS_FILES.values())[name]
    got = file_digest(path, "md5")
    if got != expected:
        raise AmbiguousChecksumError(
            f"{path}: MD5 {got}, expected {expected} for {name}. The file is corrupt, truncated "
            f"or not the official release: delete it and download {AMBIGUOUS_URL + name} again.")


def read_official_ambiguous(samples_path: os.PathLike, labels_path: os.PathLike
                            ) -> Tuple[np.ndarray, np.ndarray]:
    """Verifies (MD5) and reads the official .pt pair.

    Returns:
      images float32 ``[N, 28, 28]`` (exact stored values, in [0, 1]) and labels int64
      ``[N, k]`` (k = 10 labels per image, classes 0..9).
    """
    verify_ambiguous_md5(samples_path, AMBIGUOUS_FILES["samples"][0],
                         AMBIGUOUS_FILES["samples"][1])
    verify_ambiguous_md5(labels_path, AMBIGUOUS_FILES["labels"][0],
                         AMBIGUOUS_FILES["labels"][1])
    samples = torch_pickle.load_pt_tensor(samples_path, dtype=np.float32, ndim=4)
    labels = torch_pickle.load_pt_tensor(labels_path, ndim=2).astype(np.int64)
    if samples.shape[1:] != (1, 28, 28) or len(samples) != len(labels):
        raise torch_pickle.TorchFileFormatError(
            f"Expected samples [N, 1, 28, 28] and labels [N, k]; found {samples.shape} and "
            f"{labels.shape} in {samples_path}, {labels_path}.")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES or len(labels) % 2:
        raise torch_pickle.TorchFileFormatError(
            f"{labels_path}: labels must be in 0..9 for an even number of images.")
    return samples[:, 0], labels


def load_official_ambiguous(data_dir: Optional[os.PathLike] = None, download: bool = False
                            ) -> Tuple[np.ndarray, np.ndarray]:
    """Finds (or downloads) and reads the official Ambiguous-MNIST; see
    `read_official_ambiguous`. Raises `mnist_idx.DataNotFoundError` naming dirs and URLs."""
    found = find_ambiguous_files(data_dir)
    if found is None and download:
        dirs = mnist_idx.candidate_dirs(data_dir)
        if dirs:
            download_ambiguous_files(dirs[0])
            found = find_ambiguous_files(data_dir)
    if found is None:
        raise ambiguous_missing_error(data_dir)
    return read_official_ambiguous(found["samples"], found["labels"])


def flatten_pairs(images: np.ndarray, labels: np.ndarray, split: str) -> Dict[str, np.ndarray]:
    """Flattens ``N`` images x ``k`` labels into (image, label) pairs of one split.

    Pair ``j`` (global, ``0 <= j < N*k``) is image ``j // k`` with label ``labels[j // k, j % k]``;
    "train" = pairs ``[0, N*k/2)``, "test" = ``[N*k/2, N*k)``.

    Returns:
      dict: ``images`` float32 ``[P, 28, 28]``, ``label`` int64 ``[P]``, ``sample_id`` int64
      ``[P]`` (image index), ``pair_id`` int64 ``[P]`` (j), ``label_distribution`` float32
      ``[P, 10]`` (the image's empirical label distribution).
    """
    n, k = labels.shape
    total = n * k
    if split == "train":
        pair = np.arange(0, total // 2)
    elif split == "test":
        pair = np.arange(total // 2, total)
    else:
        raise ValueError(f"Expected split in ('train', 'test'). Received: split={split!r}")
    image = pair // k
    dist = np.stack([(labels == c).mean(1) for c in range(NUM_CLASSES)], 1).astype(np.float32)
    return {"images": images[image].astype(np.float32), "label": labels[image, pair % k],
            "sample_id": image.astype(np.int64), "pair_id": pair.astype(np.int64),
            "label_distribution": dist[image]}
