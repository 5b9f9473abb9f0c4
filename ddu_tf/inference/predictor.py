"""The package's one inference path: compiled, chunked forward passes of a logits model, on
one device or sharded across the replicas of a ``tf.distribute`` strategy.

:class:`Predictor` gives logits ``[N, C]`` or ``(features [N, d], logits [N, C])`` of arrays
and of ``(x, y)`` datasets; :class:`ddu_tf.inference.MCDropoutPredictor` extends it with
MC-dropout reductions. Both rest on two pieces:

* :func:`chunked_map`: inside one ``tf.function`` the input is padded to whole chunks of
  ``chunk_size`` rows and a ``tf.map_fn`` walks the chunks, so there is no Python loop and no
  host round-trip per chunk, and peak memory is bounded by one chunk's activations.
  The compiled functions have a fixed ``[None, *input_shape]`` float32 signature and are
  cached for the model's lifetime (per model, kind and chunk size), so scoring a pool, a
  validation set and a test set every active-learning round traces once as long as the
  model object is reused (re-initialise its weights instead of rebuilding it).
* sharding (``strategy`` given): the input is cut into consecutive batches of ``chunk_size``
  rows in input order; batch ``k`` goes to input pipeline ``k mod num_input_pipelines``
  (``strategy.distribute_datasets_from_function``, round-robin over the replicas, across
  workers too); every row carries its position, the results are all-gathered
  (``strategy.gather``) and put back in input order. The batches are the single-device
  chunks, and chunk ``k`` is told its index ``k`` (the MC-dropout masks are keyed on it), so
  the output equals the single-device one whatever the number of replicas. Build the model
  under ``strategy.scope()``.

Example::

    predictor = Predictor(model, chunk_size=256)                 # or strategy=get_strategy(...)
    features, logits = predictor.features_and_logits(x_pool)     # [N, d], [N, C] float32
    logits, labels = predictor.dataset_logits(test_ds)           # float64, int64
"""
from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from ddu_tf import uncertainty
from ddu_tf.models import features_and_logits as _features_and_logits_model

_CACHE = weakref.WeakKeyDictionary()
"""model -> {key: compiled function}: traces shared by every Predictor of the same model."""


def _cached(model, key, build):
    cache = _CACHE.setdefault(model, {})
    if key not in cache:
        cache[key] = build()
    return cache[key]


def _check_positive(name, value):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"Expected {name} >= 1. Received: {name}={value!r}")
    return int(value)


def chunked_map(x, fn, chunk, first_chunk=0, output_signature=tf.float32):
    """Apply ``fn`` to ``x`` chunk by chunk inside the graph (``tf.map_fn``).

    Args:
        x: ``[n, ...]`` float32 tensor; padded with zeros to ``ceil(n / chunk)`` (at least
            one) whole chunks.
        fn: ``(x_chunk [chunk, ...], chunk_index) -> tensor or nest [chunk, ...]``.
        chunk: rows per chunk (Python int).
        first_chunk: index of ``x``'s first chunk in the whole input; chunk ``k`` is called
            with ``first_chunk + k``.
        output_signature: ``fn``'s output signature for ``tf.map_fn``.

    Returns:
        ``fn``'s outputs concatenated over the chunks and trimmed to ``[n, ...]``.
    """
    n = tf.shape(x)[0]
    n_chunks = tf.maximum((n + chunk - 1) // chunk, 1)
    padding = [[0, n_chunks * chunk - n]] + [[0, 0]] * (x.shape.rank - 1)
    chunks = tf.reshape(tf.pad(x, padding),
                        tf.concat([[n_chunks, chunk], tf.shape(x)[1:]], axis=0))
    out = tf.map_fn(lambda args: fn(*args), (chunks, first_chunk + tf.range(n_chunks)),
                    fn_output_signature=output_signature, parallel_iterations=1)
    return tf.nest.map_structure(
        lambda o: tf.reshape(o, tf.concat([[-1], tf.shape(o)[2:]], axis=0))[:n], out)


def _pool_dataset(pool):
    """``(positions [N] int64, pool)`` as an unbatched dataset, and N when known."""
    if isinstance(pool, tf.data.Dataset):
        return pool.enumerate(), None
    arrays = tf.nest.map_structure(np.asarray, pool)
    lengths = {a.shape[0] if a.ndim else None for a in tf.nest.flatten(arrays)}
    if len(lengths) != 1 or None in lengths:
        raise ValueError("Expected arrays [N, ...] with one common N. Received: shapes "
                         f"{[a.shape for a in tf.nest.flatten(arrays)]}.")
    n = lengths.pop()
    if n == 0:
        raise ValueError("Expected a non-empty input. Received: 0 rows.")
    return tf.data.Dataset.from_tensor_slices((np.arange(n, dtype=np.int64), arrays)), n


def sharded_map(strategy, step, pool, chunk):
    """Run a compiled ``step`` over ``pool`` sharded across the replicas, in pool order.

    Args:
        strategy: a ``tf.distribute.Strategy``.
        step: ``tf.function`` ``(positions, batch) -> nest of gathered tensors``, calling
            ``strategy.run`` on one distributed batch and returning ``(positions,
            outputs)`` gathered with ``strategy.gather`` (see :meth:`Predictor._shard_step`).
        pool: array ``[N, ...]``, a nest of such arrays, or an UNBATCHED ``tf.data.Dataset``;
            every worker reads the whole pool and keeps its batches.
        chunk: rows per batch (per replica per step).

    Returns:
        NumPy outputs ``[N, ...]`` (same nest as ``step``'s) in pool order.
    """
    dataset, n = _pool_dataset(pool)

    def dataset_fn(context):
        return dataset.batch(chunk).shard(context.num_input_pipelines,
                                          context.input_pipeline_id)

    all_positions, all_outputs = [], []
    for positions, batch in strategy.distribute_datasets_from_function(dataset_fn):
        gathered_positions, outputs = step(positions, batch)
        all_positions.append(gathered_positions.numpy())
        all_outputs.append(tf.nest.map_structure(lambda t: t.numpy(), outputs))
    if not all_positions:
        raise ValueError("Expected a non-empty input. Received: 0 rows.")
    positions = np.concatenate(all_positions)
    total = positions.size
    if not np.array_equal(np.sort(positions), np.arange(total)) or (n is not None
                                                                    and total != n):
        raise ValueError(
            f"Expected every row computed exactly once. Received {total} rows for an input "
            f"of {n if n is not None else 'unknown size'}; do not shard the input yourself.")
    order = np.argsort(positions, kind="stable")
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts)[order], *all_outputs)


class Predictor:
    """Compiled inference of a functional logits model, on one device or sharded.

    Args:
        model: functional ``keras.Model`` ``[batch, *input_shape] -> [batch, classes]``
            logits (for features: a layer named ``"features"``, as every
            :func:`ddu_tf.models.get_model` model has). Runs in inference mode
            (``training=False``).
        chunk_size: rows per compiled chunk (bounds peak memory) and, under a strategy,
            rows per replica per step.
        strategy: a ``tf.distribute.Strategy`` to shard the work across its replicas (build
            the model under its scope), or None for one device.
    """

    def __init__(self, model, *, chunk_size=512, strategy=None):
        self.model = model
        self.chunk_size = _check_positive("chunk_size", chunk_size)
        self.strategy = strategy
        self._input_spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
        self._steps = {}

    @property
    def sharded(self) -> bool:
        """Whether work is sharded across a strategy's replicas."""
        return self.strategy is not None

    # ------------------------------------------------------------------ building blocks
    def _net(self, with_features):
        if not with_features:
            return self.model
        return _cached(self.model, "features_and_logits",
                       lambda: _features_and_logits_model(self.model))

    def _forward_chunk_fn(self, with_features):
        """``(x_chunk, index) -> tuple of float32 outputs``, and its map_fn signature."""
        net = self._net(with_features)
        outputs = net.outputs if with_features else net.outputs[:1]
        signature = tuple(tf.TensorSpec([self.chunk_size, *t.shape[1:]], tf.float32)
                          for t in outputs)

        def fn(xb, index):
            out = net(xb, training=False)
            out = out if with_features else [out]
            return tuple(tf.cast(o, tf.float32) for o in out)

        return fn, signature

    def _compiled_chunked(self, with_features):
        def build():
            fn, signature = self._forward_chunk_fn(with_features)
            return tf.function(
                lambda x: chunked_map(x, fn, self.chunk_size, output_signature=signature),
                input_signature=[self._input_spec])
        return _cached(self.model, ("chunked", with_features, self.chunk_size), build)

    def _compiled_batch(self, with_features):
        """One compiled pass over a whole batch (the batches of a dataset), not chunked."""
        def build():
            net = self._net(with_features)
            return tf.function(lambda x: net(x, training=False),
                               input_signature=[self._input_spec])
        return _cached(self.model, ("batch", with_features), build)

    def _shard_step(self, key, replica_fn):
        """A cached ``tf.function`` ``step(positions, batch, *extra)`` running
        ``replica_fn(positions, batch, *extra)`` on every replica (``extra``: tensors given to
        all of them) and gathering ``(positions, outputs)`` from all of them."""
        if key not in self._steps:
            strategy = self.strategy

            @tf.function(reduce_retracing=True)
            def step(positions, batch, *extra):
                out = strategy.run(lambda p, b, *e: (p, replica_fn(p, b, *e)),
                                   args=(positions, batch, *extra))
                return tf.nest.map_structure(lambda t: strategy.gather(t, axis=0), out)

            self._steps[key] = step
        return self._steps[key]

    def _first_chunk(self, positions):
        """Index of a replica batch's first chunk (0 for a replica left without rows)."""
        first = tf.concat([positions[:1], tf.zeros([1], positions.dtype)], axis=0)[0]
        return tf.cast(first // self.chunk_size, tf.int32)

    # ------------------------------------------------------------------ arrays
    def _forward(self, x, with_features):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError("Expected a non-empty batch of inputs [N, ...]. Received: "
                             f"shape {x.shape}.")
        if not self.sharded:
            outputs = self._compiled_chunked(with_features)(tf.constant(x))
            outputs = tuple(o.numpy() for o in outputs)
        else:
            fn, signature = self._forward_chunk_fn(with_features)
            step = self._shard_step(("forward", with_features), lambda p, xb: chunked_map(
                tf.cast(xb, tf.float32), fn, self.chunk_size, self._first_chunk(p), signature))
            outputs = sharded_map(self.strategy, step, x, self.chunk_size)
        return outputs if with_features else outputs[0]

    def logits(self, x) -> np.ndarray:
        """Logits of ``x [N, *input_shape]``: float32 ``[N, classes]``."""
        return self._forward(x, with_features=False)

    def features_and_logits(self, x):
        """``(features [N, d], logits [N, classes])`` float32 of ``x``, in one pass."""
        return self._forward(x, with_features=True)

    # ------------------------------------------------------------------ datasets
    def _dataset(self, dataset, with_features):
        if not self.sharded:
            predict = self._compiled_batch(with_features)
            parts = []
            for x, y in dataset:
                out = predict(tf.cast(x, tf.float32))
                out = out if with_features else (out,)
                parts.append((*(np.asarray(o, np.float64) for o in out), np.asarray(y, np.int64)))
            if not parts:
                raise ValueError("Expected a dataset with at least one batch. Received an "
                                 "empty one.")
            return tuple(np.concatenate(column) for column in zip(*parts))
        net = self._net(with_features)

        def replica_fn(positions, batch):
            x, y = batch
            out = net(tf.cast(x, tf.float32), training=False)
            return (*out, y) if with_features else (out, y)

        step = self._shard_step(("dataset", with_features), replica_fn)
        outputs = sharded_map(self.strategy, step, dataset.unbatch(), self.chunk_size)
        return (*(o.astype(np.float64) for o in outputs[:-1]), outputs[-1].astype(np.int64))

    def dataset_logits(self, dataset):
        """Logits and labels over a dataset of ``(x [batch, ...], y [batch])`` batches.

        On one device each batch is one compiled pass; sharded, the rows are re-batched in
        chunks of ``chunk_size`` (use the dataset's batch size for identical batches).

        Returns:
            ``(logits [n, classes] float64, labels [n] int64)``, in dataset order.
        """
        return self._dataset(dataset, with_features=False)

    def dataset_features_and_logits(self, dataset):
        """Features, logits and labels over a dataset of ``(x, y)`` batches, in one pass.

        Returns:
            ``(features [n, d] float64, logits [n, classes] float64, labels [n] int64)``.
        """
        return self._dataset(dataset, with_features=True)


def as_predictor(model_or_predictor, *, chunk_size=512):
    """A :class:`Predictor` (returned as is) or a ``Predictor(model, chunk_size=...)``."""
    if isinstance(model_or_predictor, Predictor):
        return model_or_predictor
    if not isinstance(model_or_predictor, keras.Model):
        raise ValueError("Expected a keras.Model or a Predictor. Received: "
                         f"{type(model_or_predictor).__name__}.")
    return Predictor(model_or_predictor, chunk_size=chunk_size)


def ensemble_log_probs(predictors, x) -> np.ndarray:
    """Log of the mean softmax of one or several networks on ``x``: ``[N, classes]`` float64.

    ``log((1/M) sum_m softmax(logits_m))`` (:func:`ddu_tf.uncertainty.ensemble_log_mean_probs`
    on the float64 logits); one network gives its log-softmax.

    Args:
        predictors: sequence of :class:`Predictor` (or models).
        x: ``[N, *input_shape]`` inputs.
    """
    logits = np.stack([as_predictor(p).logits(x) for p in predictors]).astype(np.float64)
    return uncertainty.ensemble_log_mean_probs(logits).numpy()


__all__ = ["Predictor", "as_predictor", "chunked_map", "ensemble_log_probs", "sharded_map"]
