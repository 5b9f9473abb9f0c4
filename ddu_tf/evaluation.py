"""DDU evaluation shared by ``experiments/evaluate.py`` and the demo.

Two layers:

1. Extraction over a ``tf.data.Dataset`` of ``(x, y)`` batches: logits ``[n, classes]`` and
   features ``[n, dim]`` as float64 NumPy arrays (the network runs in its own dtype, the
   results are stored in float64 as in the original's ``get_embeddings(dtype=torch.double)``),
   and a GMM fitted from streamed per-batch statistics (no need to hold all features).
2. The original ``evaluate.py``'s metric dict per run, from arrays, for the three model types:

   ==========  ==============================  =================================
   model type  m1 (AUROC/AUPRC score)           m2
   ==========  ==============================  =================================
   softmax     logsumexp of logits (conf.)      softmax entropy of logits (unc.)
   gmm         logsumexp of GMM log-densities   entropy of softmax(GMM log-densities)
               (conf.)                          (unc.), as the original's code
   ensemble    mutual information (unc.)        predictive entropy (unc.)
   ==========  ==============================  =================================

   "conf." = higher means in-distribution (in-distribution is the positive class), "unc." =
   higher means OoD (OoD positive), see :func:`ddu_tf.metrics.ood_auroc_auprc`. For the
   ensemble, m1 = MI and m2 = PE is what the original's code computes (its comments say the
   opposite). ``accuracy`` and ``ece`` (15 bins, in [0, 1]) come from the softmax classifier
   (for ``gmm`` too); ``t_*`` repeat them after temperature scaling on validation logits (one
   temperature per ensemble member); for ``gmm`` the ``t_m*`` entries equal ``m*`` (the GMM
   score is not temperature scaled).

Keys of every run dict: :data:`METRIC_KEYS`; :func:`summarize` turns runs into the original's
``{"mean", "std" (standard error), "values"}`` layout.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from scipy import special

from ddu_tf import calibration, metrics, uncertainty
from ddu_tf.density import ClassConditionalGaussians, ClassStatistics
from ddu_tf.models.inference import compiled_forward

METRIC_KEYS = (
    "accuracy", "ece", "m1_auroc", "m1_auprc", "m2_auroc", "m2_auprc",
    "t_ece", "t_m1_auroc", "t_m1_auprc", "t_m2_auroc", "t_m2_auprc",
)
MODEL_TYPES = ("softmax", "ensemble", "gmm")


# ---------------------------------------------------------------- extraction

def extract_logits(model, dataset):
    """Logits and labels of ``model`` over ``dataset``.

    Args:
      model: ``keras.Model`` mapping ``[batch, ...]`` inputs to ``[batch, classes]`` logits.
      dataset: iterable of ``(x [batch, ...], y [batch])`` batches (e.g. ``ddu_tf.data.load``).

    Returns:
      ``(logits [n, classes] float64, labels [n] int64)``.
    """
    predict = compiled_forward(model, with_features=False)
    logits, labels = [], []
    for x, y in dataset:
        logits.append(np.asarray(predict(tf.cast(x, tf.float32)), np.float64))
        labels.append(np.asarray(y, np.int64))
    if not logits:
        raise ValueError("Expected a dataset with at least one batch. Received an empty one.")
    return np.concatenate(logits), np.concatenate(labels)


def extract_features_and_logits(model, dataset):
    """Penultimate features, logits and labels of ``model`` over ``dataset``, in one pass.

    Args:
      model: functional model with a layer named ``"features"`` (``ddu_tf.models``).
      dataset: iterable of ``(x, y)`` batches.

    Returns:
      ``(features [n, dim] float64, logits [n, classes] float64, labels [n] int64)``.
    """
    predict = compiled_forward(model, with_features=True)
    features, logits, labels = [], [], []
    for x, y in dataset:
        f, z = predict(tf.cast(x, tf.float32))
        features.append(np.asarray(f, np.float64))
        logits.append(np.asarray(z, np.float64))
        labels.append(np.asarray(y, np.int64))
    if not features:
        raise ValueError("Expected a dataset with at least one batch. Received an empty one.")
    return np.concatenate(features), np.concatenate(logits), np.concatenate(labels)


def fit_gmm(model, dataset, num_classes: int) -> ClassConditionalGaussians:
    """DDU's class-conditional Gaussians on the features of ``model`` over ``dataset``.

    Statistics are accumulated batch by batch in float64 (Chan's merge; equal to the
    in-memory fit up to rounding), so memory is ``O(classes * dim^2)``.
    """
    predict = compiled_forward(model, with_features=True)
    stats = None
    for x, y in dataset:
        f, _ = predict(tf.cast(x, tf.float32))
        batch = ClassStatistics.from_batch(np.asarray(f, np.float64), np.asarray(y), num_classes)
        stats = batch if stats is None else stats.merge(batch)
    if stats is None:
        raise ValueError("Expected a dataset with at least one batch. Received an empty one.")
    return ClassConditionalGaussians.from_statistics(stats)


# ---------------------------------------------------------------- metrics from arrays
def _classification(log_probs, labels):
    """Accuracy and 15-bin ECE from log-probabilities ``[n, classes]``."""
    log_probs = np.asarray(log_probs, np.float64)
    predictions = log_probs.argmax(axis=1)
    confidences = np.exp(log_probs.max(axis=1))
    return (
        metrics.accuracy(labels, predictions),
        metrics.expected_calibration_error(confidences, predictions, labels, num_bins=15),
    )


def _log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    return logits - special.logsumexp(logits, axis=1, keepdims=True)


def _scores(in_scores, ood_scores, higher_is_uncertain):
    return metrics.ood_auroc_auprc(
        np.asarray(in_scores), np.asarray(ood_scores), higher_is_uncertain=higher_is_uncertain
    )


def _softmax_scores(logits, ood_logits, prefix=""):
    out = {}
    out[prefix + "m1_auroc"], out[prefix + "m1_auprc"] = _scores(
        uncertainty.logsumexp(logits), uncertainty.logsumexp(ood_logits), False
    )
    out[prefix + "m2_auroc"], out[prefix + "m2_auprc"] = _scores(
        uncertainty.softmax_entropy(logits), uncertainty.softmax_entropy(ood_logits), True
    )
    return out


def softmax_metrics(test_logits, test_labels, ood_logits, val_logits, val_labels) -> dict:
    """One run of a softmax model: accuracy, ECE and logsumexp / entropy OoD scores.

    Args:
      test_logits: ``[n, classes]`` in-distribution test logits; ``test_labels [n]``.
      ood_logits: ``[n_ood, classes]`` OoD logits.
      val_logits, val_labels: validation logits / labels for the temperature.

    Returns:
      dict with :data:`METRIC_KEYS` and ``"temperature"``.
    """
    temperature = calibration.fit_temperature(val_logits, val_labels)
    t_test = calibration.apply_temperature(test_logits, temperature)
    t_ood = calibration.apply_temperature(ood_logits, temperature)
    out = {"temperature": temperature}
    out["accuracy"], out["ece"] = _classification(_log_softmax(test_logits), test_labels)
    _, out["t_ece"] = _classification(_log_softmax(t_test), test_labels)
    out.update(_softmax_scores(np.asarray(test_logits, np.float64),
                               np.asarray(ood_logits, np.float64)))
    out.update(_softmax_scores(t_test, t_ood, prefix="t_"))
    return out


def gmm_metrics(test_logits, test_labels, test_log_densities, ood_log_densities,
                val_logits, val_labels) -> dict:
    """One run of DDU: classifier accuracy/ECE, GMM-based OoD scores.

    Args:
      test_logits, test_labels: classifier logits ``[n, classes]`` and labels ``[n]``.
      test_log_densities: ``[n, classes]`` GMM log-densities ``log q(z|c)`` of the test set
        (``ClassConditionalGaussians.class_log_densities``).
      ood_log_densities: ``[n_ood, classes]`` the same for the OoD set.
      val_logits, val_labels: validation logits / labels for the temperature.

    Returns:
      dict with :data:`METRIC_KEYS` and ``"temperature"``; ``t_m*`` equal ``m*``.
    """
    temperature = calibration.fit_temperature(val_logits, val_labels)
    out = {"temperature": temperature}
    out["accuracy"], out["ece"] = _classification(_log_softmax(test_logits), test_labels)
    t_test = calibration.apply_temperature(test_logits, temperature)
    _, out["t_ece"] = _classification(_log_softmax(t_test), test_labels)
    gmm_scores = _softmax_scores(np.asarray(test_log_densities, np.float64),
                                 np.asarray(ood_log_densities, np.float64))
    out.update(gmm_scores)
    out.update({"t_" + key: value for key, value in gmm_scores.items()})
    return out


def _ensemble_scores(member_logits, ood_member_logits, prefix=""):
    out = {}
    out[prefix + "m1_auroc"], out[prefix + "m1_auprc"] = _scores(
        uncertainty.ensemble_mutual_information(member_logits),
        uncertainty.ensemble_mutual_information(ood_member_logits), True,
    )
    out[prefix + "m2_auroc"], out[prefix + "m2_auprc"] = _scores(
        uncertainty.ensemble_predictive_entropy(member_logits),
        uncertainty.ensemble_predictive_entropy(ood_member_logits), True,
    )
    return out


def ensemble_metrics(test_member_logits, test_labels, ood_member_logits,
                     val_member_logits, val_member_labels) -> dict:
    """One run of a deep ensemble (softmax probabilities averaged over members).

    Args:
      test_member_logits: ``[members, n, classes]``; ``test_labels [n]``.
      ood_member_logits: ``[members, n_ood, classes]``.
      val_member_logits: sequence of ``[n_val_m, classes]`` validation logits, one per member
        (each member may have its own validation split, as in the original).
      val_member_labels: sequence of ``[n_val_m]`` labels.

    Returns:
      dict with :data:`METRIC_KEYS` and ``"temperature"`` (list, one per member).
    """
    test_member_logits = np.asarray(test_member_logits, np.float64)
    ood_member_logits = np.asarray(ood_member_logits, np.float64)
    if len(val_member_logits) != test_member_logits.shape[0] or len(val_member_labels) != len(
        val_member_logits
    ):
        raise ValueError(
            "Expected one validation set per ensemble member. Received "
            f"{len(val_member_logits)} validation logits and {len(val_member_labels)} label "
            f"arrays for {test_member_logits.shape[0]} members."
        )
    temperatures = [
        calibration.fit_temperature(v, l) for v, l in zip(val_member_logits, val_member_labels)
    ]
    t = np.asarray(temperatures)[:, None, None]
    t_test, t_ood = test_member_logits / t, ood_member_logits / t
    out = {"temperature": temperatures}
    out["accuracy"], out["ece"] = _classification(
        uncertainty.ensemble_log_mean_probs(test_member_logits).numpy(), test_labels
    )
    _, out["t_ece"] = _classification(
        uncertainty.ensemble_log_mean_probs(t_test).numpy(), test_labels
    )
    out.update(_ensemble_scores(test_member_logits, ood_member_logits))
    out.update(_ensemble_scores(t_test, t_ood, prefix="t_"))
    return out


def summarize(runs) -> dict:
    """The original's JSON layout from per-run dicts.

    Returns:
      ``{"mean": {k: float}, "std": {k: float | None}, "values": {k: [float]}}`` over
      :data:`METRIC_KEYS`; ``std`` is the standard error ``std(ddof=1) / sqrt(runs)`` (None
      for a single run, where the original writes NaN).
    """
    runs = list(runs)
    if not runs:
        raise ValueError("Expected at least one run to summarize. Received none.")
    out = {"mean": {}, "std": {}, "values": {}}
    for key in METRIC_KEYS:
        values = [float(run[key]) for run in runs]
        out["values"][key] = values
        out["mean"][key] = float(np.mean(values))
        out["std"][key] = (
            float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
        )
    return out
