"""Uncertainty scores from logits, in nats, numerically stable (no epsilons).

All functions take logits (unnormalised log-probabilities) and work from ``log_softmax``;
``0 log 0`` is taken as 0 with ``tf.math.multiply_no_nan``, so logits of magnitude 1e4 (or
``-inf`` for impossible classes) give finite scores. Outputs keep the input's float dtype.

- Softmax entropy (aleatoric score of DDU; Mukhoti et al. 2021, Sec. 4):
  ``H[p] = -sum_c p_c log p_c`` with ``p = softmax(logits)``.
- Logsumexp ``logsumexp_c logits_c`` (the "softmax density"; applied to GMM log-densities it is
  DDU's epistemic score) and energy ``E = -T logsumexp(logits / T)`` (Liu et al. 2020).
- Deep ensembles (Lakshminarayanan et al. 2017) from member logits ``[members, batch, classes]``:
  ``log pbar = logsumexp_m log p_m - log M``; predictive entropy ``PE = H[pbar]``; mutual
  information ``MI = PE - (1/M) sum_m H[p_m]`` (>= 0 up to rounding).

Unlike the original (``metrics/uncertainty_confidence.py``), which adds ``eps = 1e-12`` inside
the log of the ensemble probabilities, these are exact.
"""
from __future__ import annotations

import tensorflow as tf


def _as_float_tensor(x, name: str, rank: int) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    if x.shape.rank != rank:
        shape = "[batch, classes]" if rank == 2 else "[members, batch, classes]"
        raise ValueError(f"Expected {name} of shape {shape}. Received: {name}.shape={x.shape}.")
    return x


def _entropy_from_log_probs(log_probs: tf.Tensor) -> tf.Tensor:
    """``-sum_c exp(l_c) l_c`` over the last axis, with ``0 * (-inf) = 0``."""
    return -tf.reduce_sum(tf.math.multiply_no_nan(log_probs, tf.exp(log_probs)), axis=-1)


def softmax_entropy(logits) -> tf.Tensor:
    """Entropy of ``softmax(logits)``: ``[batch, classes] -> [batch]`` (nats, in [0, log C])."""
    logits = _as_float_tensor(logits, "logits", 2)
    return _entropy_from_log_probs(tf.nn.log_softmax(logits, axis=-1))


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


def ensemble_log_mean_probs(member_logits) -> tf.Tensor:
    """``log((1/M) sum_m softmax(logits_m))``: ``[members, batch, classes] -> [batch, classes]``."""
    member_logits = _as_float_tensor(member_logits, "member_logits", 3)
    log_probs = tf.nn.log_softmax(member_logits, axis=-1)
    members = tf.cast(tf.shape(member_logits)[0], member_logits.dtype)
    return tf.reduce_logsumexp(log_probs, axis=0) - tf.math.log(members)


def ensemble_predictive_entropy(member_logits) -> tf.Tensor:
    """``H[(1/M) sum_m p_m]``: ``[members, batch, classes] -> [batch]`` (nats)."""
    return _entropy_from_log_probs(ensemble_log_mean_probs(member_logits))


def ensemble_expected_entropy(member_logits) -> tf.Tensor:
    """``(1/M) sum_m H[p_m]``: ``[members, batch, classes] -> [batch]`` (nats, aleatoric part)."""
    member_logits = _as_float_tensor(member_logits, "member_logits", 3)
    member_entropy = _entropy_from_log_probs(tf.nn.log_softmax(member_logits, axis=-1))
    return tf.reduce_mean(member_entropy, axis=0)


def ensemble_mutual_information(member_logits) -> tf.Tensor:
    """``PE - (1/M) sum_m H[p_m]``: ``[members, batch, classes] -> [batch]`` (nats, epistemic)."""
    return ensemble_predictive_entropy(member_logits) - ensemble_expected_entropy(member_logits)
