"""DDU's GMM sufficient statistics over a dataset sharded across ``tf.distribute`` replicas.

Each replica accumulates per-class moments of its shard (count ``[C]``, mean ``[C, D]`` as
shift + residual, centred scatter ``[C, D, D]``, float64) with the public
:func:`ddu_tf.density.batch_moments` / :func:`ddu_tf.density.merge_moments` (Chan et al.'s
exact parallel update); the per-replica moments are then all-gathered with
``strategy.gather`` (across workers too) and merged in replica order. The GMM fitted from
them (``ClassConditionalGaussians.from_statistics``) equals the single-device fit up to
float64 rounding; merging centred moments (rather than all-reducing raw sums ``sum z z^T``)
keeps that accuracy when the features have a large common offset.

Example (2 GPUs, or 2 logical CPUs)::

    strategy = ddu_tf.distribute.get_strategy("mirrored")
    with strategy.scope():
        model = get_model("resnet18", num_classes=10, spectral_normalization=True, mod=True)
    extractor = features_and_logits(model)
    stats = distributed_class_statistics(
        strategy, lambda x: extractor(x, training=False)[0],
        lambda ctx: train_ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id), 10)
    gmm = ClassConditionalGaussians.from_statistics(stats)

(:func:`ddu_tf.inference.fit_gmm` does this for a sharded ``Predictor`` and a dataset.)
"""
from __future__ import annotations

import tensorflow as tf

from ddu_tf.density.statistics import ClassStatistics, batch_moments, merge_moments


def distributed_class_statistics(strategy, feature_fn, dataset_fn, num_classes: int
                                 ) -> ClassStatistics:
    """Per-class feature statistics over a dataset sharded across the strategy's replicas.

    Each replica runs ``feature_fn`` on its batches and accumulates per-class moments (count
    ``[C]``, mean ``[C, D]`` as shift + residual, centred scatter ``[C, D, D]``) in float64
    with the two-pass batch formula and Chan's merge; at the end the per-replica moments are
    all-gathered (``strategy.gather``, across workers too) and merged in replica order. Every
    worker gets the same result, equal to
    ``ClassStatistics.from_batches`` on the whole data up to float64 rounding.

    Args:
      strategy: a ``tf.distribute.Strategy`` (the default strategy runs on one device).
      feature_fn: ``x [b, ...] -> features [b, D]`` (any float dtype, cast to float64), run
        in replica context, e.g. ``lambda x: extractor(x, training=False)[0]`` with
        ``extractor = features_and_logits(model)`` and ``model`` built under
        ``strategy.scope()``.
      dataset_fn: ``tf.distribute.InputContext -> tf.data.Dataset`` of ``(x, labels)``
        batches of the PER-REPLICA batch size; shard it by
        ``ctx.num_input_pipelines`` / ``ctx.input_pipeline_id`` for multi-worker runs (every
        example must be seen exactly once overall).
      num_classes: number of classes ``C``; labels must lie in ``[0, C)``.

    Returns:
      :class:`ddu_tf.density.ClassStatistics`; fit the GMM with
      ``ClassConditionalGaussians.from_statistics``.

    Raises:
      ValueError: ``num_classes`` not a positive integer, an empty dataset, labels outside
        ``[0, num_classes)`` or non-finite features (the last two checked in the graph).
    """
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError("Expected num_classes to be a positive integer. Received: "
                         f"num_classes={num_classes!r}")
    num_classes = int(num_classes)
    dist_dataset = strategy.distribute_datasets_from_function(dataset_fn)

    def replica_moments(x, labels):
        features = tf.cast(feature_fn(x), tf.float64)
        labels = tf.cast(labels, tf.int32)
        checks = [
            tf.debugging.assert_all_finite(features, "feature_fn returned NaN/Inf features"),
            tf.debugging.assert_non_negative(labels, message="labels must be >= 0"),
            tf.debugging.assert_less(labels, num_classes,
                                     message=f"labels must be < num_classes={num_classes}"),
        ]
        with tf.control_dependencies(checks):
            return batch_moments(tf.identity(features), labels, num_classes)

    @tf.function
    def first_step(x, labels):
        return strategy.run(replica_moments, args=(x, labels))

    @tf.function
    def next_step(moments, x, labels):
        return strategy.run(lambda m, xb, yb: merge_moments(m, replica_moments(xb, yb)),
                            args=(moments, x, labels))

    @tf.function
    def gather(moments):
        expanded = strategy.run(lambda m: tuple(t[None] for t in m), args=(moments,))
        return tuple(strategy.gather(t, axis=0) for t in expanded)

    moments = None
    try:
        for x, labels in dist_dataset:
            moments = first_step(x, labels) if moments is None else next_step(moments, x, labels)
    except tf.errors.InvalidArgumentError as e:  # a failed in-graph check: say it plainly
        if "NaN/Inf features" in e.message:
            raise ValueError(
                "Expected finite features. Received NaN/Inf features from feature_fn on the "
                "fitting data; check the inputs (NaN/Inf pixels) and the feature extractor "
                "(e.g. diverged training) before fitting the density.") from None
        if "labels must be" in e.message:
            raise ValueError(
                f"Expected labels in [0, {num_classes}) (num_classes={num_classes}). Received "
                "a label outside that range; set num_classes to cover every label.") from None
        raise
    if moments is None:
        raise ValueError("Expected dataset_fn to give at least one (x, labels) batch. "
                         "Received an empty dataset.")
    per_replica = [t.numpy() for t in gather(moments)]
    stats = None
    for replica in range(per_replica[0].shape[0]):
        part = ClassStatistics(*(t[replica] for t in per_replica))
        stats = part if stats is None else stats.merge(part)
    return stats


__all__ = ["distributed_class_statistics"]
