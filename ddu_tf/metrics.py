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
    in_scores = _vector(in_scores, "in_scores").astype(np.float64)
    ood_scores = _vector(ood_scores, "ood_scores").astype(np.float64)
    if in_scores.size == 0 or ood_scores.size == 0:
        raise ValueError(
            f"Expected non-empty in_scores and ood_scores. Received {in_scores.size} and "
            f"{ood_scores.size} samples."
        )
    scores = np.concatenate([in_scores, ood_scores])
    if not np.all(np.isfinite(scores)):
        raise ValueError("Expected finite scores. Received NaN/Inf in in_scores or ood_scores.")
    is_ood = np.concatenate([np.zeros(in_scores.size), np.ones(ood_scores.size)])
    positive = is_ood if higher_is_uncertain else 1.0 - is_ood
    return (
        float(_sk.roc_auc_score(positive, scores)),
        float(_sk.average_precision_score(positive, scores)),
    )
