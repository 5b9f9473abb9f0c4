"""The data sets of the DDU training and evaluation scripts: specs, splits, pipelines.

One place for what ``experiments/train.py``, ``experiments/evaluate.py`` and
``experiments/plot_uncertainty.py`` must agree on, so that an evaluation sees exactly the
split (and preprocessing) its model was trained with:

* :data:`DATASETS`: name -> :class:`DatasetSpec` (source for ``ddu_tf.data.load``, classes,
  input shape, normalisation, augmentation, validation split);
* :func:`train_validation_arrays`: the original's seeded 10% validation hold-out (or the
  source's own validation split) and :func:`seeded_subset`, the ``--max-train-samples``
  subset;
* :func:`normalize_images` / :func:`random_crop_flip`: DDU's CIFAR/SVHN preprocessing;
* :func:`training_pipelines` / :func:`evaluation_pipeline` / :func:`load_test_split`:
  ``tf.data`` pipelines of ``(x [batch, ...] float32, y [batch] int64)``;
* :func:`density_monitor_data`: the samples ``train.py --density-callback-every`` watches.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from ddu_tf import data as ddu_data
from ddu_tf.training import epoch_permutation


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to load one data set.

    Attributes:
        source: name for ``ddu_tf.data.load`` (a registered source or a TFDS name).
        num_classes: number of classes.
        input_shape: shape of one model input.
        rgb_uint8: images come as uint8 RGB and are normalised with the DDU statistics.
        augment: random crop + flip for training when augmentation is on.
        validation_split: the source's own validation split, or None to hold out a seeded
            fraction of "train".
    """

    source: str
    num_classes: int
    input_shape: tuple
    rgb_uint8: bool = False
    augment: bool = False
    validation_split: str = None


DATASETS = {
    "cifar10": DatasetSpec("cifar10", 10, (32, 32, 3), rgb_uint8=True, augment=True),
    "cifar100": DatasetSpec("cifar100", 100, (32, 32, 3), rgb_uint8=True, augment=True),
    "svhn": DatasetSpec("svhn_cropped", 10, (32, 32, 3), rgb_uint8=True),
    "mnist": DatasetSpec("mnist", 10, (28, 28, 1), validation_split="validation"),
    "dirty_mnist": DatasetSpec("dirty_mnist", 10, (28, 28, 1), validation_split="validation"),
    # Dirty-MNIST with the regenerated Ambiguous-MNIST (builds offline from MNIST alone).
    "dirty_mnist_generated": DatasetSpec("dirty_mnist_generated", 10, (28, 28, 1),
                                         validation_split="validation"),
    # The same at smoke-test scale (20 generated ambiguous images): checks Dirty-MNIST commands.
    "dirty_mnist_generated_tiny": DatasetSpec("dirty_mnist_generated_tiny", 10, (28, 28, 1),
                                              validation_split="validation"),
    "fashion_mnist": DatasetSpec("fashion_mnist", 10, (28, 28, 1)),
    "mnist1d": DatasetSpec("mnist1d", 10, (40,)),
}
"""The data sets of ``experiments/train.py --dataset`` / ``evaluate.py --dataset``."""

def dataset_key(name):
    """``name`` in the spelling of :data:`DATASETS`' keys: the DDU README writes
    ``dirty-mnist`` (``fashion-mnist``, upper case) for ``dirty_mnist``; use as an argparse
    ``type=`` next to ``choices=sorted(DATASETS)``."""
    return str(name).strip().lower().replace("-", "_")


DDU_IMAGE_MEAN = (0.4914, 0.4822, 0.4465)
"""Per-channel mean used by DDU's loaders for CIFAR-10, CIFAR-100 *and* SVHN (all three use
the CIFAR-10 statistics in the original ``data/ood_detection/*.py``)."""
DDU_IMAGE_STD = (0.2023, 0.1994, 0.2010)
"""Per-channel std paired with :data:`DDU_IMAGE_MEAN`."""


def normalize_images(images):
    """``ToTensor`` + ``Normalize(DDU_IMAGE_MEAN, DDU_IMAGE_STD)`` for uint8 RGB images.

    Args:
        images: uint8 (or [0, 255] float) tensor ``[..., height, width, 3]``.

    Returns:
        float32 tensor of the same shape, ``(images / 255 - mean) / std``.
    """
    x = tf.cast(images, tf.float32) / 255.0
    return (x - tf.constant(DDU_IMAGE_MEAN)) / tf.constant(DDU_IMAGE_STD)


def random_crop_flip(image, seed, padding=4):
    """``RandomCrop(size, padding)`` + ``RandomHorizontalFlip()`` on one image, stateless.

    Zero-pads ``padding`` pixels on each side, crops back to the original size at a random
    offset and flips left-right with probability 1/2 (torchvision's CIFAR augmentation; pad
    before normalising so the padding is black, as torchvision does). The draws are a pure
    function of ``seed`` (no RNG state), so a resumed run augments as the uninterrupted one.

    Args:
        image: ``[height, width, channels]`` tensor (one example, not a batch).
        seed: ``int64 [2]`` stateless seed of this image's draws.
        padding: pixels of zero padding (>= 0).

    Returns:
        Tensor of the same shape and dtype.
    """
    if int(padding) < 0:
        raise ValueError(f"Expected padding >= 0. Received: padding={padding}")
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    shape = tf.shape(image)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, shape, crop_seed)
    return tf.image.stateless_random_flip_left_right(cropped, flip_seed)


def preprocess_fn(spec):
    """``fn(x, y) -> (x float32, y)`` of data set ``spec``: DDU normalisation of uint8 RGB
    images, else a cast (no augmentation; see :func:`training_pipelines`)."""
    def fn(x, y):
        x = normalize_images(x) if spec.rgb_uint8 else tf.cast(x, tf.float32)
        return x, y
    return fn


def split_arrays(source, split, data_dir=None):
    """All examples of one split as numpy arrays ``(x [n, ...], y [n] int64)``."""
    xs, ys = [], []
    for x, y in ddu_data.load(source, split, batch_size=4096, data_dir=data_dir):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def train_validation_arrays(spec, *, seed, val_size, data_dir=None):
    """Training and validation arrays of a data set.

    Without a source validation split, the original's split is used: indices ``0..n-1``
    shuffled by ``np.random.RandomState(seed)``; the first ``floor(val_size * n)`` are
    validation, the rest training.

    Returns:
        ``(x_train, y_train), (x_val, y_val)``.
    """
    if spec.validation_split:
        return (split_arrays(spec.source, "train", data_dir),
                split_arrays(spec.source, spec.validation_split, data_dir))
    x, y = split_arrays(spec.source, "train", data_dir)
    indices = np.arange(len(x))
    np.random.RandomState(seed).shuffle(indices)
    split = int(math.floor(val_size * len(x)))
    valid, train = indices[:split], indices[split:]
    return (x[train], y[train]), (x[valid], y[valid])


def seeded_subset(arrays, max_samples, seed):
    """A seeded random subset of ``max_samples`` examples, kept in stored order.

    Not the first N: Dirty-MNIST lists its MNIST part first, so the first N examples would
    contain no ambiguous digits. ``max_samples`` None (or >= n) keeps everything.

    Args:
        arrays: tuple of arrays ``[n, ...]``.
        max_samples: examples to keep, or None.
        seed: seed of ``np.random.RandomState(seed).permutation(n)``.
    """
    n = len(arrays[0])
    if not max_samples or max_samples >= n:
        return tuple(arrays)
    keep = np.sort(np.random.RandomState(seed).permutation(n)[:max_samples])
    return tuple(a[keep] for a in arrays)


def training_pipelines(spec, train_arrays, val_arrays, *, batch_size, val_batch_size, seed,
                       augment, epochs, initial_epoch=0):
    """``tf.data`` pipelines: shuffled (and augmented) training batches, ordered validation.

    The training pipeline yields the batches of epochs ``initial_epoch .. epochs - 1`` one
    after the other (give ``model.fit`` ``steps_per_epoch = ceil(n / batch_size)``): epoch
    ``e`` takes the examples in ``ddu_tf.training.epoch_permutation(n, seed, e)`` order and, when
    augmenting, crops and flips example ``i`` with the stateless seed ``(seed, e, i)``. Every
    epoch is thus a pure function of ``(seed, e)``: a run resumed at epoch ``initial_epoch``
    trains on the very batches of the uninterrupted run.

    Returns:
        ``(train_ds, val_ds)`` of ``(x [batch, *input_shape] float32, y [batch] int64)``.
    """
    x, y = train_arrays
    n = len(x)
    x, y = tf.constant(x), tf.constant(y)
    preprocess = preprocess_fn(spec)
    base = tf.constant([int(seed), 0], tf.int64)

    def example(epoch, index):
        image = x[index]
        if augment and spec.augment:
            key = tf.random.experimental.stateless_fold_in(
                tf.random.experimental.stateless_fold_in(base, epoch), tf.cast(index, tf.int64))
            image = random_crop_flip(image, key, padding=4)
        return preprocess(image, y[index])

    def epoch_batches(epoch):
        order = tf.data.Dataset.from_tensor_slices(epoch_permutation(n, seed, epoch))
        return (order.map(lambda index: example(epoch, index),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(batch_size))

    train_ds = (tf.data.Dataset.range(int(initial_epoch), int(epochs))
                .flat_map(epoch_batches).prefetch(tf.data.AUTOTUNE))
    val_ds = (tf.data.Dataset.from_tensor_slices(val_arrays)
              .map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
              .batch(val_batch_size).prefetch(tf.data.AUTOTUNE))
    return train_ds, val_ds


def evaluation_pipeline(spec, arrays, batch_size):
    """Ordered, un-augmented batches of ``arrays`` with the preprocessing of ``spec``."""
    return (tf.data.Dataset.from_tensor_slices(tuple(arrays))
            .map(preprocess_fn(spec), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def load_test_split(name, batch_size, data_dir=None):
    """Batched test split of data set ``name`` with its training-time preprocessing."""
    spec = DATASETS[name]
    return ddu_data.load(spec.source, "test", batch_size, data_dir=data_dir,
                         preprocess=preprocess_fn(spec))


def density_monitor_data(dataset, ood_dataset, train_arrays, val_arrays, *, samples, seed,
                         batch_size, data_dir=None):
    """The three data sets of :class:`ddu_tf.training.FeatureDensityMonitor` for a run.

    * GMM fitting: :func:`seeded_subset` of ``samples`` training examples (un-augmented);
    * in-distribution: :func:`seeded_subset` of ``samples`` validation examples;
    * OoD: the first ``samples`` test examples of ``ood_dataset``, read once here (so a
      missing set fails before training starts) and kept in memory.

    All three get ``dataset``'s evaluation preprocessing (the OoD set its own, as
    :func:`load_test_split`), in batches of ``batch_size``.

    Args:
        dataset, ood_dataset: keys of :data:`DATASETS` with the same input shape.
        train_arrays, val_arrays: ``(x [n, ...], y [n])`` of :func:`train_validation_arrays`.
        samples: examples per set (>= 1).
        seed: seed of the subsets.
        batch_size: batch size of the pipelines.
        data_dir: data directory passed to ``ddu_tf.data.load``.

    Returns:
        ``(train_ds, in_ds, ood_ds)`` of ``(x [batch, *input_shape] float32, y [batch])``.

    Raises:
        ValueError: the input shapes differ, or ``ood_dataset`` cannot be read offline.
    """
    spec, ood_spec = DATASETS[dataset], DATASETS[ood_dataset]
    if ood_spec.input_shape != spec.input_shape:
        raise ValueError(f"Expected an OoD set with the input shape {spec.input_shape} of "
                         f"{dataset!r}. Received: {ood_dataset!r} with input shape "
                         f"{ood_spec.input_shape}.")
    try:
        ood = next(iter(load_test_split(ood_dataset, batch_size, data_dir).unbatch()
                        .take(samples).batch(samples)))
    except Exception as error:  # noqa: BLE001 (any loader failure means "not available")
        raise ValueError(
            f"Expected the OoD set {ood_dataset!r} to be readable offline (manual MNIST-family "
            "files under --dataset-root / $DDU_TF_DATA_DIR, or a prepared TFDS build). "
            f"Received: {type(error).__name__}: {error}") from error
    ood = tf.data.Dataset.from_tensor_slices(tuple(t.numpy() for t in ood)).batch(batch_size)
    return (evaluation_pipeline(spec, seeded_subset(train_arrays, samples, seed), batch_size),
            evaluation_pipeline(spec, seeded_subset(val_arrays, samples, seed), batch_size),
            ood)


__all__ = ["DATASETS", "density_monitor_data", "dataset_key", "DDU_IMAGE_MEAN", "DDU_IMAGE_STD", "DatasetSpec", "evaluation_pipeline",
           "normalize_images", "preprocess_fn", "random_crop_flip", "seeded_subset",
           "split_arrays", "load_test_split", "train_validation_arrays", "training_pipelines"]
