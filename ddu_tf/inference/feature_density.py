"""DDU's feature density of a trained network: class-conditional Gaussians on its features.

The network side (features from :class:`ddu_tf.inference.Predictor`) meets the density side
(:class:`ddu_tf.density.ClassConditionalGaussians`, which sees only feature arrays) here,
for evaluation (a training set streamed as a dataset) and active learning (the labelled
arrays) alike.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from ddu_tf import uncertainty
from ddu_tf.density import ClassConditionalGaussians, ClassStatistics
from ddu_tf.density.distributed import distributed_class_statistics
from ddu_tf.inference.predictor import as_predictor


def fit_gmm(model, data, num_classes: int, *, chunk_size: int = 512
            ) -> ClassConditionalGaussians:
    """Fit DDU's class-conditional Gaussians on the ``"features"`` of a network.

    Features are taken in float64 (the original's ``get_embeddings(dtype=torch.double)``).

    Args:
        model: a functional model with a ``"features"`` layer, or a
            :class:`~ddu_tf.inference.Predictor` of one (its strategy shards the work).
        data: either ``(x [n, *input_shape], labels [n])`` arrays -- the features of all of
            ``x`` are computed, then the GMM is fitted in memory
            (``ClassConditionalGaussians.fit``) -- or a ``tf.data.Dataset`` of ``(x, y)``
            batches, whose per-class statistics are accumulated batch by batch in float64
            (Chan's merge; memory ``O(classes * dim^2)``), per replica and merged exactly
            under a strategy (:func:`ddu_tf.density.distributed.distributed_class_statistics`).
            Every class needs at least 2 samples.
        num_classes: number of classes ``C``.
        chunk_size: rows per compiled chunk when ``model`` is not a Predictor.

    Returns:
        A fitted :class:`ddu_tf.density.ClassConditionalGaussians`.
    """
    predictor = as_predictor(model, chunk_size=chunk_size)
    if not isinstance(data, tf.data.Dataset):
        images, labels = data
        features, _ = predictor.features_and_logits(images)
        return ClassConditionalGaussians.fit(np.asarray(features, np.float64),
                                             np.asarray(labels), num_classes=num_classes)
    if predictor.sharded:
        net = predictor._net(with_features=True)
        stats = distributed_class_statistics(
            predictor.strategy, lambda x: net(tf.cast(x, tf.float32), training=False)[0],
            lambda ctx: data.shard(ctx.num_input_pipelines, ctx.input_pipeline_id),
            num_classes)
        return ClassConditionalGaussians.from_statistics(stats)
    predict = predictor._compiled_batch(with_features=True)
    stats = None
    for x, y in data:
        features, _ = predict(tf.cast(x, tf.float32))
        batch = ClassStatistics.from_batch(np.asarray(features, np.float64), np.asarray(y),
                                           num_classes)
        stats = batch if stats is None else stats.merge(batch)
    if stats is None:
        raise ValueError("Expected a dataset with at least one batch. Received an empty one.")
    return ClassConditionalGaussians.from_statistics(stats)


def gmm_scores(model, gmm: ClassConditionalGaussians, data, *, chunk_size: int = 512) -> dict:
    """DDU's two uncertainty scores of one data set, from one forward pass of the network.

    Args:
        model: a functional model with a ``"features"`` layer, or a
            :class:`~ddu_tf.inference.Predictor` of one.
        gmm: the fitted class-conditional Gaussians (e.g. of :func:`fit_gmm`).
        data: ``(x [n, *input_shape], labels [n])`` arrays or a ``tf.data.Dataset`` of
            ``(x, y)`` batches (preprocessed like the GMM's training data).
        chunk_size: rows per compiled chunk when ``model`` is not a Predictor.

    Returns:
        dict of float64 / int64 NumPy arrays: ``"entropy"`` ``[n]`` softmax entropy (nats,
        aleatoric, :func:`ddu_tf.uncertainty.softmax_entropy`), ``"log_density"`` ``[n]``
        ``log q(z) = logsumexp_c log q(z|c)`` (nats, epistemic: low = uncertain, DDU Alg. 1
        with the unweighted mixture of the original), ``"logits"`` ``[n, classes]`` and
        ``"labels"`` ``[n]``.
    """
    predictor = as_predictor(model, chunk_size=chunk_size)
    if isinstance(data, tf.data.Dataset):
        features, logits, labels = predictor.dataset_features_and_logits(data)
    else:
        images, labels = data
        features, logits = predictor.features_and_logits(images)
        labels = np.asarray(labels, np.int64)
    logits = np.asarray(logits, np.float64)
    return {"entropy": uncertainty.softmax_entropy(logits).numpy(),
            "log_density": gmm.log_density(np.asarray(features, np.float64)).numpy(),
            "logits": logits, "labels": labels}


__all__ = ["fit_gmm", "gmm_scores"]
