"""Classification, calibration and OoD-detection metrics (NumPy / scikit-learn), as in DDU.

- ``accuracy``: fraction in [0, 1].
- ``expected_calibration_error``: 15 equal-width bins over the top-label confidence, sample
  ``i`` in bin ``ceil(15 conf_i - 1)`` (bins ``(k/15, (k+1)/15]``), exactly as the original's
  ``metrics/calibration_metrics.py``;
  ``ECE = sum_k (n_k / n) |acc_k - conf_k|``, returned in [0, 1] (the paper reports x100).
- ``ood_auroc_auprc``: sklearn ``roc_auc_score`` / ``average_precision_score`` with the
  original's conventions (``metrics/ood_metrics.py``): for an *uncertainty* score (entropy,
  MI; higher = more uncertain) OoD is the positive class; for a *confidence* score
  (logsumexp, GMM density; higher = more in-distribution) in-distribution is the positive class.
  AUROC is the same either way; AUPRC is not, so the flag matters.
- ``fpr_at_tpr``: FPR at 95% TPR (Liang et al. 2018; Sun et al. 2022), in-distribution as the
  positive class whatever the score's direction: the fraction of OoD samples still accepted
  when the threshold keeps 95% of the in-distribution samples. Same ``higher_is_uncertain``
  flag as ``ood_auroc_auprc``.
- ``nll``: mean negative log-likelihood of the true labels, nats.
- ``brier_score``: multi-class Brier score (Brier 1950) ``mean_i sum_c (p_ic - 1[c = y_i])^2``,
  in [0, 2].
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics as _sk


def _vector(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"Expected {name} of shape [batch]. Received: {name}.shape={x.shape}.")
    return x


def accuracy(labels, predictions) -> float:
    """Fraction of ``predictions [batch]`` equal to ``labels [batch]``."""
    labels, predictions = _vector(labels, "labels"), _vector(predictions, "predictions")
    if labels.shape != predictions.shape or labels.size == 0:
        raise ValueError(
            "Expected non-empty labels and predictions of equal length. Received "
            f"{labels.shape} and {predictions.shape}."
        )
    return float(np.mean(labels == predictions))


def expected_calibration_error(confidences, predictions, labels, num_bins: int = 15) -> float:
    """ECE over equal-width confidence bins (Guo et al. 2017), in [0, 1].

    Args:
      confidences: ``[batch]`` top-label probabilities in [0, 1] (0 is put in bin 0).
      predictions: ``[batch]`` predicted classes.
      labels: ``[batch]`` true classes.
      num_bins: number of bins (DDU: 15).
    """
    conf = _vector(confidences, "confidences").astype(np.float64)
    predictions, labels = _vector(predictions, "predictions"), _vector(labels, "labels")
    if not (conf.shape == predictions.shape == labels.shape) or conf.size == 0:
        raise ValueError(
            "Expected non-empty confidences, predictions and labels of equal length. Received "
            f"{conf.shape}, {predictions.shape}, {labels.shape}."
        )
    if not np.all((conf >= 0) & (conf <= 1)):
        raise ValueError(
            "Expected confidences in [0, 1]. Received values outside; pass max softmax "
            "probabilities, not logits."
        )
    if int(num_bins) != num_bins or num_bins < 1:
        raise ValueError(f"Expected num_bins >= 1. Received: num_bins={num_bins!r}.")
    bins = np.clip(np.ceil(num_bins * conf - 1).astype(np.int64), 0, num_bins - 1)
    correct = (predictions == labels).astype(np.float64)
    count = np.bincount(bins, minlength=num_bins).astype(np.float64)
    conf_sum = np.bincount(bins, weights=conf, minlength=num_bins)
    correct_sum = np.bincount(bins, weights=correct, minlength=num_bins)
    return float(np.sum(np.abs(correct_sum - conf_sum)) / conf.size)


def ece_from_probs(probs, labels, num_bins: int = 15) -> float:
    """ECE of ``probs [batch, classes]`` (top-label confidence and argmax prediction)."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2:
        raise ValueError(f"Expected probs of shape [batch, classes]. Received: {probs.shape}.")
    return expected_calibration_error(probs.max(axis=1), probs.argmax(axis=1), labels, num_bins)


def _probs_labels(probs, labels):
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(
            f"Expected non-empty probs of shape [batch, classes]. Received: {probs.shape}."
        )
    if labels.shape != (probs.shape[0],):
        raise ValueError(
            f"Expected labels of shape [{probs.shape[0]}]. Received: labels.shape={labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Expected integer labels. Received dtype {labels.dtype}.")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(
            f"Expected labels in [0, {probs.shape[1]}). Received labels in "
            f"[{labels.min()}, {labels.max()}]."
        )
    if not (np.all(probs >= 0) and np.all(probs <= 1)) or not np.allclose(probs.sum(1), 1.0,
                                                                           atol=1e-5):
        raise ValueError(
            "Expected probs in [0, 1] with rows summing to 1. Received values outside or row "
            "sums != 1; pass softmax probabilities, not logits."
        )
    return probs, labels


def nll(probs, labels) -> float:
    """Mean negative log-likelihood ``-mean_i log p_i[y_i]`` in nats.

    Args:
      probs: ``[batch, classes]`` predicted probabilities (rows sum to 1).
      labels: ``[batch]`` integer classes.

    Returns:
      float >= 0; ``inf`` when a true label has probability 0 (no clipping, unlike sklearn's
      ``log_loss``). For logits use :func:`ddu_tf.calibration.nll`.
    """
    probs, labels = _probs_labels(probs, labels)
    with np.errstate(divide="ignore"):
        return float(-np.mean(np.log(probs[np.arange(labels.size), labels])))


def brier_score(probs, labels) -> float:
    """Multi-class Brier score ``mean_i sum_c (p_ic - 1[c = y_i])^2``, in [0, 2] (0 is best).

    Args:
      probs: ``[batch, classes]`` predicted probabilities (rows sum to 1).
      labels: ``[batch]`` integer classes.
    """
    probs, labels = _probs_labels(probs, labels)
    onehot = np.zeros_like(probs)
    onehot[np.arange(labels.size), labels] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def _in_out(in_scores, ood_scores):
    in_scores = _vector(in_scores, "in_scores").astype(np.float64)
    ood_scores = _vector(ood_scores, "ood_scores").astype(np.float64)
    if in_scores.size == 0 or ood_scores.size == 0:
        raise ValueError(
            f"Expected non-empty in_scores and ood_scores. Received {in_scores.size} and "
            f"{ood_scores.size} samples."
        )
    if not (np.all(np.isfinite(in_scores)) and np.all(np.isfinite(ood_scores))):
        raise ValueError("Expected finite scores. Received NaN/Inf in in_scores or ood_scores.")
    return in_scores, ood_scores


def fpr_at_tpr(in_scores, out_scores, tpr: float = 0.95, *, higher_is_uncertain: bool) -> float:
    """False-positive rate at a given true-positive rate (FPR@95 for ``tpr=0.95``).

    In-distribution is the positive class (Liang et al. 2018): the threshold is the loosest
    that accepts at least a fraction ``tpr`` of ``in_scores``; the result is the fraction of
    ``out_scores`` it accepts too (ties at the threshold count as accepted), i.e. the first
    point of sklearn's ``roc_curve`` with TPR >= ``tpr``. Lower is better; 0 is a perfect
    detector.

    Args:
      in_scores: ``[n_in]`` scores of in-distribution samples.
      out_scores: ``[n_ood]`` scores of OoD samples.
      tpr: target true-positive rate in (0, 1].
      higher_is_uncertain: True for uncertainty scores (entropy, MI): a sample is accepted as
        in-distribution when its score is at most the threshold. False for confidence scores
        (logsumexp, GMM log-density): accepted when at least the threshold.

    Returns:
      FPR in [0, 1].
    """
    in_scores, out_scores = _in_out(in_scores, out_scores)
    if not 0 < tpr <= 1:
        raise ValueError(f"Expected 0 < tpr <= 1. Received: tpr={tpr!r}.")
    sign = -1.0 if higher_is_uncertain else 1.0
    confidence_in = np.sort(sign * in_scores)[::-1]
    counts = np.arange(1, in_scores.size + 1)
    k = counts[np.argmax(counts / in_scores.size >= tpr)]
    threshold = confidence_in[k - 1]
    return float(np.mean(sign * out_scores >= threshold))


def ood_auroc_auprc(in_scores, ood_scores, *, higher_is_uncertain: bool) -> tuple[float, float]:
    """AUROC and AUPRC of separating in-distribution from OoD samples by a score.

    Args:
      in_scores: ``[n_in]`` scores of in-distribution test samples.
      ood_scores: ``[n_ood]`` scores of OoD samples.
      higher_is_uncertain: True for uncertainty scores (entropy, MI, energy): OoD is the
        positive class. False for confidence scores (logsumexp, GMM log-density):
        in-distribution is the positive class, as in the original.

    Returns:
      ``(auroc, auprc)``, each in [0, 1].
    """
    in_scores, ood_scores = _in_out(in_scores, ood_scores)
    scores = np.concatenate([in_scores, ood_scores])
    is_ood = np.concatenate([np.zeros(in_scores.size), np.ones(ood_scores.size)])
    positive = is_ood if higher_is_uncertain else 1.0 - is_ood
    return (
        float(_sk.roc_auc_score(positive, scores)),
        float(_sk.average_precision_score(positive, scores)),
    )
