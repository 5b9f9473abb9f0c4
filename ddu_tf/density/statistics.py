"""Streamed, mergeable per-class sufficient statistics of feature vectors (float64).

For every class ``c`` we keep

- ``counts[c]``  = n_c, the number of samples seen,
- ``means[c]``   = mu_c = (1/n_c) sum_i z_i, shape ``[classes, dim]``,
- ``scatter[c]`` = M_c = sum_i (z_i - mu_c)(z_i - mu_c)^T, shape ``[classes, dim, dim]``,

so that the DDU covariance is ``Sigma_c = M_c / (n_c - 1)`` (Mukhoti et al. 2021, Sec. 4;
``utils/gmm_utils.py`` of the original). Two sets of statistics combine exactly with Chan,
Golub & LeVeque's parallel update (1979):

    n   = n_a + n_b
    d   = mu_b - mu_a
    mu  = mu_a + d * n_b / n
    M   = M_a + M_b + d d^T * n_a n_b / n

Each batch is reduced with a two-pass (centred) formula before merging, so no raw sums of
squares are ever formed: the result stays accurate when the features have a large common
offset (where the textbook ``sum z z^T - n mu mu^T`` loses all significant digits). Means are
carried as ``shift + residual`` (a batch's rounded mean plus its rounding error), so ``d`` in
the merge is computed to full precision even when ``|mu| >> spread`` (with plain float64 means
the merge would inherit the means' rounding error, ``ulp(|mu|)``, at first order). Merging
is associative and commutative up to rounding, so statistics computed on different replicas
or shards can be merged in any order.

Example::

    stats = ClassStatistics.empty(num_classes=10, dim=512)
    for features, labels in batches:          # features [batch, 512], labels [batch]
        stats = stats.merge(ClassStatistics.from_batch(features, labels, num_classes=10))
    sigma = stats.covariances()              # [10, 512, 512], float64
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def validate_features_and_labels(features, labels, num_classes: int):
    """Check and convert a batch of features and integer labels.

    Args:
      features: array-like ``[batch, dim]``, finite real numbers.
      labels: array-like ``[batch]`` of integers in ``[0, num_classes)``.
      num_classes: number of classes, a positive integer.

    Returns:
      ``(features, labels)`` as NumPy arrays: float64 ``[batch, dim]`` (the input itself when
      it already is float64) and int32 ``[batch]``.

    Raises:
      ValueError: naming the offending argument (wrong rank, mismatched lengths, NaN/Inf
        features, non-integer or out-of-range labels).
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(
            f"Expected num_classes to be a positive integer. Received: num_classes={num_classes!r}"
        )
    num_classes = int(num_classes)
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2:
        raise ValueError(
            "Expected features of shape [batch, dim]. "
            f"Received: features.shape={features.shape}; flatten or reshape them first."
        )
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"Expected labels of shape [batch] = [{features.shape[0]}] matching features. "
            f"Received: labels.shape={labels.shape}."
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(
                "Expected integer class labels. Received non-integer values in labels; "
                "pass class indices, not one-hot vectors or probabilities."
            )
    features = features.astype(np.float64, copy=False)
    # A sum is finite iff every term is (barring overflow of finite terms, which the exact
    # count below then clears): one read of the features instead of a boolean copy.
    if not np.isfinite(np.sum(features)) and not np.all(np.isfinite(features)):
        bad = int(np.count_nonzero(~np.isfinite(features)))
        raise ValueError(
            f"Expected finite features. Received {bad} NaN/Inf entries in features; check the "
            "feature extractor (e.g. diverged training) before fitting the density."
        )
    labels = labels.astype(np.int64, copy=False)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Expected labels in [0, {num_classes}) (num_classes={num_classes}). "
            f"Received labels in [{labels.min()}, {labels.max()}]; set num_classes to cover "
            "every label."
        )
    return features, labels.astype(np.int32, copy=False)


#: Column-block width of :func:`symmetric_gram` (128: blocks large enough for full-speed
#: matrix products, 62.5% of a full product's FLOPs at dim 512).
GRAM_BLOCK = 128


def _mirror_upper(square):
    """The square matrix whose lower triangle is the transpose of ``square``'s upper one."""
    index = tf.range(tf.shape(square)[0])
    return tf.where(index[:, None] <= index[None, :], square, tf.transpose(square))


def symmetric_gram(centred, block: int = GRAM_BLOCK):
    """``centred^T centred``, ``[D, D]``, from the block upper triangle only.

    With ``k = ceil(D / block)`` column blocks ``Z_i`` this computes the block rows
    ``Z_i^T [Z_i ... Z_k]`` (``(k + 1) / (2 k)`` of the ``2 n D^2`` FLOPs of one full matrix
    product) and mirrors the upper triangle, so the result is exactly symmetric. One product
    (then mirrored) when ``D <= block`` or ``D`` is not known when tracing.

    Args:
      centred: ``[n, D]`` float tensor.
      block: column-block width.
    """
    dim = centred.shape[-1]
    if dim is None or dim <= block:
        return _mirror_upper(tf.matmul(centred, centred, transpose_a=True))
    starts = list(range(0, dim, block))
    upper = [tf.matmul(centred[:, s:s + block], centred[:, s:], transpose_a=True)
             for s in starts]  # upper[i]: [block_i, D - s_i]
    rows = []
    for i, s in enumerate(starts):
        width = min(block, dim - s)
        mirrored = [tf.transpose(upper[j][:, s - starts[j]:s - starts[j] + width])
                    for j in range(i)]
        diagonal = _mirror_upper(upper[i][:, :width])
        rows.append(tf.concat(mirrored + [diagonal, upper[i][:, width:]], axis=1))
    return tf.concat(rows, axis=0)


def class_moments(rows):
    """Two-pass moments of one class's ``rows [n, D]`` (float64): count ``[]``, shift ``[D]``,
    residual ``[D]`` and scatter ``[D, D]`` (the unit of :func:`batch_moments`)."""
    n = tf.cast(tf.shape(rows)[0], tf.float64)
    shift = tf.math.divide_no_nan(tf.reduce_sum(rows, axis=0), n)
    centred = rows - shift
    residual = tf.math.divide_no_nan(tf.reduce_sum(centred, axis=0), n)
    scatter = symmetric_gram(centred) - n * (residual[:, None] * residual[None, :])
    return n, shift, residual, scatter


_compiled_class_moments = tf.function(class_moments, reduce_retracing=True)


@tf.function(reduce_retracing=True)
def batch_moments(features, labels, num_classes: int):
    """Per-class moments of one batch, the unit that streamed and distributed fits merge with
    :func:`merge_moments`.

    ``features`` float64 ``[n, D]`` and ``labels`` int32 ``[n]`` -> count ``[C]``, shift
    ``[C, D]``, residual ``[C, D]``, scatter ``[C, D, D]``, with mean = shift + residual (the
    rounded mean and its rounding error).
    """
    parts = tf.dynamic_partition(features, labels, num_classes)
    return tuple(tf.stack(m) for m in zip(*[class_moments(part) for part in parts]))


def _aligned_empty(shape, alignment: int = 64) -> np.ndarray:
    """Uninitialised float64 array whose data starts at a multiple of ``alignment`` bytes
    (TensorFlow's kernels require 64-byte-aligned buffers)."""
    nbytes = int(np.prod(shape)) * 8
    raw = np.empty(nbytes + alignment, np.uint8)
    offset = (-raw.ctypes.data) % alignment
    return raw[offset:offset + nbytes].view(np.float64).reshape(shape)


def host_batch_moments(features: np.ndarray, labels: np.ndarray, num_classes: int):
    """:func:`batch_moments` of validated NumPy ``features [n, D]`` (float64) and ``labels
    [n]``, one compiled call per class on that class's rows.

    Same values as :func:`batch_moments` (the same :func:`class_moments` per class), but each
    class's rows are gathered on the host into one reused, 64-byte-aligned buffer that
    TensorFlow reads in place (DLPack, no copy): no copy of the whole ``[n, D]`` array is made
    (a ``tf.constant`` of 200 MB costs more than the products at 50k x 512).
    """
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
    sizes = np.diff(bounds)
    buffer = _aligned_empty((int(sizes.max(initial=0)), features.shape[1]))
    moments = []
    for c in range(num_classes):
        rows = buffer[:sizes[c]]
        if sizes[c]:
            np.take(features, order[bounds[c]:bounds[c + 1]], axis=0, out=rows)
            tensor = tf.experimental.dlpack.from_dlpack(rows.__dlpack__())
        else:
            tensor = tf.zeros([0, features.shape[1]], tf.float64)
        # Eager execution is synchronous: the outputs are computed (and do not alias the
        # input) when the call returns, so the buffer can take the next class's rows.
        moments.append(_compiled_class_moments(tensor))
        del tensor
    return tuple(tf.stack(m) for m in zip(*moments))


@tf.function(reduce_retracing=True)
def merge_moments(a, b):
    """Chan et al.'s exact merge of two sets of per-class moments.

    Args:
      a, b: tuples ``(count [C], shift [C, D], residual [C, D], scatter [C, D, D])`` in
        float64; the class means are ``shift + residual`` (kept as an unevaluated sum so that
        a large common offset costs no precision).

    Returns:
      The same tuple for the union. A class empty on one side takes the other side's moments.
    """
    count_a, shift_a, res_a, scatter_a = a
    count_b, shift_b, res_b, scatter_b = b
    count = count_a + count_b
    # mean_b - mean_a, with the large shifts subtracted first (exact when they are close).
    delta = (shift_b - shift_a) + (res_b - res_a)
    weight_b = tf.math.divide_no_nan(count_b, count)[:, None]
    residual = res_a + delta * weight_b
    cross = tf.math.divide_no_nan(count_a * count_b, count)[:, None, None]
    scatter = scatter_a + scatter_b + cross * (delta[:, :, None] * delta[:, None, :])
    a_empty = count_a == 0
    b_empty = count_b == 0

    def pick(merged, from_a, from_b, extra_dims):
        mask_a = tf.reshape(a_empty, [-1] + [1] * extra_dims)
        mask_b = tf.reshape(b_empty, [-1] + [1] * extra_dims)
        return tf.where(mask_a, from_b, tf.where(mask_b, from_a, merged))

    return (
        count,
        pick(shift_a, shift_a, shift_b, 1),
        pick(residual, res_a, res_b, 1),
        pick(scatter, scatter_a, scatter_b, 2),
    )


class ClassStatistics:
    """Per-class count, mean and centred scatter matrix of features, in float64.

    Attributes:
      counts: ``tf.Tensor [classes]`` float64, samples per class.
      shift, residual: ``tf.Tensor [classes, dim]`` float64; the mean is ``shift + residual``
        (``shift`` a rounded mean, ``residual`` the small correction), see :attr:`means`.
      scatter: ``tf.Tensor [classes, dim, dim]`` float64, ``sum (z - mu)(z - mu)^T``.
    """

    def __init__(self, counts, shift, residual, scatter):
        self.counts = tf.convert_to_tensor(counts, tf.float64)
        self.shift = tf.convert_to_tensor(shift, tf.float64)
        self.residual = tf.convert_to_tensor(residual, tf.float64)
        self.scatter = tf.convert_to_tensor(scatter, tf.float64)
        c, d = self.shift.shape
        if (self.counts.shape != (c,) or self.residual.shape != (c, d)
                or self.scatter.shape != (c, d, d)):
            raise ValueError(
                "Expected counts [classes], shift and residual [classes, dim] and scatter "
                f"[classes, dim, dim]. Received shapes {self.counts.shape}, "
                f"{self.shift.shape}, {self.residual.shape}, {self.scatter.shape}."
            )

    @property
    def means(self) -> tf.Tensor:
        """Per-class means ``[classes, dim]`` (zero for classes without samples)."""
        return self.shift + self.residual

    def _moments(self):
        return (self.counts, self.shift, self.residual, self.scatter)

    @property
    def num_classes(self) -> int:
        return int(self.shift.shape[0])

    @property
    def dim(self) -> int:
        return int(self.shift.shape[1])

    @classmethod
    def empty(cls, num_classes: int, dim: int) -> "ClassStatistics":
        """Statistics of no data: the neutral element of :meth:`merge`."""
        return cls(
            tf.zeros([num_classes], tf.float64),
            tf.zeros([num_classes, dim], tf.float64),
            tf.zeros([num_classes, dim], tf.float64),
            tf.zeros([num_classes, dim, dim], tf.float64),
        )

    @classmethod
    def from_batch(cls, features, labels, num_classes: int) -> "ClassStatistics":
        """Two-pass statistics of one batch.

        Args:
          features: ``[batch, dim]`` finite reals (any float dtype; computed in float64).
          labels: ``[batch]`` integers in ``[0, num_classes)``.
          num_classes: number of classes ``C``.
        """
        features, labels = validate_features_and_labels(features, labels, num_classes)
        return cls(*host_batch_moments(features, labels, int(num_classes)))

    def merge(self, other: "ClassStatistics") -> "ClassStatistics":
        """Statistics of the union of the data behind ``self`` and ``other``."""
        if (self.num_classes, self.dim) != (other.num_classes, other.dim):
            raise ValueError(
                "Expected statistics with the same [classes, dim]. Received "
                f"[{self.num_classes}, {self.dim}] and [{other.num_classes}, {other.dim}]."
            )
        return ClassStatistics(*merge_moments(self._moments(), other._moments()))

    @classmethod
    def from_batches(cls, batches, num_classes: int) -> "ClassStatistics":
        """Accumulate statistics over an iterable of ``(features, labels)`` batches.

        Works with a ``tf.data.Dataset`` of ``([batch, dim], [batch])`` pairs or any
        iterable of array pairs. Raises ValueError if the iterable is empty.
        """
        stats = None
        for features, labels in batches:
            batch = cls.from_batch(np.asarray(features), np.asarray(labels), num_classes)
            stats = batch if stats is None else stats.merge(batch)
        if stats is None:
            raise ValueError("Expected at least one (features, labels) batch. Received none.")
        return stats

    def covariances(self) -> tf.Tensor:
        """Unbiased per-class covariances ``M_c / (n_c - 1)``, ``[classes, dim, dim]``.

        Raises:
          ValueError: if a class has fewer than 2 samples (its covariance is undefined);
            the message lists the classes.
        """
        counts = self.counts.numpy()
        short = np.flatnonzero(counts < 2)
        if short.size:
            raise ValueError(
                "Expected at least 2 samples per class to estimate a covariance. Received "
                f"counts {counts[short].astype(int).tolist()} for classes {short.tolist()}; "
                "check num_classes and that every class is present in the fitting data."
            )
        return self.scatter / (self.counts - 1.0)[:, None, None]
