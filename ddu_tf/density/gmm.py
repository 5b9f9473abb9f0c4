"""DDU's class-conditional Gaussian density on feature space (Mukhoti et al. 2021, Sec. 4).

One Gaussian per class, fitted in float64 (``utils/gmm_utils.py`` of the original)::

    mu_c    = mean of the features of class c                     [classes, dim]
    Sigma_c = (Z_c - mu_c)^T (Z_c - mu_c) / (n_c - 1)             [classes, dim, dim]
    q(z|c)  = N(z | mu_c, Sigma_c + eps I)

with the smallest ``eps`` of the original's ladder ``[0, tiny, 1e-308, 1e-307, ..., 1e-1]``
for which every class's Cholesky factor exists. Scores, all in nats:

- ``class_log_densities``: ``log q(z|c)``, the ``[batch, classes]`` "GMM logits";
- ``log_density``: ``logsumexp_c log q(z|c)`` (the original's OoD score, Eq. 2 without
  priors; higher = more in-distribution);
- ``weighted_log_density``: ``log sum_c pi_c q(z|c)`` with ``pi_c = n_c / n``, the marginal of
  a ``tfd.MixtureSameFamily`` (used for active learning).

Differences from the original, on purpose:

- ``tf.linalg.cholesky`` returns NaNs instead of raising, so the jitter search tests the
  factors for NaN (the original's except-clause misses newer torch error messages, issues
  4 and 8, and crashes).
- The search is batched: ladder steps whose jittered matrices are bitwise equal to one already
  tried (``diag + eps == diag`` in float64) are skipped, since they must give the same outcome;
  the remaining candidates are factorised in chunks of ``[steps, classes, dim, dim]``, and the
  first step (in ladder order) where every class succeeds is taken, exactly as the original's
  serial loop does. On borderline (numerically rank-deficient) matrices, Eigen's LLT used by
  TensorFlow and LAPACK's potrf used by torch/NumPy can disagree by about one ladder step.
- A class with fewer than 2 samples raises ValueError (the original silently divides by 0).

Speed (``bench/gmm_fit.py``): the scatter matrices are computed from their block upper
triangle (:func:`~ddu_tf.density.statistics.symmetric_gram`), class by class without a copy
of the whole feature array; scoring multiplies by the precomputed inverse factors
``W_c = L_c^{-1}`` in one matrix product per column block for all classes at once (see
:func:`_gaussian_scores`) instead of ``classes`` triangular solves.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from scipy.linalg import lapack

from ddu_tf.density.statistics import ClassStatistics

tfd = tfp.distributions
_LOGGER = logging.getLogger(__name__)

#: The original's jitter ladder: ``[0, tiny(float64), 1e-308, 1e-307, ..., 1e-1]`` (310 values).
JITTER_LADDER = np.array(
    [0.0, np.finfo(np.float64).tiny] + [10.0**e for e in range(-308, 0)], dtype=np.float64
)

_CHUNK_BYTES = 64 * 2**20


_CHOLESKY_FAILURE = b"Cholesky decomposition was not successful"


@contextlib.contextmanager
def _cholesky_warnings_counted():
    """Hold back TensorFlow's C++ warning for each failed Cholesky inside the block.

    The CPU kernel logs one line per failed matrix to file descriptor 2, which the jitter
    search provokes on purpose (thousands of lines for one fit on rank-deficient features).
    File descriptor 2 is pointed at a temporary file for the block; afterwards every other
    line is written back to the real stderr unchanged, and the failures are reported as
    one count. Yields a one-element list that receives that count.
    """
    count = [0]
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2: leave logging alone
        yield count
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield count
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().splitlines(keepends=True)
            count[0] = sum(_CHOLESKY_FAILURE in line for line in lines)
            other = b"".join(line for line in lines if _CHOLESKY_FAILURE not in line)
            if other:
                os.write(2, other)


def _lower_factors(matrices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Cholesky factors of ``[..., D, D]`` matrices and a ``[...]`` mask of successes."""
    chol = tf.linalg.band_part(tf.linalg.cholesky(matrices), -1, 0)
    ok = tf.reduce_all(tf.math.is_finite(chol), axis=[-2, -1])
    return chol, ok


def search_jitter(covariances, ladder=JITTER_LADDER, chunk_bytes: int = _CHUNK_BYTES):
    """First ``eps`` of ``ladder`` for which every ``covariances[c] + eps I`` has a Cholesky factor.

    Equivalent to the original's serial loop (one Cholesky attempt per ladder step, all
    classes) but vectorised: duplicate jittered matrices are skipped (see module docstring),
    the first step is tried on every class, and later steps on the classes that failed only,
    in batched chunks ``[steps, failing classes, dim, dim]`` whose size is bounded by
    ``chunk_bytes``; the first step where those succeed is then checked on every class.

    Args:
      covariances: ``[classes, dim, dim]`` float64 symmetric matrices.
      ladder: 1-D increasing-ish sequence of jitters to try, in order.
      chunk_bytes: memory bound of one batched Cholesky call.

    Returns:
      ``(eps, scale_tril)``: the chosen jitter (Python float) and the ``[classes, dim, dim]``
      lower Cholesky factors of ``covariances + eps I``.

    Raises:
      ValueError: if no jitter in the ladder works (e.g. NaN/Inf covariances or a scale so
        large that 0.1 is negligible); rescale the features.

    TensorFlow's C++ warning for each failed factorisation is held back (see
    :func:`_cholesky_warnings_counted`); their number is logged once at INFO level.
    """
    with _cholesky_warnings_counted() as failures:
        eps, scale_tril = _search_jitter(covariances, ladder, chunk_bytes)
    if failures[0]:
        _LOGGER.info("GMM jitter search: %d Cholesky factorisations failed on the way to "
                     "eps = %g (expected for singular covariances).", failures[0], eps)
    return eps, scale_tril


def _search_jitter(covariances, ladder, chunk_bytes):
    """The body of :func:`search_jitter` (same arguments, results and errors)."""
    cov = tf.convert_to_tensor(covariances, tf.float64)
    if cov.shape.rank != 3 or cov.shape[-1] != cov.shape[-2]:
        raise ValueError(
            f"Expected covariances of shape [classes, dim, dim]. Received: {cov.shape}."
        )
    diag = tf.linalg.diag_part(cov).numpy()
    ladder = np.asarray(ladder, np.float64)
    # Keep only ladder steps that change the jittered matrix (bitwise) w.r.t. earlier steps.
    seen, steps = set(), []
    for i, eps in enumerate(ladder):
        key = (diag + eps).tobytes()
        if key not in seen:
            seen.add(key)
            steps.append(i)
    all_classes = np.arange(int(cov.shape[0]))
    diag_t = tf.constant(diag)

    def factorise(step_indices, classes):
        """Factors and success mask ``[steps, len(classes)]`` of the jittered classes."""
        if len(step_indices) == 1 and len(classes) == len(all_classes):
            # One step on every class: set the diagonal in place of gather + broadcast.
            eps = ladder[step_indices[0]]
            jittered = cov if eps == 0.0 else tf.linalg.set_diag(cov, diag_t + eps)
            chol, ok = _lower_factors(jittered[None])
            return chol, ok.numpy()
        eps = tf.constant(ladder[step_indices])[:, None, None]
        sub_cov, sub_diag = tf.gather(cov, classes), tf.gather(diag_t, classes)
        jittered = tf.linalg.set_diag(
            tf.broadcast_to(sub_cov, [len(step_indices)] + sub_cov.shape.as_list()),
            sub_diag[None] + eps)
        chol, ok = _lower_factors(jittered)
        return chol, ok.numpy()

    # The first step on every class (eps = 0 succeeds for full-rank covariances). Later steps
    # are tried on the classes that failed ("suspects") only, in chunks; the first step where
    # all suspects succeed is then checked on every class. A step that fails for a suspect
    # fails for the whole set, so the step returned is the serial loop's first success.
    chol, ok = factorise(steps[:1], all_classes)
    if ok.all():
        return float(ladder[steps[0]]), chol[0]
    suspects = all_classes[~ok[0]]
    i = 1
    while i < len(steps):
        per_step = max(1, len(suspects) * int(cov.shape[1]) ** 2 * 8)
        chunk = steps[i:i + max(1, chunk_bytes // per_step)]
        _, ok = factorise(chunk, suspects)
        passed = ok.all(axis=1)
        if not passed.any():
            i += len(chunk)
            continue
        first = int(np.argmax(passed))
        chol, ok = factorise(chunk[first:first + 1], all_classes)
        if ok.all():
            return float(ladder[chunk[first]]), chol[0]
        suspects = np.union1d(suspects, all_classes[~ok[0]])
        i += first + 1
    raise ValueError(
        "Expected the covariances to become positive definite with a jitter of at most "
        f"{ladder[-1]:g}. Received covariances where no jitter of the ladder works (largest "
        f"diagonal entry {np.max(np.abs(diag)):g}); standardise or rescale the features."
    )


class ClassConditionalGaussians:
    """Class-conditional Gaussians ``q(z|c)`` and class priors ``pi_c``, as TFP distributions.

    Build with :meth:`fit` (in-memory features), :meth:`fit_batches` (streamed) or
    :meth:`from_statistics`; persist with :meth:`save` / :meth:`load`.

    Example::

        gmm = ClassConditionalGaussians.fit(train_features, train_labels, num_classes=10)
        ood_score = gmm.log_density(test_features)         # [batch], higher = in-dist
        logits = gmm.class_log_densities(test_features)     # [batch, 10]
    """

    def __init__(self, means, covariances, counts, jitter: float, scale_tril=None):
        """Args:
          means: ``[classes, dim]`` float64.
          covariances: ``[classes, dim, dim]`` float64 (without jitter).
          counts: ``[classes]`` samples per class (for the priors ``pi_c = n_c / n``).
          jitter: ``eps`` added to the diagonal of every covariance.
          scale_tril: optional ``[classes, dim, dim]`` Cholesky factors of
            ``covariances + jitter I``; computed (and checked) when omitted.
        """
        self.means = tf.convert_to_tensor(means, tf.float64)
        self.covariances = tf.convert_to_tensor(covariances, tf.float64)
        self.counts = tf.convert_to_tensor(counts, tf.float64)
        self.jitter = float(jitter)
        if scale_tril is None:
            eye = tf.eye(self.dim, dtype=tf.float64)
            scale_tril, ok = _lower_factors(self.covariances + self.jitter * eye)
            if not bool(tf.reduce_all(ok)):
                raise ValueError(
                    f"Expected covariances + jitter I to be positive definite. Received "
                    f"jitter={self.jitter:g} that fails for classes "
                    f"{np.flatnonzero(~ok.numpy()).tolist()}; use search_jitter()."
                )
        self.scale_tril = tf.convert_to_tensor(scale_tril, tf.float64)
        self._scoring = _scoring_operands(self.means, self.scale_tril)
        self.components = tfd.MultivariateNormalTriL(loc=self.means, scale_tril=self.scale_tril)
        self.class_priors = self.counts / tf.reduce_sum(self.counts)
        self.mixture = tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(probs=self.class_priors),
            components_distribution=self.components,
        )

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_statistics(cls, stats: ClassStatistics, ladder=JITTER_LADDER):
        """Fit from :class:`ClassStatistics` (raises ValueError for classes with < 2 samples)."""
        covariances = stats.covariances()
        jitter, scale_tril = search_jitter(covariances, ladder)
        return cls(stats.means, covariances, stats.counts, jitter, scale_tril)

    @classmethod
    def fit(cls, features, labels, num_classes: int, ladder=JITTER_LADDER):
        """Fit on in-memory ``features [n, dim]`` and ``labels [n]`` (two-pass, float64)."""
        stats = ClassStatistics.from_batch(features, labels, num_classes)
        return cls.from_statistics(stats, ladder)

    @classmethod
    def fit_batches(cls, batches, num_classes: int, ladder=JITTER_LADDER):
        """Fit on an iterable (e.g. ``tf.data.Dataset``) of ``(features, labels)`` batches.

        Uses mergeable sufficient statistics, so the result equals :meth:`fit` on the
        concatenated data up to rounding (about 1e-12 relative).
        """
        return cls.from_statistics(ClassStatistics.from_batches(batches, num_classes), ladder)

    # ----------------------------------------------------------------- scoring
    def _check(self, features) -> tf.Tensor:
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"Expected features of shape [batch, {self.dim}]. Received: {features.shape}."
            )
        features = features.astype(np.float64, copy=False)
        # A sum is finite iff every term is, barring overflow (then the full check decides).
        if not np.isfinite(np.sum(features)) and not np.all(np.isfinite(features)):
            raise ValueError(
                "Expected finite features. Received NaN/Inf entries in features; check the "
                "feature extractor."
            )
        return tf.constant(features)

    def score_tensors(self, features):
        """Scores of a float64 tensor ``[batch, dim]`` without the NumPy input checks, for
        use inside ``tf.function`` / ``strategy.run``.

        Returns:
          ``(class_log_densities [batch, classes], log_density [batch],
          weighted_log_density [batch])``, float64 nats.
        """
        return _gaussian_scores(features, *self._scoring, tf.math.log(self.class_priors))

    def scores(self, features, batch_size: int = 1024) -> dict:
        """All scores, computed by a compiled function in chunks of ``batch_size`` rows.

        Args:
          features: ``[batch, dim]``, converted to float64.
          batch_size: rows per compiled call (memory ~ ``batch_size * classes * dim * 8`` B).

        Returns:
          dict of float64 tensors: ``class_log_densities [batch, classes]``,
          ``log_density [batch]`` and ``weighted_log_density [batch]`` (nats).
        """
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size!r}.")
        features = self._check(features)
        n = int(features.shape[0])
        chunks = [self.score_tensors(features[i:i + batch_size])
                  for i in range(0, max(n, 1), batch_size)]
        cld, ld, wld = (tf.concat(parts, axis=0) for parts in zip(*chunks))
        return {"class_log_densities": cld, "log_density": ld, "weighted_log_density": wld}

    def class_log_densities(self, features) -> tf.Tensor:
        """``log q(z|c)``, ``[batch, classes]`` float64 (nats): the original's GMM logits."""
        return self.scores(features)["class_log_densities"]

    def log_density(self, features) -> tf.Tensor:
        """``logsumexp_c log q(z|c)``, ``[batch]``: the original's OoD score (no priors)."""
        return self.scores(features)["log_density"]

    def weighted_log_density(self, features) -> tf.Tensor:
        """``log sum_c pi_c q(z|c)`` = ``mixture.log_prob(z)``, ``[batch]`` (nats)."""
        return self.scores(features)["weighted_log_density"]

    # ----------------------------------------------------------------- persistence
    def save(self, path) -> str:
        """Write means, covariances, counts, jitter and factors to a ``.npz`` file (no pickle).

        Returns the path written (``.npz`` is appended by NumPy when missing).
        """
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        np.savez(
            path,
            means=self.means.numpy(),
            covariances=self.covariances.numpy(),
            counts=self.counts.numpy(),
            jitter=np.float64(self.jitter),
            scale_tril=self.scale_tril.numpy(),
        )
        return path

    @classmethod
    def load(cls, path) -> "ClassConditionalGaussians":
        """Read a model written by :meth:`save`."""
        with np.load(os.fspath(path), allow_pickle=False) as data:
            missing = {"means", "covariances", "counts", "jitter", "scale_tril"} - set(data.files)
            if missing:
                raise ValueError(
                    f"Expected a file written by ClassConditionalGaussians.save. Received "
                    f"{os.fspath(path)!r} without {sorted(missing)}."
                )
            return cls(
                data["means"], data["covariances"], data["counts"], float(data["jitter"]),
                data["scale_tril"],
            )


#: Column-block width of the scoring products (see :func:`_scoring_operands`).
SCORE_BLOCK = 128


def _scoring_operands(means, scale_tril, block: int = SCORE_BLOCK):
    """Operands of :func:`_gaussian_scores` for Gaussians ``N(means_c, L_c L_c^T)``.

    With ``W_c = L_c^{-1}`` (lower triangular) and a common centre ``m`` (the average of the
    class means), ``L_c^{-1}(z - mu_c) = W_c (z - m) - W_c (mu_c - m)``. Row block ``i`` of
    ``W_c`` (rows ``s_i .. s_i + w``) is zero beyond column ``s_i + w``, so block ``i`` of all
    classes' whitened features is one product ``(z - m)[:, :s_i + w] @ B_i`` with ``B_i``
    ``[s_i + w, classes * w]``: ``(k + 1) / k`` times the FLOPs of ``classes`` triangular
    solves for ``k`` blocks, as large matrix products. Centring on ``m`` keeps the
    subtraction's cancellation to the scale of the class means' spread.

    Returns:
      ``(centre [D], weights, offsets, log_det [classes])``: ``weights[i]`` is
      ``B_i [s_i + w, classes * w]``, ``offsets[i]`` the matching ``W_c (mu_c - m)`` entries
      ``[classes * w]``, ``log_det`` is ``log |det L_c|``.
    """
    classes, dim = int(means.shape[0]), int(means.shape[1])
    # W_c = L_c^{-1} by LAPACK's triangular inverse (dim^3 / 3 FLOPs, a third of a solve
    # against the identity).
    whitening = tf.constant(np.stack(
        [np.tril(lapack.dtrtri(factor, lower=1)[0]) for factor in scale_tril.numpy()]),
        tf.float64)
    centre = tf.reduce_mean(means, axis=0)
    whitened_means = tf.linalg.matvec(whitening, means - centre)  # [classes, D]
    weights, offsets = [], []
    for s in range(0, dim, block):
        w = min(block, dim - s)
        rows = whitening[:, s:s + w, :s + w]  # [classes, w, s + w]
        weights.append(tf.reshape(tf.transpose(rows, [2, 0, 1]), [s + w, classes * w]))
        offsets.append(tf.reshape(whitened_means[:, s:s + w], [classes * w]))
    log_det = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(scale_tril)), axis=-1)
    return centre, weights, offsets, log_det


@tf.function(reduce_retracing=True)
def _gaussian_scores(features, centre, weights, offsets, log_det, log_priors):
    """Compiled scores of ``features [batch, dim]`` under Gaussians ``N(mu_c, L_c L_c^T)``.

    The parameters come from :func:`_scoring_operands` and are arguments, so one trace
    serves every fitted GMM of the same shape (active learning fits a new one each round).
    ``log N(z | mu_c, L_c L_c^T) = -||L_c^{-1}(z - mu_c)||^2 / 2 - log|det L_c| - D/2 log 2 pi``,
    the value of ``components.log_prob(features[:, None, :])`` (tested against it and scipy).

    Returns:
      ``(class_log_densities [batch, classes], log_density [batch],
      weighted_log_density [batch])`` in nats, float64.
    """
    classes = tf.shape(log_det)[0]
    dim = tf.shape(centre)[0]
    centred = features - centre
    mahalanobis = tf.zeros([tf.shape(features)[0], classes], tf.float64)
    for weight, offset in zip(weights, offsets):
        whitened = tf.matmul(centred[:, :tf.shape(weight)[0]], weight) - offset
        mahalanobis += tf.reduce_sum(
            tf.reshape(tf.square(whitened), [tf.shape(features)[0], classes, -1]), axis=-1)
    const = 0.5 * tf.cast(dim, tf.float64) * np.log(2.0 * np.pi)
    class_log_densities = -0.5 * mahalanobis - log_det - const
    log_density = tf.reduce_logsumexp(class_log_densities, axis=-1)
    weighted = tf.reduce_logsumexp(class_log_densities + log_priors, axis=-1)
    return class_log_densities, log_density, weighted
