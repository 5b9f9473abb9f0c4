"""DDU evaluation shared by ``experiments/evaluate.py``, ``experiments/plot_uncertainty.py``
and the demo: metrics from arrays (logits, GMM log-densities), never from networks.

The arrays come from :class:`ddu_tf.inference.Predictor` (``dataset_logits``,
``dataset_features_and_logits``: float64, as the original's
``get_embeddings(dtype=torch.double)``) and :func:`ddu_tf.inference.fit_gmm`.

1. The original ``evaluate.py``'s metric dict per run, for the three model types:

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

   Keys of every run dict: :data:`METRIC_KEYS`; :func:`summarize` turns runs into the
   original's ``{"mean", "std" (standard error), "values"}`` layout.
   Every run dict also has ``split/metric`` keys (uncertainty-baselines' naming), which
   :func:`summarize` aggregates like the original keys: ``test/nll`` (nats), ``test/brier``
   (multi-class Brier score) and ``ood/m1_fpr95``, ``ood/m2_fpr95`` (FPR at 95% TPR,
   in-distribution positive, :func:`ddu_tf.metrics.fpr_at_tpr`).
2. Fig. 1/2 of the paper: softmax entropy and GMM log-density per evaluation set
   (:func:`uncertainty_scores`, or :func:`set_scores` with a fitted GMM), stored by
   :func:`save_scores` / :func:`load_scores`, and the AUROCs of separating two sets by each
   (:func:`pair_aurocs`).
3. The Dirty-MNIST protocol (:func:`dirty_mnist_protocol`, issue 14): from the scores of one
   network on MNIST test, Ambiguous-MNIST test and OoD sets (all with the same input
   transform, ``ddu_tf.data.ood_sets``; GMM fitted on the training split's features), MNIST
   accuracy / ECE / NLL / Brier and, for MNIST, Ambiguous and Dirty (= both) against every
   OoD set, AUROC / AUPRC / FPR@95 of softmax entropy and of GMM log-density.
"""
from __future__ import annotations

import math
import os

import numpy as np
import tensorflow as tf

from ddu_tf import calibration, metrics, uncertainty
from ddu_tf.inference import as_predictor, fit_gmm, gmm_scores
from ddu_tf.io.atomic import atomic_write

METRIC_KEYS = (
    "accuracy", "ece", "m1_auroc", "m1_auprc", "m2_auroc", "m2_auprc",
    "t_ece", "t_m1_auroc", "t_m1_auprc", "t_m2_auroc", "t_m2_auprc",
)
MODEL_TYPES = ("softmax", "ensemble", "gmm")


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
    return tf.nn.log_softmax(np.asarray(logits, np.float64), axis=-1).numpy()


def _scores(in_scores, ood_scores, higher_is_uncertain):
    return metrics.ood_auroc_auprc(
        np.asarray(in_scores), np.asarray(ood_scores), higher_is_uncertain=higher_is_uncertain
    )


def _proper_scores(log_probs, labels):
    """``test/nll`` and ``test/brier`` of log-probabilities ``[n, classes]``."""
    probs = np.exp(np.asarray(log_probs, np.float64))
    return {"test/nll": metrics.nll(probs, labels), "test/brier": metrics.brier_score(probs, labels)}


def _fpr95(in_scores, ood_scores, higher_is_uncertain):
    return metrics.fpr_at_tpr(np.asarray(in_scores), np.asarray(ood_scores), 0.95,
                              higher_is_uncertain=higher_is_uncertain)


def _softmax_scores(logits, ood_logits, prefix=""):
    out = {}
    m1 = uncertainty.logsumexp(logits), uncertainty.logsumexp(ood_logits), False
    m2 = uncertainty.softmax_entropy(logits), uncertainty.softmax_entropy(ood_logits), True
    out[prefix + "m1_auroc"], out[prefix + "m1_auprc"] = _scores(*m1)
    out[prefix + "m2_auroc"], out[prefix + "m2_auprc"] = _scores(*m2)
    if not prefix:
        out["ood/m1_fpr95"], out["ood/m2_fpr95"] = _fpr95(*m1), _fpr95(*m2)
    return out


def softmax_metrics(test_logits, test_labels, ood_logits, val_logits, val_labels) -> dict:
    """One run of a softmax model: accuracy, ECE and logsumexp / entropy OoD scores.

    Args:
      test_logits: ``[n, classes]`` in-distribution test logits; ``test_labels [n]``.
      ood_logits: ``[n_ood, classes]`` OoD logits.
      val_logits, val_labels: validation logits / labels for the temperature.

    Returns:
      dict with :data:`METRIC_KEYS`, the ``split/metric`` keys and ``"temperature"``.
    """
    temperature = calibration.fit_temperature(val_logits, val_labels)
    t_test = calibration.apply_temperature(test_logits, temperature)
    t_ood = calibration.apply_temperature(ood_logits, temperature)
    out = {"temperature": temperature}
    out["accuracy"], out["ece"] = _classification(_log_softmax(test_logits), test_labels)
    out.update(_proper_scores(_log_softmax(test_logits), test_labels))
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
      dict with :data:`METRIC_KEYS`, the ``split/metric`` keys and ``"temperature"``;
      ``t_m*`` equal ``m*``.
    """
    temperature = calibration.fit_temperature(val_logits, val_labels)
    out = {"temperature": temperature}
    out["accuracy"], out["ece"] = _classification(_log_softmax(test_logits), test_labels)
    out.update(_proper_scores(_log_softmax(test_logits), test_labels))
    t_test = calibration.apply_temperature(test_logits, temperature)
    _, out["t_ece"] = _classification(_log_softmax(t_test), test_labels)
    gmm_scores = _softmax_scores(np.asarray(test_log_densities, np.float64),
                                 np.asarray(ood_log_densities, np.float64))
    out.update(gmm_scores)
    out.update({"t_" + key: value for key, value in gmm_scores.items() if "/" not in key})
    return out


def _ensemble_ood_scores(member_logits, ood_member_logits, prefix=""):
    out = {}
    m1 = (uncertainty.ensemble_mutual_information(member_logits),
          uncertainty.ensemble_mutual_information(ood_member_logits), True)
    m2 = (uncertainty.ensemble_predictive_entropy(member_logits),
          uncertainty.ensemble_predictive_entropy(ood_member_logits), True)
    out[prefix + "m1_auroc"], out[prefix + "m1_auprc"] = _scores(*m1)
    out[prefix + "m2_auroc"], out[prefix + "m2_auprc"] = _scores(*m2)
    if not prefix:
        out["ood/m1_fpr95"], out["ood/m2_fpr95"] = _fpr95(*m1), _fpr95(*m2)
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
      dict with :data:`METRIC_KEYS`, the ``split/metric`` keys and ``"temperature"`` (list,
      one per member).
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
    log_mean_probs = uncertainty.ensemble_log_mean_probs(test_member_logits).numpy()
    out["accuracy"], out["ece"] = _classification(log_mean_probs, test_labels)
    out.update(_proper_scores(log_mean_probs, test_labels))
    _, out["t_ece"] = _classification(
        uncertainty.ensemble_log_mean_probs(t_test).numpy(), test_labels
    )
    out.update(_ensemble_ood_scores(test_member_logits, ood_member_logits))
    out.update(_ensemble_ood_scores(t_test, t_ood, prefix="t_"))
    return out


def summarize(runs) -> dict:
    """The original's JSON layout from per-run dicts.

    Returns:
      ``{"mean": {k: float}, "std": {k: float | None}, "values": {k: [float]}}`` over
      :data:`METRIC_KEYS` (those the runs have: all, or none for protocol-only runs) followed
      by the ``split/metric`` keys (those with a ``/``) that every run has; ``std`` is the
      standard error ``std(ddof=1) / sqrt(runs)`` (None
      for a single run, where the original writes NaN).
    """
    runs = list(runs)
    if not runs:
        raise ValueError("Expected at least one run to summarize. Received none.")
    out = {"mean": {}, "std": {}, "values": {}}
    extra = [key for key in runs[0] if "/" in key and all(key in run for run in runs[1:])]
    metric_keys = [key for key in METRIC_KEYS if key in runs[0]]
    for key in (*metric_keys, *extra):
        values = [float(run[key]) for run in runs]
        out["values"][key] = values
        out["mean"][key] = float(np.mean(values))
        out["std"][key] = (
            float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
        )
    return out


# ---------------------------------------------------------------- Fig. 1/2 of the paper
def uncertainty_scores(model, gmm_data, eval_sets, num_classes=None, *, chunk_size=512):
    """Softmax entropy and GMM log-density of one network on each evaluation set.

    Args:
      model: functional model with a ``"features"`` layer returning logits, or a
        :class:`ddu_tf.inference.Predictor` of one.
      gmm_data: the GMM's training data, as :func:`ddu_tf.inference.fit_gmm` takes it (a
        dataset of ``(x, y)`` batches or ``(x, y)`` arrays).
      eval_sets: dict ``name -> tf.data.Dataset`` of ``(x, y)`` batches.
      num_classes: number of classes (default: the model's number of logits).
      chunk_size: rows per compiled chunk when ``model`` is not a Predictor.

    Returns:
      ``(scores, gmm)``: ``scores`` is a dict ``name -> {"entropy": [n] float64 (nats),
      "log_density": [n] float64 (``logsumexp_c log q(z|c)``, nats)}``.
    """
    predictor = as_predictor(model, chunk_size=chunk_size)
    if num_classes is None:
        num_classes = int(predictor.model.outputs[0].shape[-1])
    gmm = fit_gmm(predictor, gmm_data, num_classes)
    return set_scores(predictor, gmm, eval_sets), gmm


def set_scores(predictor, gmm, eval_sets):
    """Scores of one network with a fitted GMM on each evaluation set (one forward pass each).

    Args:
      predictor: a :class:`ddu_tf.inference.Predictor` (or a model with a ``"features"`` layer).
      gmm: fitted :class:`ddu_tf.density.ClassConditionalGaussians`.
      eval_sets: dict ``name -> tf.data.Dataset`` of ``(x, y)`` batches.

    Returns:
      dict ``name -> {"entropy": [n] (nats), "log_density": [n] (logsumexp_c log q(z|c),
      nats), "logits": [n, classes], "labels": [n] int64}``, float64 arrays.
    """
    predictor = as_predictor(predictor)
    return {name: gmm_scores(predictor, gmm, ds) for name, ds in eval_sets.items()}


SCORE_KEYS = ("entropy", "log_density")
"""The per-set scores of Fig. 1/2 that :func:`save_scores` stores."""


def save_scores(path, scores) -> str:
    """Write Fig. 1/2 scores to a compressed ``.npz`` (no pickle), one array per set and score.

    The file of ``experiments/evaluate.py --protocol dirty_mnist`` and the input of
    ``experiments/plot_uncertainty.py --scores``; read it back with :func:`load_scores`.

    Args:
      path: output path (``.npz`` appended when missing; directories are created; written
        atomically, :mod:`ddu_tf.io.atomic`).
      scores: ``name -> {"entropy": [n], "log_density": [n], ...}`` (:func:`set_scores`);
        only :data:`SCORE_KEYS` are stored, as float32 arrays named ``"{name}/{key}"``.

    Returns:
      The path written.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    for name in scores:
        if "/" in name:
            raise ValueError(f"Expected set names without '/'. Received: {name!r}.")
    arrays = {f"{name}/{key}": np.asarray(per_set[key], np.float32)
              for name, per_set in scores.items() for key in SCORE_KEYS}
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays))
    return path


def load_scores(path) -> dict:
    """Read a file written by :func:`save_scores`.

    Returns:
      ``name -> {"entropy": [n] float64 (nats), "log_density": [n] float64 (nats)}``, sets
      in stored order.

    Raises:
      ValueError: the file has other arrays, or a set lacks one of :data:`SCORE_KEYS`.
    """
    out = {}
    with np.load(os.fspath(path), allow_pickle=False) as data:
        for array_name in data.files:
            name, _, key = array_name.rpartition("/")
            if not name or key not in SCORE_KEYS:
                raise ValueError(
                    "Expected a scores file written by ddu_tf.evaluation.save_scores (arrays "
                    f"'<set>/<score>' with scores {SCORE_KEYS}). Received {os.fspath(path)!r} "
                    f"with the array {array_name!r}.")
            out.setdefault(name, {})[key] = np.asarray(data[array_name], np.float64)
    for name, per_set in out.items():
        if set(per_set) != set(SCORE_KEYS):
            raise ValueError(
                f"Expected the scores {SCORE_KEYS} for every set. Received {sorted(per_set)} "
                f"for set {name!r} in {os.fspath(path)!r}.")
    if not out:
        raise ValueError(f"Expected at least one set of scores. Received an empty file "
                         f"{os.fspath(path)!r}.")
    return out


def pair_aurocs(scores, pairs):
    """AUROC of separating two evaluation sets by entropy and by GMM density.

    For ``(negative, positive)`` the second set is the positive class; the score is the
    entropy (higher = more uncertain) or ``-log q(z)`` (lower density = more uncertain), so
    0.5 is chance and 1 a perfect separation (sklearn ``roc_auc_score``).

    Args:
      scores: ``name -> {"entropy": [n], "log_density": [n]}`` (:func:`uncertainty_scores`).
      pairs: sequence of ``(negative set name, positive set name)``.

    Returns:
      ``{"<negative> vs <positive>": {"entropy": auroc, "log_density": auroc}}``.
    """
    out = {}
    for negative, positive in pairs:
        row = {}
        for key, higher_is_uncertain in (("entropy", True), ("log_density", False)):
            row[key], _ = metrics.ood_auroc_auprc(
                np.asarray(scores[negative][key]), np.asarray(scores[positive][key]),
                higher_is_uncertain=higher_is_uncertain)
        out[f"{negative} vs {positive}"] = row
    return out


# ---------------------------------------------------------------- the Dirty-MNIST protocol
OOD_SCORE_DIRECTIONS = (("entropy", True), ("log_density", False))
"""The two scores of the protocol and their ``higher_is_uncertain`` flag: softmax entropy
(aleatoric; OoD positive for AUPRC) and GMM log-density (epistemic; in-distribution
positive), as :func:`ddu_tf.metrics.ood_auroc_auprc`."""


def dirty_mnist_protocol(scores, ood_names, in_names=("mnist", "ambiguous")) -> dict:
    """The Dirty-MNIST table of one network (issue 14), keys ``split/metric``.

    Args:
      scores: :func:`set_scores` of the network on ``in_names`` and ``ood_names`` (same input
        transform for all; GMM fitted on the training split's features).
      ood_names: names of the OoD sets in ``scores`` (e.g. ``fashion_mnist``).
      in_names: the MNIST and Ambiguous-MNIST parts of Dirty-MNIST test; the third
        in-distribution split ``dirty`` is their union.

    Returns:
      dict of floats: ``mnist/accuracy``, ``mnist/ece`` (15 bins, in [0, 1]), ``mnist/nll``
      (nats), ``mnist/brier``; and for ``split`` in ``{mnist, ambiguous, dirty}_vs_{ood}``:
      ``split/entropy_auroc``, ``split/entropy_auprc``, ``split/entropy_fpr95``,
      ``split/log_density_auroc``, ``split/log_density_auprc``, ``split/log_density_fpr95``.
    """
    mnist_name, ambiguous_name = in_names
    log_probs = _log_softmax(scores[mnist_name]["logits"])
    labels = scores[mnist_name]["labels"]
    out = {}
    out["mnist/accuracy"], out["mnist/ece"] = _classification(log_probs, labels)
    proper = _proper_scores(log_probs, labels)
    out["mnist/nll"], out["mnist/brier"] = proper["test/nll"], proper["test/brier"]
    in_sets = {"mnist": scores[mnist_name], "ambiguous": scores[ambiguous_name]}
    in_sets["dirty"] = {key: np.concatenate([in_sets["mnist"][key], in_sets["ambiguous"][key]])
                        for key in ("entropy", "log_density")}
    for in_name, in_scores in in_sets.items():
        for ood_name in ood_names:
            split = f"{in_name}_vs_{ood_name}"
            for key, higher_is_uncertain in OOD_SCORE_DIRECTIONS:
                pair = (in_scores[key], scores[ood_name][key], higher_is_uncertain)
                out[f"{split}/{key}_auroc"], out[f"{split}/{key}_auprc"] = _scores(*pair)
                out[f"{split}/{key}_fpr95"] = _fpr95(*pair)
    return out
