"""Uncertainty scores in nats, numerically stable (no epsilons): the package's one home of
entropy, predictive entropy, mutual information and ensemble / MC averaging.

Two kinds of input:

* logits ``[batch, classes]`` of one network (softmax entropy, logsumexp, energy,
  confidence);
* stacked predictions ``[samples, batch, classes]`` of ``S`` ensemble members or ``S``
  MC-dropout passes, as log-probabilities (``log_mean_prob``, ``predictive_entropy``,
  ``expected_entropy``, ``mutual_information``; used by the acquisition functions) or as
  logits or log-probabilities (the ``ensemble_*`` functions apply ``log_softmax`` first,
  which leaves log-probabilities unchanged up to rounding).

Everything works in log space: ``log pbar = logsumexp_s log p_s - log S`` and ``0 log 0`` is
taken as 0 with ``tf.math.multiply_no_nan``, so logits of magnitude 1e4 (or ``-inf`` for
impossible classes) give finite scores. Outputs keep the input's float dtype.

- Entropy ``H[p] = -sum_c p_c log p_c``; softmax entropy is DDU's aleatoric score
  (Mukhoti et al. 2021, Sec. 4) and Gal et al.'s Max Entropy (2017, eq. 2) when ``p = pbar``.
- Predictive entropy ``PE = H[pbar]``; expected entropy ``(1/S) sum_s H[p_s]``; mutual
  information ``MI = PE - (1/S) sum_s H[p_s]`` (BALD, Gal et al. 2017 eq. 3; the deep-ensemble
  epistemic score of Lakshminarayanan et al. 2017; >= 0 up to rounding).
- Logsumexp ``logsumexp_c logits_c`` (the "softmax density"; applied to GMM log-densities it is
  DDU's epistemic score) and energy ``E = -T logsumexp(logits / T)`` (Liu et al. 2020).

Unlike the original (``metrics/uncertainty_confidence.py``), which adds ``eps = 1e-12`` inside
the log of the ensemble probabilities, these are exact.

Example:
    >>> log_probs = tf.nn.log_softmax(member_logits)          # [5, batch, 10]
    >>> mutual_information(log_probs)                          # [batch], nats
    >>> ensemble_mutual_information(member_logits)             # the same from logits
"""
from __future__ import annotations

import tensorflow as tf

_SHAPES = {2: "[batch, classes]", 3: "[members, batch, classes]"}


def _as_float_tensor(x, name: str, rank: int) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    if x.shape.rank != rank:
        raise ValueError(f"Expected {name} of shape {_SHAPES[rank]}. Received: "
                         f"{name}.shape={x.shape}.")
    return x


def check_log_probs(log_probs) -> tf.Tensor:
    """``log_probs`` as a floating tensor ``[samples, batch, classes]`` (rank 3).

    Raises:
        ValueError: non-floating dtype or a rank other than 3 (unknown rank is accepted).
    """
    log_probs = tf.convert_to_tensor(log_probs)
    if not log_probs.dtype.is_floating:
        raise ValueError(
            f"Expected floating log_probs. Received: log_probs.dtype={log_probs.dtype}")
    if log_probs.shape.rank is not None and log_probs.shape.rank != 3:
        raise ValueError(
            "Expected log_probs of shape [T, batch, classes] (rank 3). Received: "
            f"log_probs.shape={log_probs.shape}. Stack the T passes on axis 0.")
    return log_probs


# ----------------------------------------------------------------------------- entropy
def entropy_from_log_probs(log_p, axis=-1) -> tf.Tensor:
    """Entropy ``-sum p log p`` in nats from log-probabilities, with ``0 log 0 = 0``.

    Args:
        log_p: log-probabilities of any shape; ``axis`` indexes the classes.
        axis: class axis.

    Returns:
        The entropy, ``log_p`` with ``axis`` reduced.
    """
    log_p = tf.convert_to_tensor(log_p)
    return -tf.reduce_sum(tf.math.multiply_no_nan(log_p, tf.exp(log_p)), axis=axis)


def softmax_entropy(logits) -> tf.Tensor:
    """Entropy of ``softmax(logits)``: ``[batch, classes] -> [batch]`` (nats, in [0, log C])."""
    logits = _as_float_tensor(logits, "logits", 2)
    return entropy_from_log_probs(tf.nn.log_softmax(logits, axis=-1))


# ----------------------------------------------------------------------------- S samples
def log_mean_prob(log_probs) -> tf.Tensor:
    """Log of the averaged predictive ``log((1/S) sum_s p_s)``.

    Args:
        log_probs: ``[S, batch, classes]`` log-softmax outputs of S members / MC passes.

    Returns:
        ``[batch, classes]``: ``logsumexp_s(log p_s) - log S``.
    """
    log_probs = check_log_probs(log_probs)
    num_samples = tf.cast(tf.shape(log_probs)[0], log_probs.dtype)
    return tf.reduce_logsumexp(log_probs, axis=0) - tf.math.log(num_samples)


def predictive_entropy(log_probs) -> tf.Tensor:
    """``PE = H[(1/S) sum_s p_s]``: ``[S, batch, classes]`` log-probabilities -> ``[batch]``."""
    return entropy_from_log_probs(log_mean_prob(log_probs))


def expected_entropy(log_probs) -> tf.Tensor:
    """``(1/S) sum_s H[p_s]`` (the aleatoric part): ``[S, batch, classes] -> [batch]`` nats."""
    log_probs = check_log_probs(log_probs)
    return tf.reduce_mean(entropy_from_log_probs(log_probs), axis=0)


def mutual_information(log_probs) -> tf.Tensor:
    """``MI = PE - (1/S) sum_s H[p_s]`` (epistemic; BALD): ``[S, batch, classes] -> [batch]``.

    Not clipped: rounding can leave it slightly below 0 (order 1e-7 in float32).
    """
    log_probs = check_log_probs(log_probs)
    return predictive_entropy(log_probs) - expected_entropy(log_probs)


# ----------------------------------------------------------------------------- ensembles
def _member_log_probs(member_outputs) -> tf.Tensor:
    member_outputs = _as_float_tensor(member_outputs, "member_logits", 3)
    return tf.nn.log_softmax(member_outputs, axis=-1)


def ensemble_log_mean_probs(member_logits) -> tf.Tensor:
    """``log((1/M) sum_m softmax(logits_m))``: ``[members, batch, classes] -> [batch, classes]``.

    ``member_logits`` may be logits or log-probabilities.
    """
    return log_mean_prob(_member_log_probs(member_logits))


def ensemble_predictive_entropy(member_logits) -> tf.Tensor:
    """``H[(1/M) sum_m p_m]``: ``[members, batch, classes] -> [batch]`` (nats).

    ``member_logits`` may be logits or log-probabilities.
    """
    return predictive_entropy(_member_log_probs(member_logits))


def ensemble_expected_entropy(member_logits) -> tf.Tensor:
    """``(1/M) sum_m H[p_m]``: ``[members, batch, classes] -> [batch]`` (nats, aleatoric part).

    ``member_logits`` may be logits or log-probabilities.
    """
    return expected_entropy(_member_log_probs(member_logits))


def ensemble_mutual_information(member_logits) -> tf.Tensor:
    """``PE - (1/M) sum_m H[p_m]``: ``[members, batch, classes] -> [batch]`` (nats, epistemic).

    ``member_logits`` may be logits or log-probabilities.
    """
    return mutual_information(_member_log_probs(member_logits))


# ----------------------------------------------------------------------------- one network
def logsumexp(logits) -> tf.Tensor:
    """``logsumexp_c logits_c``: ``[batch, classes] -> [batch]``; higher = more confident."""
    logits = _as_float_tensor(logits, "logits", 2)
    return tf.reduce_logsumexp(logits, axis=-1)


def energy(logits, temperature: float = 1.0) -> tf.Tensor:
    """Free energy ``-T logsumexp(logits / T)``: ``[batch, classes] -> [batch]``.

    Higher = more OoD (Liu et al. 2020); nats.
    """
    if not temperature > 0:
        raise ValueError(f"Expected temperature > 0. Received: temperature={temperature!r}.")
    logits = _as_float_tensor(logits, "logits", 2)
    t = tf.cast(temperature, logits.dtype)
    return -t * tf.reduce_logsumexp(logits / t, axis=-1)


def max_softmax_probability(logits) -> tf.Tensor:
    """Confidence ``max_c softmax(logits)_c``: ``[batch, classes] -> [batch]``."""
    logits = _as_float_tensor(logits, "logits", 2)
    return tf.exp(tf.reduce_max(tf.nn.log_softmax(logits, axis=-1), axis=-1))


__all__ = [
    "check_log_probs", "energy", "ensemble_expected_entropy", "ensemble_log_mean_probs",
    "ensemble_mutual_information", "ensemble_predictive_entropy", "entropy_from_log_probs",
    "expected_entropy", "log_mean_prob", "logsumexp", "max_softmax_probability",
    "mutual_information", "predictive_entropy", "softmax_entropy",
]
