"""Dirty-MNIST = MNIST + Ambiguous-MNIST: loaders, normalisation, fixed noise, splits.

Reproduces the loaders of BlackHC/ddu_dirty_mnist (and omegafragger/DDU):

* pixels in [0, 1] are normalised ``x' = (x - 0.1307) / 0.3081`` (MNIST statistics, also used
  for Ambiguous-MNIST and for Fashion-MNIST fed to an MNIST model);
* Gaussian noise ``N(0, 0.05^2)`` is added AFTER normalisation to every Dirty-MNIST sample
  (MNIST and ambiguous), as the pip package does. Unlike the original (``torch.randn_like`` at
  load time), the noise here is a pure function of ``(seed, noise_key)``
  (``tf.random.stateless_normal``), so it is fixed per sample: identical across epochs, loads,
  subsets and orderings;
* Ambiguous-MNIST: ``N`` images with ``k = 10`` labels each are flattened to ``N*k`` (image,
  label) pairs, pair ``j`` = image ``j // k`` with its ``(j % k)``-th label; the first half of
  the pairs (60k for the official 12k images) is train, the rest test;
* the validation split (``validation_fraction`` = 10% of the 60k MNIST training images, seeded
  permutation, DDU's ``val_seed=1``) is drawn from the MNIST half only;
* Fashion-MNIST is the out-of-distribution set.

Sample identity:
  ``sample_id``: MNIST index within its IDX split for MNIST; ambiguous IMAGE index (0..N-1) for
  Ambiguous-MNIST (the 10 pairs of one image share it).
  ``noise_key`` (int64): MNIST train i -> i, MNIST test i -> 1_000_000 + i, ambiguous pair j ->
  2_000_000 + j (j = global flattened pair index, so train and test pairs never collide).

From the ``dirty_mnist`` TFDS records (published order: MNIST, then Ambiguous-MNIST image by
image): `load_tfds` (splits as `load_dirty_arrays`, same values), `tfds_transform` (the transform
above as a ``tf.data`` map), `tfds_slice` (TFDS split strings that never cut an image) and
`initial_indices` (initial samples from the MNIST half).

Official Ambiguous-MNIST files: ``amnist_samples.pt`` (float32 [12000, 1, 28, 28] in [0, 1]) and
``amnist_labels.pt`` (int64 [12000, 10]) from `AMBIGUOUS_URL`, MD5-verified, read with
`ddu_tf.io.torch_pickle` (no torch, no code execution), from ``<dir>/ambiguous_mnist/``.
"""
from __future__ import annotations

import os
import pathlib
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from ddu_tf.io import mnist_idx
# The official Ambiguous-MNIST files are read in ddu_tf.io (below the TFDS builders); these names
# stay importable from here.
from ddu_tf.io.ambiguous_mnist import (  # noqa: F401
    AMBIGUOUS_FILES, AMBIGUOUS_SUBDIR, AMBIGUOUS_URL, AmbiguousChecksumError,
    ambiguous_missing_error, download_ambiguous_files, find_ambiguous_files, flatten_pairs,
    load_official_ambiguous, read_official_ambiguous, verify_ambiguous_md5)

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
NOISE_STD = 0.05
NUM_CLASSES = 10

NOISE_KEY_OFFSETS = {"mnist_train": 0, "mnist_test": 1_000_000, "ambiguous": 2_000_000}
VALIDATION_FRACTION = 0.1
VALIDATION_SEED = 1



def normalize(x01):
    """``(x - 0.1307) / 0.3081`` (same shape; float32). Works on NumPy arrays and tensors."""
    if isinstance(x01, np.ndarray):
        return ((x01.astype(np.float32) - MNIST_MEAN) / MNIST_STD).astype(np.float32)
    return (tf.cast(x01, tf.float32) - MNIST_MEAN) / MNIST_STD


def fixed_noise(noise_keys: np.ndarray, seed: int = 0, stddev: float = NOISE_STD,
                shape: Tuple[int, ...] = (28, 28)) -> np.ndarray:
    """Per-sample Gaussian noise that depends only on ``(seed, key)``.

    ``noise[i] = stddev * stateless_normal(shape, seed=[seed, noise_keys[i]])``.

    Args:
      noise_keys: int64 ``[n]`` sample keys (see module docstring).
    Returns:
      float32 ``[n, *shape]``.
    """
    keys = np.asarray(noise_keys, np.int64)
    if len(keys) == 0:
        return np.zeros((0, *shape), np.float32)
    ds = tf.data.Dataset.from_tensor_slices(keys).map(
        lambda k: example_noise(k, seed, stddev, shape),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(8192)
    return np.concatenate([b.numpy() for b in ds])


def example_noise(noise_key, seed: int = 0, stddev: float = NOISE_STD,
                  shape: Tuple[int, ...] = (28, 28)) -> tf.Tensor:
    """One example's fixed noise, ``stddev * stateless_normal(shape, seed=[seed, noise_key])``
    (float32 ``shape``); the single definition behind `fixed_noise` and `tfds_transform`."""
    key = tf.cast(noise_key, tf.int64)
    return tf.random.stateless_normal(shape, seed=tf.stack([tf.constant(seed, tf.int64), key]),
                                      dtype=tf.float32) * stddev


def validation_indices(num: int = 60000, fraction: float = VALIDATION_FRACTION,
                       seed: int = VALIDATION_SEED) -> np.ndarray:
    """Sorted indices of the MNIST training images held out for validation.

    ``permutation(num)[:round(fraction * num)]`` of ``np.random.default_rng(seed)``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"Expected 0 <= validation_fraction < 1. Received: {fraction}")
    perm = np.random.default_rng(seed).permutation(num)
    return np.sort(perm[: int(round(fraction * num))])


def _generated_ambiguous(split: str, config: str, data_dir: Optional[os.PathLike],
                         tfds_data_dir: Optional[str]) -> Dict[str, np.ndarray]:
    import tensorflow_datasets as tfds

    import tfds_builders.ambiguous_mnist  # noqa: F401  (registers the builder if not yet)
    from ddu_tf.data.pipeline import tfds_builder

    builder = tfds_builder(f"ambiguous_mnist/{config}", data_dir=tfds_data_dir,
                           manual_dir=data_dir)
    d = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))  # published order
    return {"images": d["image"][:, :, :, 0], "label": d["label"].astype(np.int64),
            "sample_id": d["sample_id"], "pair_id": d["pair_id"],
            "label_distribution": d["label_distribution"]}


def load_ambiguous_arrays(split: str, variant: str = "official",
                          data_dir: Optional[os.PathLike] = None,
                          tfds_data_dir: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Ambiguous-MNIST pairs of one split (no normalisation, no noise).

    Args:
      split: "train" or "test".
      variant: "official" (the released .pt files) or a generated TFDS config name
        ("generated": the shipped file; "generated_tiny": the recipe at test scale), prepared
        on first use into ``tfds_data_dir``.
      data_dir: manual directory (else ``$DDU_TF_DATA_DIR``).

    Returns:
      see `flatten_pairs` (pairs in flattened order).
    """
    if variant == "official":
        images, labels = load_official_ambiguous(data_dir)
        return flatten_pairs(images, labels, split)
    return _generated_ambiguous(split, variant, data_dir, tfds_data_dir)


def load_mnist_arrays(split: str, dataset: str = "mnist", data_dir: Optional[os.PathLike] = None,
                      validation_fraction: float = VALIDATION_FRACTION,
                      validation_seed: int = VALIDATION_SEED) -> Dict[str, np.ndarray]:
    """MNIST / Fashion-MNIST as float32 [0, 1] arrays with the DDU validation split.

    Args:
      split: "train" (MNIST train minus validation), "validation", "train_full" (all 60k) or
        "test". Fashion-MNIST has no validation split ("train" = all 60k).
      data_dir: manual directory; else ``$DDU_TF_DATA_DIR``; else the official files are
        downloaded once into ``$XDG_CACHE_HOME/ddu_tf`` (default ``~/.cache/ddu_tf``).

    Returns:
      dict: ``images`` float32 ``[n, 28, 28]`` = uint8 / 255, ``label`` int64 ``[n]``,
      ``sample_id`` int64 ``[n]`` (index in the IDX split), ``noise_key`` int64 ``[n]``.
    """
    splits = ("train", "validation", "train_full", "test")
    if split not in splits:
        raise ValueError(f"Expected split in {splits}. Received: split={split!r}")
    idx_split = "test" if split == "test" else "train"
    download = False
    if data_dir is None and not os.environ.get(mnist_idx.ENV_VAR):
        # No manual directory configured: fetch the official files once into a user cache
        # (verified by SHA-256). With a manual directory nothing is downloaded.
        data_dir = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"),
                                "ddu_tf")
        download = True
    images, labels = mnist_idx.load_idx_arrays(dataset, idx_split, data_dir, download=download)
    ids = np.arange(len(labels), dtype=np.int64)
    if dataset == "mnist" and split in ("train", "validation"):
        val = validation_indices(len(labels), validation_fraction, validation_seed)
        ids = val if split == "validation" else np.setdiff1d(ids, val)
    elif split == "validation":
        raise ValueError(f"{dataset} has no validation split; use 'train' or 'test'.")
    offset = NOISE_KEY_OFFSETS["mnist_test" if idx_split == "test" else "mnist_train"]
    return {"images": images[ids].astype(np.float32) / np.float32(255.0), "label": labels[ids],
            "sample_id": ids, "noise_key": ids + offset}


def load_dirty_arrays(split: str, variant: str = "official", data_dir: Optional[os.PathLike] = None,
                      tfds_data_dir: Optional[str] = None,
                      validation_fraction: float = VALIDATION_FRACTION,
                      validation_seed: int = VALIDATION_SEED) -> Dict[str, np.ndarray]:
    """Dirty-MNIST arrays (no normalisation, no noise): MNIST part first, then ambiguous.

    Args:
      split: "train" (54k MNIST + 60k ambiguous pairs), "validation" (6k MNIST only),
        "train_full" (120k) or "test" (10k MNIST + 60k ambiguous pairs).
      variant: Ambiguous-MNIST variant (see `load_ambiguous_arrays`).

    Returns:
      dict: ``images`` float32 ``[n, 28, 28]`` in [0, 1], ``label`` int64, ``is_ambiguous``
      bool, ``sample_id`` int64, ``noise_key`` int64 (see module docstring), each ``[n]``.
    """
    m = load_mnist_arrays(split, "mnist", data_dir, validation_fraction, validation_seed)
    parts = [dict(m, is_ambiguous=np.zeros(len(m["label"]), bool))]
    if split != "validation":
        a = load_ambiguous_arrays("test" if split == "test" else "train", variant, data_dir,
                                  tfds_data_dir)
        parts.append({"images": a["images"], "label": a["label"], "sample_id": a["sample_id"],
                      "noise_key": a["pair_id"] + NOISE_KEY_OFFSETS["ambiguous"],
                      "is_ambiguous": np.ones(len(a["label"]), bool)})
    keys = ("images", "label", "is_ambiguous", "sample_id", "noise_key")
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def prepare(arrays: Dict[str, np.ndarray], normalize_inputs: bool = True,
            noise_std: float = 0.0, noise_seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Model inputs from loader arrays: ``x = normalize(images) + fixed_noise`` as
    float32 ``[n, 28, 28, 1]``, and labels int64 ``[n]``."""
    x = arrays["images"].astype(np.float32)
    if normalize_inputs:
        x = normalize(x)
    if noise_std > 0.0:
        x = x + fixed_noise(arrays["noise_key"], noise_seed, noise_std)
    return x[..., None].astype(np.float32), arrays["label"].astype(np.int64)


def _dataset(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((x, y))


def mnist_source(split: str, data_dir: Optional[os.PathLike] = None, normalize_inputs: bool = True,
                 noise_std: float = 0.0, noise_seed: int = 0, **kw) -> tf.data.Dataset:
    """Pipeline source "mnist": ``(x float32 [28, 28, 1], y int64)``; splits as
    `load_mnist_arrays`; normalised, no noise by default."""
    return _dataset(*prepare(load_mnist_arrays(split, "mnist", data_dir, **kw),
                             normalize_inputs, noise_std, noise_seed))


def fashion_mnist_source(split: str, data_dir: Optional[os.PathLike] = None,
                         normalize_inputs: bool = True, **kw) -> tf.data.Dataset:
    """Pipeline source "fashion_mnist" (OoD for MNIST models): ``(x [28, 28, 1], y int64)``,
    normalised with the MNIST statistics, no noise. Splits "train", "test"."""
    return _dataset(*prepare(load_mnist_arrays(split, "fashion_mnist", data_dir, **kw),
                             normalize_inputs))


def dirty_mnist_source(split: str, data_dir: Optional[os.PathLike] = None,
                       variant: str = "official", normalize_inputs: bool = True,
                       noise_std: float = NOISE_STD, noise_seed: int = 0,
                       tfds_data_dir: Optional[str] = None, **kw) -> tf.data.Dataset:
    """Pipeline source "dirty_mnist": ``(x [28, 28, 1], y int64)``, normalised + fixed noise
    (std 0.05). Splits "train", "validation", "train_full", "test"; ``variant`` picks the
    Ambiguous-MNIST ("official" or "generated")."""
    arrays = load_dirty_arrays(split, variant, data_dir, tfds_data_dir, **kw)
    return _dataset(*prepare(arrays, normalize_inputs, noise_std, noise_seed))


def ambiguous_mnist_source(split: str, data_dir: Optional[os.PathLike] = None,
                           variant: str = "official", normalize_inputs: bool = True,
                           noise_std: float = NOISE_STD, noise_seed: int = 0,
                           tfds_data_dir: Optional[str] = None) -> tf.data.Dataset:
    """Pipeline source "ambiguous_mnist": flattened pairs ``(x [28, 28, 1], y int64)``,
    normalised + fixed noise (std 0.05) with the same keys as in Dirty-MNIST."""
    a = load_ambiguous_arrays(split, variant, data_dir, tfds_data_dir)
    arrays = {"images": a["images"], "label": a["label"],
              "noise_key": a["pair_id"] + NOISE_KEY_OFFSETS["ambiguous"]}
    return _dataset(*prepare(arrays, normalize_inputs, noise_std, noise_seed))


# ---- the dirty_mnist TFDS records (published order) ----------------------------------------
# Records: image float32 [28, 28, 1] in [0, 1], label, is_ambiguous, sample_id, pair_id;
# `train` = MNIST train then the ambiguous train pairs image by image, `test` likewise
# (tfds_builders/dirty_mnist). The helpers below follow the Dirty-MNIST guidance: validation and
# initial samples from the MNIST half, Ambiguous-MNIST cut only between images.
TFDS_SPLITS = ("train", "validation", "train_full", "test")


def record_noise_key(record, split: str) -> tf.Tensor:
    """The noise key (module docstring) of a ``dirty_mnist`` record of TFDS split ``split``
    ("train" or "test"): ``2_000_000 + pair_id`` for ambiguous pairs, else the MNIST offset of
    the split + ``sample_id``. int64 scalar (or ``[batch]`` for batched records)."""
    if split not in ("train", "test"):
        raise ValueError(f"Expected split in ('train', 'test'). Received: split={split!r}")
    offset = NOISE_KEY_OFFSETS["mnist_test" if split == "test" else "mnist_train"]
    return tf.where(record["is_ambiguous"], record["pair_id"] + NOISE_KEY_OFFSETS["ambiguous"],
                    record["sample_id"] + offset)


def tfds_transform(split: str, normalize_inputs: bool = True, noise_std: float = NOISE_STD,
                   noise_seed: int = 0):
    """The pip package's transform as a ``tf.data`` map over unbatched ``dirty_mnist`` records.

    ``fn(record) -> (x float32 [28, 28, 1], y int64)`` with ``x = normalize(image) +
    example_noise(record_noise_key(record, split), noise_seed, noise_std)``: normalisation
    (0.1307, 0.3081), then N(0, noise_std^2) noise that is fixed per example (the same in every
    epoch, order and subset; identical to `prepare` on the arrays of `load_dirty_arrays`).

    Args:
      split: the TFDS split the records come from, "train" or "test" (selects the keys).
      normalize_inputs: apply the normalisation.
      noise_std: noise standard deviation after normalisation (0: none, the DDU repo's loader).
      noise_seed: seed of the noise.
    """
    if split not in ("train", "test"):
        raise ValueError(f"Expected split in ('train', 'test'). Received: split={split!r}")
    if noise_std < 0:
        raise ValueError(f"Expected noise_std >= 0. Received: noise_std={noise_std}")

    def fn(record):
        x = tf.cast(record["image"][..., 0], tf.float32)
        if normalize_inputs:
            x = normalize(x)
        if noise_std > 0:
            x = x + example_noise(record_noise_key(record, split), noise_seed, noise_std)
        return x[..., None], tf.cast(record["label"], tf.int64)

    return fn


def _counts(metadata, split: str) -> Tuple[int, int, int]:
    if not metadata or "mnist_examples" not in metadata:
        raise ValueError("Expected the info.metadata of a prepared dirty_mnist dataset (version "
                         ">= 2.0.0: mnist_examples, ambiguous_images, labels_per_image). "
                         f"Received: {metadata!r}")
    if split not in ("train", "test"):
        raise ValueError(f"Expected split in ('train', 'test'). Received: split={split!r}")
    return (int(metadata["mnist_examples"][split]), int(metadata["ambiguous_images"][split]),
            int(metadata["labels_per_image"]))


def tfds_slice(metadata, split: str, part: str, start: Optional[int] = None,
               stop: Optional[int] = None) -> str:
    """A TFDS split string holding one part of a ``dirty_mnist`` split, never cutting an image.

    Args:
      metadata: ``builder.info.metadata`` of the prepared ``dirty_mnist`` config.
      split: "train" or "test".
      part: "mnist" (``start``/``stop`` index MNIST images) or "ambiguous" (``start``/``stop``
        index the split's Ambiguous-MNIST IMAGES; each brings its 10 adjacent labels).
      start, stop: half-open range, None = from the first / to the last.

    Returns:
      e.g. ``"train[:60000]"`` (MNIST train) or ``"train[60000:61000]"`` (ambiguous train
      images 0..99 with all their labels).
    """
    n_mnist, n_images, k = _counts(metadata, split)
    if part not in ("mnist", "ambiguous"):
        raise ValueError(f"Expected part in ('mnist', 'ambiguous'). Received: part={part!r}")
    size = n_mnist if part == "mnist" else n_images
    start = 0 if start is None else int(start)
    stop = size if stop is None else int(stop)
    if not 0 <= start <= stop <= size:
        raise ValueError(f"Expected 0 <= start <= stop <= {size} ({part} of {split}). Received: "
                         f"start={start}, stop={stop}")
    if part == "mnist":
        return f"{split}[{start}:{stop}]"
    return f"{split}[{n_mnist + k * start}:{n_mnist + k * stop}]"


def initial_indices(num_initial: int, seed: int = 0, num_mnist: int = 60000,
                    validation_fraction: float = VALIDATION_FRACTION,
                    validation_seed: int = VALIDATION_SEED) -> np.ndarray:
    """Initial active-learning samples from the MNIST half, outside the validation split.

    Sorted positions in the published ``train`` split (= MNIST training indices), drawn
    uniformly without replacement by ``np.random.default_rng(seed)`` from
    ``range(num_mnist)`` minus `validation_indices`.
    """
    rest = np.setdiff1d(np.arange(num_mnist),
                        validation_indices(num_mnist, validation_fraction, validation_seed))
    if not 0 <= int(num_initial) <= rest.size:
        raise ValueError(f"Expected 0 <= num_initial <= {rest.size} (MNIST images outside the "
                         f"validation split). Received: num_initial={num_initial}")
    return np.sort(np.random.default_rng(seed).choice(rest, int(num_initial), replace=False))


def load_tfds(split: str, config: str = "official", *, data_dir: Optional[os.PathLike] = None,
              tfds_data_dir: Optional[str] = None, builder_kwargs: Optional[dict] = None,
              validation_fraction: float = VALIDATION_FRACTION,
              validation_seed: int = VALIDATION_SEED, normalize_inputs: bool = True,
              noise_std: float = NOISE_STD, noise_seed: int = 0) -> tf.data.Dataset:
    """Dirty-MNIST from the ``dirty_mnist/<config>`` TFDS records, as the guidance asks.

    Splits (published order kept): "train" = MNIST train minus the validation images, then the
    Ambiguous-MNIST train pairs; "validation" = `validation_indices` of MNIST train only;
    "train_full" = all of TFDS ``train``; "test" = TFDS ``test``. Same examples, order and
    values as `prepare` on `load_dirty_arrays`.

    Args:
      config: ``dirty_mnist`` config ("official", "generated", "generated_tiny").
      data_dir: manual directory (else ``$DDU_TF_DATA_DIR``); tfds_data_dir: TFDS data dir.
      builder_kwargs: passed to ``tfds.builder`` (e.g. ``generated_file``/``generated_sha256``).
      validation_fraction, validation_seed: the MNIST-half validation split.
      normalize_inputs, noise_std, noise_seed: see `tfds_transform`.

    Returns:
      Unbatched ``tf.data.Dataset`` of ``(x float32 [28, 28, 1], y int64)``.
    """
    import tfds_builders.dirty_mnist  # noqa: F401  (registers the builder if not yet)
    from ddu_tf.data.pipeline import tfds_builder

    if split not in TFDS_SPLITS:
        raise ValueError(f"Expected split in {TFDS_SPLITS}. Received: split={split!r}")
    builder = tfds_builder(f"dirty_mnist/{config}", data_dir=tfds_data_dir, manual_dir=data_dir,
                           **(builder_kwargs or {}))
    source = "test" if split == "test" else "train"
    transform = tfds_transform(source, normalize_inputs, noise_std, noise_seed)
    if split in ("test", "train_full"):
        return builder.as_dataset(split=source).map(transform)
    n_mnist = _counts(builder.info.metadata, "train")[0]
    held_out = np.zeros(n_mnist, bool)
    held_out[validation_indices(n_mnist, validation_fraction, validation_seed)] = True
    held_out = tf.constant(held_out)
    if split == "validation":
        ds = builder.as_dataset(split=tfds_slice(builder.info.metadata, "train", "mnist"))
        ds = ds.filter(lambda r: tf.gather(held_out, r["sample_id"]))
    else:
        ds = builder.as_dataset(split="train").filter(
            lambda r: r["is_ambiguous"] | ~tf.gather(held_out, tf.clip_by_value(
                r["sample_id"], 0, n_mnist - 1)))
    return ds.map(transform)
