"""Feature-space OoD detectors behind one interface: per-class Gaussians (DDU), a shared-covariance
Gaussian (Mahalanobis) and k-nearest-neighbour distance.

Every detector maps features ``[batch, dim]`` to one score ``[batch]`` (float64) where **higher
means more in-distribution**, and is defined by a few arrays (:meth:`FeatureDetector.state`)
plus JSON hyperparameters (:meth:`FeatureDetector.config`). The scores are a pure function of
those (:meth:`FeatureDetector.score_state`), so a Keras layer can hold the arrays as
non-trainable weights and score in its graph (:class:`ddu_tf.ddu_classifier.DensityScore`).

=================== ============================================================ =========
``kind``            score                                                        fitted on
=================== ============================================================ =========
``gmm``             ``log sum_c N(z | mu_c, Sigma_c)`` (DDU, Mukhoti et al.       class
                    2021, Eq. 2 without priors; the original's ``logsumexp``),    statistics
                    nats
``shared_gaussian`` ``max_c log N(z | mu_c, Sigma)``, ``Sigma`` the pooled        class
                    within-class covariance ``sum_c M_c / n`` (Lee et al. 2018;   statistics
                    LDA's covariance): ``-M(z)/2 - log|Sigma|/2 - D/2 log 2 pi``
                    with ``M(z) = min_c (z - mu_c)^T Sigma^{-1} (z - mu_c)``, an
                    affine map of Lee et al.'s Mahalanobis confidence score, nats
``knn``             ``-|| u - u_(k) ||``, ``u = z / ||z||`` and ``u_(k)`` its     features
                    k-th nearest L2-normalised training feature (Sun et al.
                    2022; k = 50 in their CIFAR-10 setting): minus a Euclidean
                    distance in [0, 2]
=================== ============================================================ =========

Both Gaussians are :class:`ddu_tf.density.ClassConditionalGaussians` (the shared one with every
class's covariance equal to the pooled one), fitted from the same streamed, mergeable
:class:`ddu_tf.density.ClassStatistics` with the same jitter search, and scored by the same
compiled function (``gmm._gaussian_scores``). Lee et al. and scikit-learn's
``LinearDiscriminantAnalysis.covariance_`` divide the pooled scatter by ``n`` (biased), and so
does this module; the per-class covariances keep DDU's ``n_c - 1``.

Example::

    stats = ClassStatistics.from_batch(train_features, train_labels, num_classes=10)
    detector = SharedGaussian.from_statistics(stats)
    detector.score(test_features)                     # [batch], higher = in-distribution
    knn = KNNDistance.from_features(train_features, k=50)
"""
from __future__ import annotations

import abc

import numpy as np
import tensorflow as tf

from ddu_tf.density.gmm import (JITTER_LADDER, ClassConditionalGaussians, _gaussian_scores,
                                _scoring_operands, search_jitter)
from ddu_tf.density.statistics import ClassStatistics, validate_features_and_labels


def _check_features(features, dim=None) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or (dim is not None and features.shape[1] != dim):
        expected = f"[batch, {dim}]" if dim is not None else "[batch, dim]"
        raise ValueError(f"Expected features of shape {expected}. Received: "
                         f"features.shape={features.shape}.")
    features = features.astype(np.float64, copy=False)
    if not np.all(np.isfinite(features)):
        raise ValueError("Expected finite features. Received NaN/Inf entries; check the "
                         "feature extractor.")
    return features


class FeatureDetector(abc.ABC):
    """A score ``[batch, dim] -> [batch]`` (float64, higher = more in-distribution).

    Subclasses set :attr:`kind`, :attr:`fitted_on` (``"statistics"``: built from
    :class:`ClassStatistics` with ``from_statistics``; ``"features"``: from the feature array
    with ``from_features``) and implement :meth:`state`, :meth:`config`, :meth:`score_state`.
    """

    kind: str = ""
    fitted_on: str = ""

    @abc.abstractmethod
    def state(self) -> dict:
        """Name -> NumPy array: everything :meth:`score_state` needs (Keras weights)."""

    @abc.abstractmethod
    def config(self) -> dict:
        """JSON-serialisable hyperparameters given to :meth:`score_state`."""

    @staticmethod
    @abc.abstractmethod
    def score_state(state: dict, features: tf.Tensor, **config) -> tf.Tensor:
        """In-graph scores of ``features [batch, dim]`` from :meth:`state` tensors: ``[batch]``
        float64."""

    @property
    def dim(self) -> int:
        """Feature dimension ``D``."""
        return int(self._dim)

    def score(self, features, batch_size: int = 1024) -> np.ndarray:
        """Scores of ``features [n, dim]`` (float64 ``[n]``), computed in chunks of
        ``batch_size`` rows by one compiled function."""
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size!r}.")
        features = _check_features(features, self.dim)
        state = {k: tf.constant(v) for k, v in self.state().items()}
        if not hasattr(self, "_compiled"):
            config = self.config()
            self._compiled = tf.function(
                lambda s, z: self.score_state(s, z, **config), reduce_retracing=True)
        parts = [self._compiled(state, tf.constant(features[i:i + batch_size])).numpy()
                 for i in range(0, features.shape[0], int(batch_size))]
        return np.concatenate(parts) if parts else np.zeros([0], np.float64)

    @classmethod
    def fit(cls, features, labels, num_classes: int, **options) -> "FeatureDetector":
        """Fit on in-memory ``features [n, dim]`` and integer ``labels [n]``."""
        features, labels = validate_features_and_labels(features, labels, num_classes)
        if cls.fitted_on == "statistics":
            return cls.from_statistics(
                ClassStatistics.from_batch(features, labels, num_classes), **options)
        return cls.from_features(features, **options)


class _GaussianDetector(FeatureDetector):
    """Scoring of :class:`ClassConditionalGaussians`; the state is the GMM's scoring operands
    with one column block (``centre [D]``, ``weight [D, C*D]`` = the stacked inverse Cholesky
    factors, ``offset [C*D]``, ``log_det [C]``, ``log_priors [C]``)."""

    fitted_on = "statistics"

    def __init__(self, gaussians: ClassConditionalGaussians):
        self.gaussians = gaussians
        self._dim = gaussians.dim

    def state(self) -> dict:
        g = self.gaussians
        centre, weights, offsets, log_det = _scoring_operands(g.means, g.scale_tril,
                                                              block=g.dim)
        return {"centre": centre.numpy(), "weight": weights[0].numpy(),
                "offset": offsets[0].numpy(), "log_det": log_det.numpy(),
                "log_priors": np.log(g.class_priors.numpy())}

    def config(self) -> dict:
        return {}

    @staticmethod
    def _class_log_densities(state, features):
        """``log N(z | mu_c, Sigma_c)``: ``[batch, classes]`` float64 (nats)."""
        cld, _, _ = _gaussian_scores(tf.cast(features, tf.float64), state["centre"],
                                     [state["weight"]], [state["offset"]], state["log_det"],
                                     state["log_priors"])
        return cld


class ClassGaussians(_GaussianDetector):
    """DDU's detector: ``log q(z) = logsumexp_c log N(z | mu_c, Sigma_c)`` (nats).

    ``gaussians`` is a fitted :class:`ClassConditionalGaussians` (per-class covariances
    ``M_c / (n_c - 1)``, the original's jitter ladder).
    """

    kind = "gmm"

    @classmethod
    def from_statistics(cls, stats: ClassStatistics, ladder=JITTER_LADDER) -> "ClassGaussians":
        """Fit from :class:`ClassStatistics` (every class needs >= 2 samples)."""
        return cls(ClassConditionalGaussians.from_statistics(stats, ladder))

    @staticmethod
    def score_state(state, features, **config):
        return tf.reduce_logsumexp(_GaussianDetector._class_log_densities(state, features), -1)


class SharedGaussian(_GaussianDetector):
    """Shared-covariance Gaussian (Lee et al. 2018; LDA): ``max_c log N(z | mu_c, Sigma)``.

    ``Sigma = sum_c M_c / n`` (pooled within-class scatter over all ``n`` samples, as
    ``sklearn.discriminant_analysis.LinearDiscriminantAnalysis(...).covariance_``), made
    positive definite by the first working jitter of ``ladder`` (:func:`search_jitter`).
    The posterior ``softmax_c(log N(z | mu_c, Sigma) + log pi_c)`` is LDA's
    ``predict_log_proba``; see :meth:`class_log_densities`.
    """

    kind = "shared_gaussian"

    @classmethod
    def from_statistics(cls, stats: ClassStatistics, ladder=JITTER_LADDER) -> "SharedGaussian":
        """Fit from :class:`ClassStatistics` (every class needs >= 1 sample)."""
        counts = stats.counts.numpy()
        empty = np.flatnonzero(counts < 1)
        if empty.size:
            raise ValueError(f"Expected at least 1 sample per class. Received none for classes "
                             f"{empty.tolist()}; check num_classes and the fitting data.")
        pooled = tf.reduce_sum(stats.scatter, axis=0) / float(counts.sum())
        jitter, scale_tril = search_jitter(pooled[None], ladder)
        classes = stats.num_classes
        tile = lambda m: tf.tile(m[None], [classes, 1, 1])  # noqa: E731
        return cls(ClassConditionalGaussians(stats.means, tile(pooled), stats.counts, jitter,
                                             tile(scale_tril[0])))

    @property
    def covariance(self) -> tf.Tensor:
        """The pooled covariance ``[dim, dim]`` (without jitter)."""
        return self.gaussians.covariances[0]

    def class_log_densities(self, features) -> tf.Tensor:
        """``log N(z | mu_c, Sigma)``: ``[batch, classes]`` float64 nats."""
        return self.gaussians.class_log_densities(_check_features(features, self.dim))

    @staticmethod
    def score_state(state, features, **config):
        return tf.reduce_max(_GaussianDetector._class_log_densities(state, features), -1)


class KNNDistance(FeatureDetector):
    """Minus the distance to the k-th nearest training feature, all L2-normalised (Sun et al.
    2022): ``-|| z/||z|| - u_(k) ||``, in [-2, 0].

    The bank of normalised training features ``[n, dim]`` is kept in float32 (Sun et al. use
    faiss in float32); distances come from ``||u - v||^2 = 2 - 2 u.v``, so their error is about
    ``1e-7 / distance``. Scoring costs ``batch * n * dim`` multiply-adds.
    """

    kind = "knn"
    fitted_on = "features"

    def __init__(self, bank, k: int = 50):
        bank = np.asarray(bank, np.float32)
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"Expected k to be a positive integer. Received: k={k!r}")
        if bank.ndim != 2 or bank.shape[0] < k:
            raise ValueError(f"Expected a bank of at least k={k} normalised features [n, dim]. "
                             f"Received: bank.shape={bank.shape}; lower k or fit on more data.")
        self.bank, self.k, self._dim = bank, int(k), bank.shape[1]

    @staticmethod
    def normalize(features) -> tf.Tensor:
        """``z / ||z||`` row-wise in float32 (a zero row stays zero)."""
        return tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1)

    @classmethod
    def from_features(cls, features, k: int = 50) -> "KNNDistance":
        """Keep the L2-normalised ``features [n, dim]`` as the bank."""
        return cls(cls.normalize(_check_features(features)).numpy(), k)

    def state(self) -> dict:
        return {"bank": self.bank}

    def config(self) -> dict:
        return {"k": self.k}

    @staticmethod
    def score_state(state, features, k=50):
        queries = KNNDistance.normalize(features)
        similarity = tf.matmul(queries, state["bank"], transpose_b=True)  # [batch, n]
        kth = tf.math.top_k(similarity, k=k, sorted=True).values[:, k - 1]
        return -tf.sqrt(tf.maximum(2.0 - 2.0 * tf.cast(kth, tf.float64), 0.0))


DETECTORS = {cls.kind: cls for cls in (ClassGaussians, SharedGaussian, KNNDistance)}
"""``kind`` -> detector class."""


def get_detector_class(kind: str):
    """The detector class of ``kind`` (``"gmm"``, ``"shared_gaussian"``, ``"knn"``)."""
    if kind not in DETECTORS:
        raise ValueError(f"Expected a detector kind in {sorted(DETECTORS)}. Received: "
                         f"kind={kind!r}.")
    return DETECTORS[kind]


__all__ = ["DETECTORS", "ClassGaussians", "FeatureDetector", "KNNDistance", "SharedGaussian",
           "get_detector_class"]
