"""Scale-out on ``tf.distribute``: strategies, exact distributed GMM fitting, sharded scoring.

Three pieces, all built on TensorFlow's own ``tf.distribute`` (nothing home-made):

1. :func:`get_strategy` / :func:`add_strategy_argument` / :func:`strategy_from_args`: the
   ``--strategy {default,mirrored,multiworker,tpu}`` flag of the experiment scripts. Create
   the strategy FIRST (before any other TensorFlow op: ``MultiWorkerMirroredStrategy`` must
   configure the collective ops at program start), then build the model, the SN wrapper's
   state and the optimiser under ``strategy.scope()``. Batch sizes given to ``model.fit`` are
   GLOBAL: ``tf.distribute`` splits each batch across the ``strategy.num_replicas_in_sync``
   replicas and all-reduces (sums) the gradients of the batch-mean loss, so one step equals a
   single-device step on the same global batch (BatchNorm statistics excepted: they are
   computed per replica unless the layer is ``synchronized=True``). Keras 3's ``model.fit``
   does not work under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585); multi-worker
   training goes through :func:`make_train_step` (a custom loop), which works everywhere.

2. :func:`distributed_class_statistics`: DDU's per-class sufficient statistics (count, mean,
   centred scatter, float64) computed per replica over its shard of the data, then all-gathered
   with ``strategy.gather`` and merged with Chan et al.'s exact parallel update
   (:func:`ddu_tf.density.merge_moments`), in replica order. The GMM fitted from them
   (``ClassConditionalGaussians.from_statistics``) equals the single-device fit up to float64
   rounding; merging centred moments (rather than all-reducing raw sums ``sum z z^T``) keeps
   that accuracy when the features have a large common offset.

3. :func:`sharded_scores`: pool scoring sharded across replicas with
   ``strategy.distribute_datasets_from_function``. The pool is cut into batches of
   ``batch_size`` rows in pool order; batch ``k`` goes to input pipeline
   ``k mod num_input_pipelines`` (round-robin over local replicas); every row carries its pool
   index, and the gathered results are scattered back, so the output is in pool order and
   independent of the number of replicas. :func:`mc_dropout_score_fn` (equal to
   ``MCDropoutPredictor.reduce`` on the whole pool) and :func:`gmm_score_fn` are ready-made
   ``score_fn``s.

Example (2 GPUs, or 2 logical CPUs)::

    strategy = get_strategy("mirrored")
    with strategy.scope():
        model = get_model("resnet18", num_classes=10, spectral_normalization=True, mod=True)
    extractor = features_and_logits(model)
    stats = distributed_class_statistics(
        strategy, lambda x: extractor(x, training=False)[0],
        lambda ctx: train_ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id), 10)
    gmm = ClassConditionalGaussians.from_statistics(stats)
    scores = sharded_scores(strategy, gmm_score_fn(lambda x: extractor(x, training=False)[0],
                                                   gmm), pool_images, batch_size=256)
    scores["log_density"]                                  # [N] float64, in pool order
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from ddu_tf.density import ClassStatistics, batch_moments, merge_moments

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
"""Names accepted by :func:`get_strategy` and the ``--strategy`` flag."""


# ----------------------------------------------------------------------------- strategies
def _check_tf_config():
    """Parse ``TF_CONFIG`` for a multi-worker run; ValueError with an example when unusable."""
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "Expected the TF_CONFIG environment variable for --strategy multiworker. Received: "
            f"TF_CONFIG unset. Set it on every worker, e.g. {example} (index = this worker), "
            "or pass cluster_resolver=.")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"Expected TF_CONFIG to be JSON. Received: TF_CONFIG={raw!r} "
                         f"({error}). Example: {example}") from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise ValueError("Expected TF_CONFIG with 'cluster' and 'task' keys. Received: "
                         f"TF_CONFIG={raw!r}. Example: {example}")
    return config


def get_strategy(name="default", *, devices=None, tpu=None, cluster_resolver=None):
    """A ``tf.distribute.Strategy`` by name.

    Args:
      name: one of :data:`STRATEGIES`:
        ``"default"`` -- ``tf.distribute.get_strategy()``, the no-op single-device strategy;
        ``"mirrored"`` -- ``tf.distribute.MirroredStrategy(devices)``: synchronous data
        parallelism over the GPUs of this machine (all visible GPUs by default; the CPU when
        there is none);
        ``"multiworker"`` -- ``tf.distribute.MultiWorkerMirroredStrategy``: synchronous data
        parallelism over several machines, configured by the ``TF_CONFIG`` environment
        variable (or ``cluster_resolver``); must be created before any other TF op;
        ``"tpu"`` -- ``tf.distribute.TPUStrategy`` on the TPU named by ``tpu`` (or
        ``$TPU_NAME``; ``"local"`` on a Cloud TPU VM).
      devices: device strings for ``"mirrored"`` (e.g. ``["/gpu:0", "/gpu:1"]``).
      tpu: TPU name or ``grpc://host:port`` address for ``"tpu"``.
      cluster_resolver: a ``tf.distribute.cluster_resolver.ClusterResolver`` for
        ``"multiworker"`` (e.g. ``SlurmClusterResolver()``) instead of ``TF_CONFIG``.

    Returns:
      The strategy; ``strategy.num_replicas_in_sync`` is the number of replicas.

    Raises:
      ValueError: unknown ``name``; ``devices`` given for a strategy other than mirrored;
        ``"multiworker"`` without a usable ``TF_CONFIG``; ``"tpu"`` without an address or
        when the TPU cannot be reached.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy. Expected one of {STRATEGIES}. Received: name={name!r}")
    if devices is not None and name != "mirrored":
        raise ValueError("Expected devices only with name='mirrored'. Received: "
                         f"devices={devices!r} with name={name!r}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        if cluster_resolver is None:
            _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster_resolver)
    address = tpu if tpu is not None else os.environ.get("TPU_NAME")
    if not address:
        raise ValueError(
            "Expected a TPU address for --strategy tpu. Received: tpu=None and TPU_NAME unset. "
            "Pass --tpu local on a Cloud TPU VM, or the TPU name / grpc://host:port.")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise ValueError(f"Expected a reachable TPU. Received: tpu={address!r}, which failed "
                         f"with {type(error).__name__}: {error}") from error
    return tf.distribute.TPUStrategy(resolver)


def add_strategy_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--strategy {default,mirrored,multiworker,tpu}`` and ``--tpu`` to a CLI parser.

    Use :func:`strategy_from_args` on the parsed namespace. Returns ``parser``.
    """
    parser.add_argument(
        "--strategy", default="default", choices=STRATEGIES,
        help="tf.distribute strategy: default (one device), mirrored (all local GPUs), "
             "multiworker (machines listed in TF_CONFIG) or tpu. Batch sizes are global "
             "(split across replicas).")
    parser.add_argument("--tpu", default=None,
                        help="TPU name or grpc://host:port for --strategy tpu ('local' on a "
                             "Cloud TPU VM; default $TPU_NAME)")
    return parser


def strategy_from_args(args):
    """The strategy chosen by the flags of :func:`add_strategy_argument`."""
    return get_strategy(args.strategy, tpu=getattr(args, "tpu", None))


def is_chief(strategy) -> bool:
    """Whether this process should write outputs (always True except on non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def worker_directory(strategy, directory: str) -> str:
    """``directory`` on the chief; a private temporary directory on other workers.

    Every worker of a multi-worker run executes the same program, including
    ``model.save`` and the checkpoint / TensorBoard callbacks; pointing the non-chief
    workers elsewhere keeps them from overwriting the chief's files.
    """
    if is_chief(strategy):
        return directory
    task = strategy.cluster_resolver
    return tempfile.mkdtemp(prefix=f"ddu_tf_{task.task_type}{task.task_id}_")


# ----------------------------------------------------------------------------- custom training
def split_batch(strategy, *tensors):
    """Split a GLOBAL batch into contiguous per-replica slices (distributed values).

    Replica ``i`` of ``R`` (global id, across workers) gets rows
    ``[n * i // R, n * (i + 1) // R)``, so uneven batches are fine. Every worker must pass the
    same global batch (same data and seeds).

    Args:
      strategy: a ``tf.distribute.Strategy``.
      *tensors: arrays or tensors ``[n, ...]`` with a common ``n``.

    Returns:
      A tuple of per-replica values (the tensors themselves for a single replica).
    """
    tensors = tuple(tf.convert_to_tensor(t) for t in tensors)
    if not tensors or len({int(t.shape[0]) for t in tensors}) != 1:
        raise ValueError("Expected one or more tensors [n, ...] with a common n. Received: "
                         f"shapes {[t.shape for t in tensors]}.")
    n, replicas = int(tensors[0].shape[0]), strategy.num_replicas_in_sync
    if replicas == 1:
        return tensors

    def value_fn(context):
        i = context.replica_id_in_sync_group
        return tuple(t[n * i // replicas:n * (i + 1) // replicas] for t in tensors)

    return strategy.experimental_distribute_values_from_function(value_fn)


def make_train_step(strategy, model, optimizer, loss_fn=None):
    """A compiled optimiser step on a GLOBAL batch, data-parallel over ``strategy``.

    ``step(x, y)`` splits the batch with :func:`split_batch`, computes on every replica the
    gradient of ``sum_i loss_i / n`` (``n`` = global batch size, so the all-reduced sum of
    the replica gradients is the gradient of the batch-mean loss, exactly as on one device)
    and applies it once with ``optimizer``. ``model`` and ``optimizer`` must have been created
    under ``strategy.scope()`` (an unbuilt optimizer is built here, under the scope).
    BatchNorm statistics are per replica.

    Args:
      strategy: a ``tf.distribute.Strategy``.
      model: ``x [b, ...] -> logits [b, classes]``.
      optimizer: a ``keras.optimizers.Optimizer``.
      loss_fn: per-example loss ``(y, logits) -> [b]``; default sparse categorical
        cross-entropy from logits.

    Returns:
      ``step(x, y) -> loss``: the batch-mean loss (float32 scalar tensor).
    """
    import keras

    if loss_fn is None:
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    if not optimizer.built:  # slots must exist before the replicas apply gradients
        with strategy.scope():
            optimizer.build(model.trainable_variables)

    def replica_step(x, y, global_size):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_sum(tf.cast(loss_fn(y, logits), tf.float32)) / global_size
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function(reduce_retracing=True)
    def distributed_step(x, y, global_size):
        losses = strategy.run(replica_step, args=(x, y, global_size))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    def step(x, y):
        global_size = tf.constant(float(np.shape(x)[0]))
        x, y = split_batch(strategy, x, y)
        return distributed_step(x, y, global_size)

    return step


# ----------------------------------------------------------------------------- GMM statistics
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
      ValueError: ``num_classes`` not a positive integer, or an empty dataset.
      tf.errors.InvalidArgumentError: labels outside ``[0, num_classes)`` or non-finite
        features (checked in the graph).
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
    for x, labels in dist_dataset:
        moments = first_step(x, labels) if moments is None else next_step(moments, x, labels)
    if moments is None:
        raise ValueError("Expected dataset_fn to give at least one (x, labels) batch. "
                         "Received an empty dataset.")
    per_replica = [t.numpy() for t in gather(moments)]
    stats = None
    for replica in range(per_replica[0].shape[0]):
        part = ClassStatistics(*(t[replica] for t in per_replica))
        stats = part if stats is None else stats.merge(part)
    return stats


# ----------------------------------------------------------------------------- sharded scoring
def _pool_dataset(pool):
    """``(indices [N] int64, pool)`` as an unbatched dataset, and N when known."""
    if isinstance(pool, tf.data.Dataset):
        return pool.enumerate(), None
    arrays = tf.nest.map_structure(np.asarray, pool)
    lengths = {a.shape[0] if a.ndim else None for a in tf.nest.flatten(arrays)}
    if len(lengths) != 1 or None in lengths:
        raise ValueError("Expected pool arrays [N, ...] with one common N. Received: shapes "
                         f"{[a.shape for a in tf.nest.flatten(arrays)]}.")
    n = lengths.pop()
    indices = np.arange(n, dtype=np.int64)
    return tf.data.Dataset.from_tensor_slices((indices, arrays)), n


def sharded_scores(strategy, score_fn, pool, batch_size: int):
    """Score a pool with ``score_fn``, sharded across the strategy's replicas, in pool order.

    The pool is cut into consecutive batches of ``batch_size`` rows (batch ``k`` = rows
    ``k * batch_size ...``, the last one possibly shorter); the batches are dealt round-robin
    to the input pipelines of ``strategy.distribute_datasets_from_function`` and to the
    replicas; each replica returns its scores with the rows' pool indices, the results are
    all-gathered (``strategy.gather``, across workers too) and scattered back to pool order.
    Since batches are the same whatever the number of replicas, the result equals the
    single-device one (``strategy = tf.distribute.get_strategy()``).

    Args:
      strategy: a ``tf.distribute.Strategy``.
      score_fn: ``(x, indices) -> scores``, run in replica context (compiled): ``x`` is one
        batch of the pool (same nesting as ``pool``, ``[b, ...]``, ``b <= batch_size``; ``b``
        may be 0 on replicas left without data in the last step), ``indices`` the ``[b]``
        int64 pool positions of its rows; ``scores`` a tensor or nest of tensors
        ``[b, ...]``. Build the models it uses under ``strategy.scope()``.
      pool: array ``[N, ...]``, a nest (tuple/dict) of such arrays, or an UNBATCHED
        ``tf.data.Dataset`` (e.g. ``ds.unbatch()``); every worker reads the whole pool and
        keeps its batches.
      batch_size: rows per ``score_fn`` call (per replica); one step scores
        ``batch_size * num_replicas_in_sync`` rows.

    Returns:
      NumPy array ``[N, ...]`` (or the same nest as ``score_fn``'s output) in pool order.

    Raises:
      ValueError: bad ``batch_size``, pool arrays of different lengths, an empty pool.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size!r}")
    batch_size = int(batch_size)
    dataset, n = _pool_dataset(pool)
    if n == 0:
        raise ValueError("Expected a non-empty pool. Received: 0 rows.")

    def dataset_fn(context):
        return dataset.batch(batch_size).shard(context.num_input_pipelines,
                                               context.input_pipeline_id)

    dist_dataset = strategy.distribute_datasets_from_function(dataset_fn)

    def replica_fn(indices, x):
        return indices, score_fn(x, indices)

    @tf.function(reduce_retracing=True)
    def step(indices, x):
        out = strategy.run(replica_fn, args=(indices, x))
        return tf.nest.map_structure(lambda t: strategy.gather(t, axis=0), out)

    all_indices, all_scores = [], []
    for indices, x in dist_dataset:
        gathered_indices, scores = step(indices, x)
        all_indices.append(gathered_indices.numpy())
        all_scores.append(tf.nest.map_structure(lambda t: t.numpy(), scores))
    if not all_indices:
        raise ValueError("Expected a non-empty pool. Received: 0 rows.")
    indices = np.concatenate(all_indices)
    total = indices.size
    if not np.array_equal(np.sort(indices), np.arange(total)) or (n is not None and total != n):
        raise ValueError(
            f"Expected every pool row scored exactly once. Received {total} rows for a pool of "
            f"{n if n is not None else 'unknown size'}; do not shard the pool yourself.")
    order = np.argsort(indices, kind="stable")

    def reorder(*parts):
        return np.concatenate(parts)[order]

    return tf.nest.map_structure(reorder, *all_scores)


def mc_dropout_score_fn(predictor, reduce_fn, *, seed=None, batch_size=None):
    """A :func:`sharded_scores` ``score_fn`` equal to ``predictor.reduce(pool, reduce_fn, seed)``.

    ``MCDropoutPredictor`` draws its stateless dropout masks per chunk of
    ``predictor.chunk_size`` pool rows, seeded by the chunk's index in the pool. This
    ``score_fn`` recovers that index from the rows' pool indices, so every point gets the
    same masks as in the single-device call, whatever replica scores it.

    Args:
      predictor: a :class:`ddu_tf.active_learning.MCDropoutPredictor` (model built under
        ``strategy.scope()``).
      reduce_fn: ``[T, chunk, C] -> [chunk, ...]``, e.g. ``get_acquisition("bald")``.
      seed: stateless seed (int or pair); None uses the predictor's.
      batch_size: the ``batch_size`` that will be given to :func:`sharded_scores`; must be a
        multiple of ``predictor.chunk_size`` (default: ``predictor.chunk_size``).

    Returns:
      ``(score_fn, batch_size)``; call ``sharded_scores(strategy, score_fn, pool, batch_size)``.
    """
    chunk = int(predictor.chunk_size)
    batch_size = chunk if batch_size is None else batch_size
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1 \
            or batch_size % chunk:
        raise ValueError(f"Expected batch_size a positive multiple of predictor.chunk_size="
                         f"{chunk}. Received: batch_size={batch_size!r}")
    batch_size = int(batch_size)
    seed = predictor.seed if seed is None else predictor._seed_tensor(seed)

    def score_fn(x, indices):
        first = tf.cond(tf.shape(x)[0] > 0,
                        lambda: tf.cast(indices[0] // batch_size, tf.int32) * (batch_size // chunk),
                        lambda: tf.constant(0, tf.int32))
        return predictor.reduce_in_graph(x, reduce_fn, seed, first)

    return score_fn, batch_size


def gmm_score_fn(feature_fn, gmm):
    """A :func:`sharded_scores` ``score_fn`` giving DDU's GMM scores of the features.

    Args:
      feature_fn: ``x [b, ...] -> features [b, D]`` (cast to float64).
      gmm: a fitted :class:`ddu_tf.density.ClassConditionalGaussians`.

    Returns:
      ``score_fn`` whose output is the dict of ``gmm.scores``: ``class_log_densities
      [b, C]``, ``log_density [b]``, ``weighted_log_density [b]`` (float64, nats).
    """
    def score_fn(x, indices):
        features = tf.cast(feature_fn(x), tf.float64)
        class_log_densities, log_density, weighted = gmm.score_tensors(features)
        return {"class_log_densities": class_log_densities, "log_density": log_density,
                "weighted_log_density": weighted}

    return score_fn


__all__ = [
    "STRATEGIES", "add_strategy_argument", "distributed_class_statistics", "get_strategy",
    "gmm_score_fn", "is_chief", "make_train_step", "mc_dropout_score_fn", "sharded_scores",
    "split_batch", "strategy_from_args", "worker_directory",
]
