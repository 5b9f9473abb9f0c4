"""Acquisition scores of DDU's active-learning experiment (Mukhoti et al. 2021, Sec. 6.2).

Three strategies of ``active_learning_script.py`` (``--al-type``), all returning ``[N]`` scores
with the convention of :func:`ddu_tf.active_learning.acquisition.select_top_k`: **higher =
acquire first**, so every strategy goes through the one top-k selection.

* ``softmax``: softmax entropy of one deterministic network's logits (nats).
* ``ensemble``: predictive entropy ``H[mean_m p_m]`` of ``M`` (default 5) networks, or their
  mutual information ``PE - mean_m H[p_m]`` with ``mutual_information=True`` (``-mi``).
* ``gmm`` (DDU): the class-prior-weighted feature density
  ``q(z) = sum_c pi_c q(z|c)``, ``pi_c = n_c / n`` from the LABELLED counts, and the points of
  LOWEST density are acquired first. It is computed in log space,
  ``log q(z) = logsumexp_c [log q(z|c) + log pi_c]``, and the score is ``-log q(z)``. The
  original computes ``sum(exp(log q(z|c)) * pi_c)`` directly: with 512-d features
  ``log q(z|c)`` is often below -745, ``exp`` underflows to 0 for every class and the top-k
  among the zeros is arbitrary; in log space the ranking stays exact. A class that is absent
  from the labelled set has ``pi_c = 0`` (``log pi_c = -inf``) and drops out of the sum.

Network passes go through :class:`ddu_tf.inference.Predictor` (one compiled, chunked pass
per model; sharded across replicas when the predictor has a strategy), so
``softmax``/``ensemble`` need only logits and ``gmm`` gets features and logits in one pass.
The entropies are :mod:`ddu_tf.uncertainty`'s.

Example::

    scores = acquisition_scores("gmm", [model], x_pool, labelled_images=x_train,
                                labelled_labels=y_train, num_classes=10)
    picked = select_top_k(scores, k=5)        # positions into x_pool
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from ddu_tf import uncertainty
from ddu_tf.density import ClassConditionalGaussians
from ddu_tf.inference import as_predictor, fit_gmm

AL_TYPES = ("softmax", "ensemble", "gmm")


# ----------------------------------------------------------------------------- scores
def class_log_priors(labels, num_classes: int) -> np.ndarray:
    """``log pi_c = log(n_c / n)`` from labelled labels, ``[n] -> [num_classes]`` float64.

    Classes without a labelled sample get ``-inf``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError("Expected a non-empty integer vector of labels [n]. Received: "
                         f"labels.shape={labels.shape}, dtype={labels.dtype}")
    if int(num_classes) < 1 or labels.min() < 0 or labels.max() >= int(num_classes):
        raise ValueError(f"Expected labels in 0..num_classes-1. Received: num_classes={num_classes}, "
                         f"labels in [{labels.min()}, {labels.max()}]")
    counts = np.bincount(labels, minlength=int(num_classes)).astype(np.float64)
    with np.errstate(divide="ignore"):
        return np.log(counts) - np.log(counts.sum())


def class_prior_weighted_log_density(class_log_densities, log_priors) -> np.ndarray:
    """``log sum_c pi_c q(z|c) = logsumexp_c [log q(z|c) + log pi_c]``, ``[N, C] -> [N]`` float64.

    Args:
      class_log_densities: ``[N, C]`` ``log q(z|c)`` (nats), e.g. from
        :meth:`ClassConditionalGaussians.class_log_densities`.
      log_priors: ``[C]`` ``log pi_c`` (``-inf`` allowed for absent classes, not for all).
    """
    cld = tf.convert_to_tensor(class_log_densities, tf.float64)
    log_priors = tf.convert_to_tensor(log_priors, tf.float64)
    if cld.shape.rank != 2 or log_priors.shape.rank != 1 or cld.shape[1] != log_priors.shape[0]:
        raise ValueError("Expected class_log_densities [N, C] and log_priors [C]. Received: "
                         f"class_log_densities.shape={cld.shape}, log_priors.shape={log_priors.shape}")
    if not np.any(np.isfinite(log_priors.numpy())):
        raise ValueError("Expected at least one class with a finite log prior. Received: "
                         "log_priors all -inf (no labelled sample).")
    return tf.reduce_logsumexp(cld + log_priors[None, :], axis=-1).numpy()


def gmm_density_scores(class_log_densities, labelled_labels, num_classes: int) -> np.ndarray:
    """DDU acquisition score ``-log sum_c pi_c q(z|c)``, ``[N, C] -> [N]`` float64.

    ``pi`` comes from the labelled counts; higher score = lower density = acquire first.
    """
    log_priors = class_log_priors(labelled_labels, num_classes)
    return -class_prior_weighted_log_density(class_log_densities, log_priors)


def acquisition_scores(al_type: str, models: Sequence, pool_images, *,
                       labelled_images=None, labelled_labels=None, num_classes: int = 10,
                       mutual_information: bool = False, gmm: ClassConditionalGaussians = None,
                       batch_size: int = 512) -> np.ndarray:
    """Score a pool with one of DDU's strategies; higher = acquire first.

    Args:
      al_type: ``"softmax"`` (uses ``models[0]``), ``"ensemble"`` (all of ``models``) or
        ``"gmm"`` (uses ``models[0]``).
      models: trained networks from :func:`ddu_tf.models.get_model`, or
        :class:`ddu_tf.inference.Predictor` s of them (e.g. sharded across replicas).
      pool_images: ``[N, *input_shape]`` float32 candidates.
      labelled_images: ``[n, *input_shape]``, needed by ``gmm`` unless ``gmm`` is given.
      labelled_labels: int ``[n]``, needed by ``gmm`` (for the GMM fit and the priors).
      num_classes: number of classes ``C``.
      mutual_information: for ``ensemble``, score by ``MI = PE - mean_m H[p_m]`` (the
        original's ``-mi``) instead of ``PE = H[mean_m p_m]``.
      gmm: a GMM already fitted on ``models[0]``'s labelled features (skips the fit).
      batch_size: chunk size of the network passes of plain models.

    Returns:
      float64 ``[N]`` scores for :func:`~ddu_tf.active_learning.acquisition.select_top_k`.
    """
    if al_type not in AL_TYPES:
        raise ValueError(f"Expected al_type in {AL_TYPES}. Received: al_type={al_type!r}")
    predictors = [as_predictor(m, chunk_size=batch_size) for m in models]
    if not predictors:
        raise ValueError("Expected at least one model. Received: models=[]")
    if al_type == "softmax":
        return np.asarray(uncertainty.softmax_entropy(predictors[0].logits(pool_images)),
                          np.float64)
    if al_type == "ensemble":
        member_logits = np.stack([p.logits(pool_images) for p in predictors])
        score = (uncertainty.ensemble_mutual_information if mutual_information
                 else uncertainty.ensemble_predictive_entropy)
        return np.asarray(score(member_logits), np.float64)
    if labelled_labels is None:
        raise ValueError("al_type='gmm' needs labelled_labels (for the class priors). Received: None")
    if gmm is None:
        if labelled_images is None:
            raise ValueError("al_type='gmm' needs labelled_images or a fitted gmm. Received: neither")
        gmm = fit_gmm(predictors[0], (labelled_images, labelled_labels), num_classes)
    feats, _ = predictors[0].features_and_logits(pool_images)
    return gmm_density_scores(gmm.class_log_densities(np.asarray(feats, np.float64)).numpy(),
                              labelled_labels, num_classes)
