"""Inference with trained networks: one compiled, chunked path, on one device or sharded.

* :class:`Predictor`: logits / ``(features, logits)`` of arrays and of ``(x, y)`` datasets;
* :class:`MCDropoutPredictor`: T-sample MC-dropout reductions (trunk once, stochastic suffix
  T times), e.g. ``predictor.reduce(x_pool, bald)``;
* :func:`fit_gmm`: DDU's class-conditional Gaussians on a network's features;
  :func:`gmm_scores`: its log density and the softmax entropy of a data set;
* :func:`ensemble_log_probs`: log of the mean softmax of one or several networks.

Give any of them ``strategy=`` (a ``tf.distribute.Strategy``; model built under its scope)
to shard the work across its replicas with the single-device results.
"""
from ddu_tf.inference.feature_density import fit_gmm, gmm_scores
from ddu_tf.inference.mc_dropout import (MCDropoutPredictor, model_flops,
                                         split_at_first_stochastic)
from ddu_tf.inference.predictor import Predictor, as_predictor, ensemble_log_probs

__all__ = ["MCDropoutPredictor", "Predictor", "as_predictor", "ensemble_log_probs", "fit_gmm",
           "gmm_scores", "model_flops", "split_at_first_stochastic"]
