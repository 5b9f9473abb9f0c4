"""Active-learning pools of DDU's ``active_learning_script.py``: MNIST and Dirty-MNIST.

Both pools are in-memory NumPy arrays (acquisition needs random access by index):

* **MNIST**: the 60k MNIST training images (optionally a random subset, for CPU-scale runs).
* **Dirty-MNIST AL pool**: ``subsample`` (default 1000) clean MNIST training images plus the
  Ambiguous-MNIST *train* pairs (one (image, label) pair per sampled label, flattened by
  :func:`ddu_tf.data.dirty_mnist.flatten_pairs` exactly as the original ``AmbiguousMNIST``).
  Every sample carries the ground-truth flag ``is_ambiguous`` (True for the Ambiguous-MNIST
  pairs), so the fraction of acquired ambiguous samples is measured exactly, not only through
  a pretrained model's entropy threshold.

Differences from the original, on purpose:

* The clean MNIST images are drawn **without** replacement. The original uses
  ``np.random.choice(60000, 1000)`` (``replace=True`` by default), which duplicates about 8 of
  the 1000 images -- a bug: duplicates waste acquisitions and inflate the clean half.
* The draw uses its own ``np.random.default_rng(seed)`` instead of the unseeded global NumPy
  state, so the pool is reproducible.
* ``ambiguous_images_limit`` keeps only the first ``K`` Ambiguous-MNIST train images (all of
  their pairs, so the set is cut at a multiple of the labels per image, as the Dirty-MNIST
  guidance asks), for CPU-scale runs.

Inputs are normalised with MNIST's ``(x - 0.1307) / 0.3081``. No noise by default (the DDU
repo's loaders add none); ``noise_std > 0`` adds the fixed per-sample noise of
:func:`ddu_tf.data.dirty_mnist.fixed_noise` with the Dirty-MNIST noise keys.

Example::

    pool, test_x, test_y = load_al_pool("dirty_mnist", variant="generated", subsample=1000)
    pool.images.shape         # [1000 + pairs, 28, 28, 1] float32
    pool.is_ambiguous.mean()  # fraction of ambiguous pairs in the pool
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Tuple

import numpy as np

from ddu_tf.data import dirty_mnist
from ddu_tf.io.mnist_idx import load_idx_arrays

NUM_CLASSES = 10
DATASETS = ("mnist", "dirty_mnist")


@dataclasses.dataclass(frozen=True)
class ActiveLearningPool:
    """Arrays of an active-learning pool (all with the same leading size ``N``).

    Attributes:
      images: float32 ``[N, 28, 28, 1]``, MNIST-normalised (plus noise if asked).
      labels: int64 ``[N]`` in ``0..9``.
      is_ambiguous: bool ``[N]``, True for Ambiguous-MNIST pairs (ground truth).
      source_index: int64 ``[N]``: the MNIST-train index for clean samples, the
        Ambiguous-MNIST *image* index for ambiguous ones (the pairs of one image share it).
      noise_key: int64 ``[N]``: the Dirty-MNIST noise key (MNIST train ``i`` -> ``i``,
        ambiguous pair ``j`` -> ``2_000_000 + j``), a unique sample id.
    """

    images: np.ndarray
    labels: np.ndarray
    is_ambiguous: np.ndarray
    source_index: np.ndarray
    noise_key: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _pixels01(images, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"Expected {name} of shape [N, 28, 28]. Received: {name}.shape={images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"Expected uint8 or floating {name}. Received: dtype={images.dtype}")
    if images.size and (images.min() < -1e-6 or images.max() > 1 + 1e-6):
        raise ValueError(f"Expected {name} with pixels in [0, 1] (not normalised). Received: "
                         f"range [{images.min():.3g}, {images.max():.3g}]")
    return images.astype(np.float32)


def _labels(labels, name: str, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Expected integer {name} of shape [{n}]. Received: {name}.shape="
                         f"{labels.shape}, dtype={labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"Expected {name} in 0..{NUM_CLASSES - 1}. Received: range "
                         f"[{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


def _pool(images01, labels, is_ambiguous, source_index, noise_key, noise_std, noise_seed):
    if noise_std < 0:
        raise ValueError(f"Expected noise_std >= 0. Received: noise_std={noise_std}")
    x = dirty_mnist.normalize(images01)
    if noise_std > 0:
        x = x + dirty_mnist.fixed_noise(noise_key, noise_seed, noise_std)
    return ActiveLearningPool(x[..., None].astype(np.float32), labels, is_ambiguous,
                              source_index.astype(np.int64), noise_key.astype(np.int64))


def mnist_al_pool(images, labels, *, pool_size: Optional[int] = None, seed: int = 0,
                  noise_std: float = 0.0, noise_seed: int = 0) -> ActiveLearningPool:
    """The MNIST active-learning pool (all clean).

    Args:
      images: ``[N, 28, 28]`` MNIST training images, uint8 or float in [0, 1].
      labels: int ``[N]``.
      pool_size: keep a random subset of this many images, drawn without replacement
        (None = all ``N``, as the original).
      seed: seed of the subset draw.
      noise_std, noise_seed: fixed Gaussian noise after normalisation (0 = none).

    Returns:
      An :class:`ActiveLearningPool` with ``is_ambiguous`` all False (sorted MNIST indices).
    """
    x = _pixels01(images, "images")
    labels = _labels(labels, "labels", x.shape[0])
    index = np.arange(x.shape[0], dtype=np.int64)
    if pool_size is not None:
        if not 1 <= int(pool_size) <= x.shape[0]:
            raise ValueError(f"Expected 1 <= pool_size <= {x.shape[0]}. Received: pool_size={pool_size}")
        rng = np.random.default_rng(seed)
        index = np.sort(rng.choice(x.shape[0], size=int(pool_size), replace=False)).astype(np.int64)
    return _pool(x[index], labels[index], np.zeros(index.size, bool), index,
                 index + dirty_mnist.NOISE_KEY_OFFSETS["mnist_train"], noise_std, noise_seed)


def dirty_mnist_al_pool(mnist_images, mnist_labels, ambiguous_images, ambiguous_labels,
                        ambiguous_image_index, ambiguous_pair_index=None, *,
                        subsample: int = 1000, seed: int = 0,
                        ambiguous_images_limit: Optional[int] = None,
                        noise_std: float = 0.0, noise_seed: int = 0) -> ActiveLearningPool:
    """DDU's Dirty-MNIST active-learning pool: clean MNIST subset + Ambiguous-MNIST train pairs.

    Args:
      mnist_images: ``[N, 28, 28]`` MNIST *training* images (uint8 or float in [0, 1]).
      mnist_labels: int ``[N]``.
      ambiguous_images: ``[P, 28, 28]`` Ambiguous-MNIST train *pairs* in [0, 1] (the output
        of :func:`ddu_tf.data.dirty_mnist.load_ambiguous_arrays`, key ``images``).
      ambiguous_labels: int ``[P]`` (key ``label``).
      ambiguous_image_index: int ``[P]`` image index of each pair (key ``sample_id``).
      ambiguous_pair_index: int ``[P]`` global pair index (key ``pair_id``), for the noise
        keys; defaults to ``0..P-1``.
      subsample: number of clean MNIST images, drawn WITHOUT replacement (the original draws
        with replacement -- a bug, see the module docstring).
      seed: seed of the clean draw.
      ambiguous_images_limit: keep only the pairs of the first ``K`` distinct images (in
        pair order); None keeps all.
      noise_std, noise_seed: fixed Gaussian noise after normalisation (0 = none).

    Returns:
      An :class:`ActiveLearningPool` of ``subsample + P'`` samples: clean first (sorted MNIST
      indices), then the ambiguous pairs in their given order.
    """
    mnist_x = _pixels01(mnist_images, "mnist_images")
    mnist_labels = _labels(mnist_labels, "mnist_labels", mnist_x.shape[0])
    if not 1 <= int(subsample) <= mnist_x.shape[0]:
        raise ValueError(f"Expected 1 <= subsample <= {mnist_x.shape[0]} (clean MNIST images). "
                         f"Received: subsample={subsample}")
    amb_x = _pixels01(ambiguous_images, "ambiguous_images")
    amb_y = _labels(ambiguous_labels, "ambiguous_labels", amb_x.shape[0])
    amb_image = np.asarray(ambiguous_image_index, dtype=np.int64)
    amb_pair = (np.arange(amb_x.shape[0], dtype=np.int64) if ambiguous_pair_index is None
                else np.asarray(ambiguous_pair_index, dtype=np.int64))
    if amb_image.shape != amb_y.shape or amb_pair.shape != amb_y.shape:
        raise ValueError("Expected ambiguous_image_index and ambiguous_pair_index of shape "
                         f"[{amb_y.size}]. Received: {amb_image.shape}, {amb_pair.shape}")
    if ambiguous_images_limit is not None:
        _, first = np.unique(amb_image, return_index=True)
        ordered = amb_image[np.sort(first)]
        if not 1 <= int(ambiguous_images_limit) <= ordered.size:
            raise ValueError(f"Expected 1 <= ambiguous_images_limit <= {ordered.size}. "
                             f"Received: ambiguous_images_limit={ambiguous_images_limit}")
        keep = np.isin(amb_image, ordered[:int(ambiguous_images_limit)])
        amb_x, amb_y, amb_image, amb_pair = amb_x[keep], amb_y[keep], amb_image[keep], amb_pair[keep]
    rng = np.random.default_rng(seed)
    clean = np.sort(rng.choice(mnist_x.shape[0], size=int(subsample), replace=False)).astype(np.int64)
    offsets = dirty_mnist.NOISE_KEY_OFFSETS
    return _pool(
        np.concatenate([mnist_x[clean], amb_x]),
        np.concatenate([mnist_labels[clean], amb_y]),
        np.concatenate([np.zeros(clean.size, bool), np.ones(amb_y.size, bool)]),
        np.concatenate([clean, amb_image]),
        np.concatenate([clean + offsets["mnist_train"], amb_pair + offsets["ambiguous"]]),
        noise_std, noise_seed)


def load_mnist_pixels(data_dir: Optional[os.PathLike] = None, *, train_limit: Optional[int] = None,
                      digits: Optional[Tuple[int, ...]] = None
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST as the Bayesian CNN of Gal et al. (2017) takes it: raw pixels, not normalised.

    Args:
      data_dir: manual data directory (else ``$DDU_TF_DATA_DIR``), see
        :func:`ddu_tf.io.mnist_idx.load_idx_arrays`.
      train_limit: keep the first ``train_limit`` training images (IDX order; None = all
        60000), for CPU-scale runs. Applied before ``digits``.
      digits: keep only these classes and relabel them by position (``(a, b)`` -> ``a`` is 0,
        ``b`` is 1: the binary task of the paper's Experiment 3). None = all ten.

    Returns:
      ``(x_train, y_train, x_test, y_test)``: float32 ``[N, 28, 28, 1]`` pixels / 255 in
      [0, 1] and int64 ``[N]`` labels, for the training and the test split.
    """
    if train_limit is not None and int(train_limit) < 1:
        raise ValueError(f"Expected train_limit >= 1 or None. Received: train_limit={train_limit}")
    if digits is not None:
        digits = tuple(int(d) for d in digits)
        if len(set(digits)) != len(digits) or len(digits) < 2 or not all(
                0 <= d < NUM_CLASSES for d in digits):
            raise ValueError(f"Expected at least two distinct digits in 0..{NUM_CLASSES - 1}. "
                             f"Received: digits={digits}")
    x_train, y_train = load_idx_arrays("mnist", "train", data_dir=data_dir)
    x_test, y_test = load_idx_arrays("mnist", "test", data_dir=data_dir)
    if train_limit is not None:
        x_train, y_train = x_train[:int(train_limit)], y_train[:int(train_limit)]
    arrays = [(x_train, y_train), (x_test, y_test)]
    if digits is not None:
        relabel = np.full(NUM_CLASSES, -1, np.int64)
        relabel[list(digits)] = np.arange(len(digits))
        arrays = [(x[relabel[y] >= 0], relabel[y][relabel[y] >= 0]) for x, y in arrays]
    (x_train, y_train), (x_test, y_test) = [
        (_pixels01(x, "images")[..., None], y.astype(np.int64)) for x, y in arrays]
    return x_train, y_train, x_test, y_test


def load_al_pool(dataset: str, *, variant: str = "generated",
                 data_dir: Optional[os.PathLike] = None, tfds_data_dir: Optional[str] = None,
                 subsample: int = 1000, pool_size: Optional[int] = None,
                 ambiguous_images_limit: Optional[int] = None, seed: int = 0,
                 noise_std: float = 0.0) -> Tuple[ActiveLearningPool, np.ndarray, np.ndarray]:
    """Load the pool of ``dataset`` and the MNIST test set.

    Args:
      dataset: ``"mnist"`` or ``"dirty_mnist"`` (the original's ``-ambiguous``).
      variant: Ambiguous-MNIST variant, ``"official"`` (.pt files) or ``"generated"``
        (TFDS ``ambiguous_mnist/generated``); see :func:`dirty_mnist.load_ambiguous_arrays`.
      data_dir: manual data directory (else ``$DDU_TF_DATA_DIR``).
      tfds_data_dir: TFDS data directory for the generated variant.
      subsample: clean MNIST images in the Dirty-MNIST pool.
      pool_size: MNIST only: random subset of the 60k training images (None = all).
      ambiguous_images_limit: Dirty-MNIST only: keep the first ``K`` ambiguous images.
      seed: seed of the clean draw / subset.
      noise_std: fixed noise after normalisation (0 = none, as the DDU repo).

    Returns:
      ``(pool, test_images float32 [10000, 28, 28, 1], test_labels int64 [10000])``; the
      test set is MNIST test, normalised, without noise (as the original).
    """
    if dataset not in DATASETS:
        raise ValueError(f"Expected dataset in {DATASETS}. Received: dataset={dataset!r}")
    train = dirty_mnist.load_mnist_arrays("train_full", "mnist", data_dir)
    test = dirty_mnist.load_mnist_arrays("test", "mnist", data_dir)
    test_x, test_y = dirty_mnist.prepare(test)
    if dataset == "mnist":
        pool = mnist_al_pool(train["images"], train["label"], pool_size=pool_size, seed=seed,
                             noise_std=noise_std)
        return pool, test_x, test_y
    amb = dirty_mnist.load_ambiguous_arrays("train", variant, data_dir, tfds_data_dir)
    pool = dirty_mnist_al_pool(train["images"], train["label"], amb["images"], amb["label"],
                               amb["sample_id"], amb["pair_id"], subsample=subsample, seed=seed,
                               ambiguous_images_limit=ambiguous_images_limit, noise_std=noise_std)
    return pool, test_x, test_y
