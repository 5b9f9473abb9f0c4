"""Vectorised MC-dropout prediction for any functional Keras model.

MC dropout (Gal & Ghahramani 2016) approximates the predictive
``p(y|x) ~= (1/T) sum_t softmax(f(x; W_t))`` with ``W_t`` drawn by dropout masks.
Everything before the first stochastic layer is deterministic, so the model is split
there (``split_at_first_stochastic``): the trunk runs ONCE per pool point and only the
stochastic suffix runs ``T`` times on the tiled trunk output ``[T * batch, ...]``.

Inside one ``tf.function`` the pool is padded to whole chunks and a ``tf.map_fn`` walks
the chunks (:func:`ddu_tf.inference.predictor.chunked_map`), so there is no Python loop
over ``T`` or over chunks and no host round-trip per chunk; peak memory is bounded by the
chunk size. With a ``strategy`` the chunks are sharded across its replicas (the
:class:`~ddu_tf.inference.Predictor` machinery); every chunk keeps its masks, so the scores
equal the single-device ones. Noise is drawn from stateless RNG
keyed on ``(seed, stochastic layer index[, chunk index])``: dropout is active whatever
Keras' training flag, runs are reproducible, and with ``consistent_masks=True`` the same
``T`` masks are used for every pool point (BatchBALD's "consistent" dropout). All other
layers (e.g. BatchNormalization in the suffix) run in inference mode.

With consistent masks, a plain ``Dropout`` on a trunk output that feeds a ``Dense`` layer
(directly or through ``Flatten``) is folded into that layer's kernel:
``(x * m_t / keep) @ W = x @ (diag(m_t / keep) W)``, so the ``T`` masked kernels form one
``[features, T * units]`` matrix (built once per call) and the layer is one GEMM of the
untiled ``[chunk, features]`` input -- the same FLOPs, without drawing, applying and
storing the ``[T * chunk, features]`` masked activations (see :func:`plan_folds`).

Example:
    >>> predictor = MCDropoutPredictor(model, num_samples=100, seed=0)
    >>> scores = predictor.reduce(x_pool, bald)          # [N]
    >>> log_p = predictor.mean_log_probs(x_test)         # [N, classes]
"""
import math

import keras
import numpy as np
import tensorflow as tf

from ddu_tf.inference.predictor import Predictor, chunked_map, sharded_map
from ddu_tf.uncertainty import log_mean_prob

STOCHASTIC_LAYER_TYPES = (
    keras.layers.Dropout,  # includes SpatialDropout1D/2D/3D
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.GaussianNoise,
)


def _history(tensor):
    history = tensor._keras_history
    return history.operation, history.node_index


def _node_inputs(tensor):
    operation, node_index = _history(tensor)
    if isinstance(operation, keras.layers.InputLayer):
        return []
    return list(operation._inbound_nodes[node_index].input_tensors)


def split_at_first_stochastic(model):
    """Split ``model`` into a deterministic trunk and a stochastic suffix sharing weights.

    A tensor is "stochastic" if it is produced by a stochastic layer
    (``STOCHASTIC_LAYER_TYPES``) or depends on one. The frontier is the set of
    deterministic tensors consumed by stochastic ones; the trunk maps the model inputs to
    the frontier, the suffix maps the frontier to the model outputs, so
    ``suffix(trunk(x)) == model(x)`` for any fixed noise.

    Args:
        model: a functional ``keras.Model`` (single input, single output). Stochastic
            layers must sit at the top level (not inside nested models).

    Returns:
        ``(trunk, suffix, stochastic_layers)``: two functional models (``suffix`` is None
        when the model has no stochastic layer) and the stochastic layers in the
        model's topological order.
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_run_through_graph"):
        raise ValueError(
            "Expected a functional keras.Model (built with keras.Input). Received: "
            f"model of type {type(model).__name__}. Rebuild it with the functional API.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "Expected a model with one input and one output. Received: "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs.")
    for op in model.operations:
        if isinstance(op, keras.Model) and any(
                isinstance(inner, STOCHASTIC_LAYER_TYPES) for inner in op._flatten_layers()):
            raise ValueError(
                f"Stochastic layers inside the nested model {op.name!r} are not supported. "
                "Received: a nested model with dropout. Flatten it into the outer model.")
    stochastic_layers = [op for op in model.operations
                         if isinstance(op, STOCHASTIC_LAYER_TYPES)]
    if not stochastic_layers:
        return model, None, []

    depends = {}

    def is_stochastic(tensor):
        key = id(tensor)
        if key not in depends:
            operation, _ = _history(tensor)
            depends[key] = isinstance(operation, STOCHASTIC_LAYER_TYPES) or any(
                is_stochastic(t) for t in _node_inputs(tensor))
        return depends[key]

    frontier, seen = [], set()

    def collect(tensor):
        if id(tensor) in seen:
            return
        seen.add(id(tensor))
        if not is_stochastic(tensor):
            frontier.append(tensor)
            return
        for parent in _node_inputs(tensor):
            collect(parent)

    collect(model.outputs[0])
    trunk = keras.Model(model.inputs, frontier if len(frontier) > 1 else frontier[0],
                        name=f"{model.name}_trunk")
    suffix = keras.Model(frontier if len(frontier) > 1 else frontier[0], model.outputs[0],
                         name=f"{model.name}_suffix")
    return trunk, suffix, stochastic_layers


def _per_example_noise_shape(layer, x_static_shape, rest_dynamic):
    """Noise shape of one example, ``[...]`` without batch, as a 1-D int32 tensor."""
    if isinstance(layer, keras.layers.Dropout):
        if hasattr(layer, "_get_noise_shape"):  # SpatialDropout1D/2D/3D
            static = tuple(layer._get_noise_shape(keras.KerasTensor(x_static_shape)))[1:]
        else:
            static = None if layer.noise_shape is None else tuple(layer.noise_shape)[1:]
    elif isinstance(layer, keras.layers.AlphaDropout):
        static = None if layer.noise_shape is None else tuple(layer.noise_shape)[1:]
    else:
        static = None
    if static is None:
        return rest_dynamic
    return tf.stack([rest_dynamic[i] if dim is None else tf.constant(int(dim), tf.int32)
                     for i, dim in enumerate(static)])


def apply_noise(layer, x, num_samples, seed, consistent, broadcast=False):
    """Apply ``layer``'s training-time noise to ``x`` = ``[T * batch, ...]`` (T-major).

    Masks have shape ``[T, 1, ...]`` (consistent: shared by the batch) or
    ``[T, batch, ...]``, drawn with stateless RNG from ``seed`` (int64 ``[2]``).
    Dropout uses inverted scaling ``mask / (1 - rate)`` as Keras does, so
    ``E[output] = input``.

    With ``broadcast=True``, ``x`` is the untiled ``[batch, ...]`` (the same for all T
    samples) and is broadcast against the masks instead of being copied T times first:
    the output, ``[T * batch, ...]``, is identical to tiling ``x`` and calling with
    ``broadcast=False``, one pass over the ``T * batch`` elements cheaper.
    """
    rest = tf.shape(x)[1:]
    out_shape = tf.concat([[-1], rest], axis=0)
    xr = x[None] if broadcast else tf.reshape(x, tf.concat([[num_samples, -1], rest], axis=0))
    batch = 1 if consistent else tf.shape(xr)[1]
    per_example = _per_example_noise_shape(layer, x.shape, rest)
    noise_shape = tf.concat([[num_samples, batch], per_example], axis=0)
    if isinstance(layer, keras.layers.GaussianNoise):
        out = xr + layer.stddev * tf.random.stateless_normal(noise_shape, seed, dtype=x.dtype)
    elif isinstance(layer, keras.layers.GaussianDropout):
        stddev = math.sqrt(layer.rate / (1.0 - layer.rate)) if layer.rate < 1 else 0.0
        out = xr * (1.0 + stddev * tf.random.stateless_normal(noise_shape, seed, dtype=x.dtype))
    else:
        keep_prob = 1.0 - float(layer.rate)
        if keep_prob >= 1.0:
            return tf.reshape(tf.broadcast_to(xr, tf.concat([[num_samples], tf.shape(xr)[1:]],
                                                            axis=0)), out_shape)
        keep = bernoulli_mask(noise_shape, seed, keep_prob)
        if isinstance(layer, keras.layers.AlphaDropout):
            keep = tf.cast(keep, x.dtype)
            alpha_p = -1.6732632423543772848170429916717 * 1.0507009873554804934193349852946
            a = (keep_prob * (1.0 + layer.rate * alpha_p ** 2)) ** -0.5
            b = -a * alpha_p * layer.rate
            out = a * (xr * keep + alpha_p * (1.0 - keep)) + b
        else:
            out = tf.where(keep, xr / tf.cast(keep_prob, x.dtype), tf.zeros([], x.dtype))
    return tf.reshape(out, out_shape)


def bernoulli_mask(shape, seed, keep_prob):
    """Boolean ``shape`` mask with ``P(True) = keep_prob``, from stateless RNG ``seed``.

    When ``keep_prob * 256`` is an integer (rates 0.5, 0.25, 0.125, ...), each element
    compares one random byte with it -- exact, and a quarter of the Philox draws of one
    float per element (the draws dominate MC-dropout scoring on CPU); otherwise one
    uniform float per element is compared with ``keep_prob``.
    """
    level = keep_prob * 256.0
    if level != round(level):
        return tf.random.stateless_uniform(shape, seed) < keep_prob
    size = tf.reduce_prod(shape)
    words = tf.random.stateless_uniform([(size + 3) // 4], seed, dtype=tf.uint32,
                                        minval=None, maxval=None)
    random_bytes = tf.reshape(tf.bitcast(words, tf.uint8), [-1])[:size]
    return tf.reshape(random_bytes < tf.constant(int(level), tf.uint8), shape)


def _deterministic_call(op):
    def call(*args, **kwargs):
        if "training" in getattr(op, "_call_context_args", ()):
            kwargs["training"] = False
        return op(*args, **kwargs)
    return call


def noise_seed(seed, layer_number, consistent, chunk_index=None):
    """Stateless seed ``[2]`` of one stochastic layer's masks: ``seed`` folded with the
    layer's index in the model and, unless ``consistent``, with the chunk index."""
    layer_seed = tf.random.experimental.stateless_fold_in(seed, layer_number)
    if consistent:
        return layer_seed
    return tf.random.experimental.stateless_fold_in(layer_seed, chunk_index)


def run_with_noise(graph, inputs, num_samples, seed, consistent, layer_index, chunk_index,
                   untiled=(), folded=None):
    """Run functional ``graph`` on T-tiled ``inputs`` with our stateless noise.

    Args:
        graph: functional keras.Model (the suffix or the full model).
        inputs: tensor or list of tensors ``[T * batch, ...]``, except those flagged in
            ``untiled``.
        num_samples: T.
        seed: int64 ``[2]`` base seed.
        consistent: share masks across the batch (and across chunks).
        layer_index: ``{id(layer): k}`` index of each stochastic layer in the full model
            (so the split and unsplit paths draw identical masks).
        chunk_index: scalar int; folded into the seed unless ``consistent``.
        untiled: one bool per input (default all False): True marks an input passed as
            ``[batch, ...]`` without tiling, allowed when only stochastic layers consume it
            (they broadcast it against their ``T`` masks, see :func:`apply_noise`).
        folded: ``(dropout, dense, kernel [features, T * units])`` triples from
            :func:`fold_kernels` (consistent masks only): each dense layer multiplies its
            untiled input by the folded kernel, and its dropout passes its input through.

    Returns:
        The graph's output ``[T * batch, ...]``.
    """
    flat = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    untiled_ids = {id(t) for t, flag in zip(flat, untiled) if flag}
    kernels = {id(dense): kernel for _, dense, kernel in folded or ()}
    passthrough = {id(dropout) for dropout, _, _ in folded or ()}

    def operation_fn(op):
        if id(op) in kernels:
            return lambda x, **kwargs: _folded_dense(op, x, kernels[id(op)], num_samples)
        if id(op) in passthrough:
            return lambda x, **kwargs: x
        if not isinstance(op, STOCHASTIC_LAYER_TYPES):
            return _deterministic_call(op)

        def noisy(x, **kwargs):
            return apply_noise(op, x, num_samples,
                               noise_seed(seed, layer_index[id(op)], consistent, chunk_index),
                               consistent, broadcast=id(x) in untiled_ids)
        return noisy

    outputs = graph._run_through_graph(flat, operation_fn=operation_fn)
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def plan_folds(suffix, stochastic_layers, untiled, num_samples, memory_budget_mb):
    """The ``(dropout, flatten or None, dense)`` layers whose consistent masks can be folded.

    A pair qualifies when the dropout is a plain ``keras.layers.Dropout`` (per-element
    mask, no ``noise_shape``) reading an untiled suffix input (see
    :func:`_consumed_only_by_noise`), its only consumer is a float32 ``Dense`` on rank-2
    inputs -- directly or through one ``Flatten`` that only that Dense reads -- and the
    folded kernel, ``T * features * units`` float32 values, fits ``memory_budget_mb``.
    """
    if suffix is None:
        return []
    inputs_untiled = {id(t) for t, flag in zip(suffix.inputs, untiled) if flag}
    consumers = _readers(suffix)
    pairs = []
    for layer in stochastic_layers:
        if type(layer) is not keras.layers.Dropout or layer.noise_shape is not None:
            continue
        if not 0.0 < float(layer.rate) < 1.0:
            continue
        nodes = [node for node in layer._inbound_nodes
                 if any(id(t) in inputs_untiled for t in node.input_tensors)]
        if len(nodes) != 1:  # (the layer's nodes include the full model's)
            continue
        readers = consumers.get(id(nodes[0].output_tensors[0]), [])
        flatten = None
        if len(readers) == 1 and isinstance(readers[0][0], keras.layers.Flatten):
            flatten = readers[0][0]
            readers = consumers.get(id(readers[0][1].output_tensors[0]), [])
        if len(readers) != 1 or not isinstance(readers[0][0], keras.layers.Dense):
            continue
        dense, node = readers[0]
        if (len(node.input_tensors[0].shape) != 2
                or dense.compute_dtype != "float32" or dense.kernel.dtype != "float32"
                or getattr(dense, "lora_enabled", False)
                or getattr(dense, "quantization_mode", None) is not None):
            continue
        size = num_samples * int(np.prod(dense.kernel.shape)) * 4
        if size <= memory_budget_mb << 20:
            pairs.append((layer, flatten, dense))
    return pairs


def fold_kernels(pairs, num_samples, seed, layer_index):
    """The folded kernels ``[features, T * units]`` of :func:`plan_folds`'s pairs.

    Column block ``t`` is ``diag(m_t / keep) W`` with ``m_t`` the consistent mask sample
    ``t`` that :func:`apply_noise` draws for the same seed (same RNG call and shape), so the
    folded layer computes the same values as dropout followed by the Dense layer, up to
    float32 rounding.
    """
    out = []
    for dropout, _, dense in pairs:
        keep_prob = 1.0 - float(dropout.rate)
        layer_seed = noise_seed(seed, layer_index[id(dropout)], consistent=True)
        features_shape = [int(d) for d in dropout.input.shape[1:]]
        keep = bernoulli_mask(tf.constant([num_samples, 1, *features_shape], tf.int32),
                              layer_seed, keep_prob)
        scale = tf.reshape(tf.cast(keep, tf.float32), [num_samples, -1]) / keep_prob
        kernel = tf.transpose(scale)[:, :, None] * tf.convert_to_tensor(dense.kernel)[:, None, :]
        out.append((dropout, dense, tf.reshape(kernel, [tf.shape(kernel)[0], -1])))
    return out


def _folded_dense(dense, x, kernel, num_samples):
    """``dense`` with a folded ``[features, T * units]`` kernel: ``[batch, features]`` ->
    ``[T * batch, units]`` (T-major, as the unfolded path)."""
    units = int(dense.units)
    y = tf.reshape(tf.matmul(x, kernel), [-1, num_samples, units])
    y = tf.reshape(tf.transpose(y, [1, 0, 2]), [-1, units])
    if dense.use_bias:
        y = y + dense.bias
    return dense.activation(y) if dense.activation is not None else y


def _consumed_only_by_noise(graph):
    """Per input of functional ``graph``: True if every layer reading it is stochastic.

    The noise layers read the input itself (no Keras op converts it in between), so it
    can be passed untiled to :func:`run_with_noise`.
    """
    readers = _readers(graph)
    flags = []
    for tensor in graph.inputs:
        ops = [op for op, _ in readers.get(id(tensor), [])]
        flags.append(bool(ops) and all(isinstance(op, STOCHASTIC_LAYER_TYPES) for op in ops))
    return flags


def _readers(graph):
    """``{id(tensor): [(op, node), ...]}``: the layer calls of ``graph``'s operations that
    read each tensor (nodes of the same layers in other models included)."""
    readers = {}
    for op in graph.operations:
        for node in op._inbound_nodes:
            for tensor in node.input_tensors:
                readers.setdefault(id(tensor), []).append((op, node))
    return readers


def _max_activation_size(graph, num_samples, folds=()):
    """Largest activation per pool point of running ``graph`` on T-tiled inputs, in values:
    T x its size, except the tensors a fold keeps untiled (the input and output of its
    dropout and flatten, the input of its dense), which count once."""
    untiled_ops = {id(op) for fold in folds for op in fold[:2] if op is not None}
    folded_dense = {id(fold[2]) for fold in folds}
    sizes = [num_samples]
    for op in graph.operations:
        for node in op._inbound_nodes:
            for tensor, is_input in ([(t, False) for t in node.output_tensors]
                                     + [(t, True) for t in node.input_tensors]):
                dims = tensor.shape[1:]
                if all(d is not None for d in dims):
                    size = int(np.prod(dims)) if dims else 1
                    kept_untiled = id(op) in untiled_ops or (is_input and id(op) in folded_dense)
                    sizes.append(size if kept_untiled else num_samples * size)
    return max(sizes)


def layer_flops(layer):
    """Analytic FLOPs per example of one Conv/Dense layer (2 x multiply-accumulates).

    Conv: ``2 * prod(output spatial) * prod(kernel shape)``; Dense:
    ``2 * prod(output leading dims) * prod(kernel shape)``; other layers count 0.
    """
    if isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D,
                          keras.layers.Conv3D)):
        positions = int(np.prod(layer.output.shape[1:-1])) if len(layer.output.shape) > 2 else 1
        return 2 * positions * int(np.prod(layer.kernel.shape))
    return 0


def model_flops(model):
    """Per-example Conv/Dense FLOPs of a functional model (sum of ``layer_flops``)."""
    if model is None:
        return 0
    return sum(layer_flops(op) for op in model.operations)


class MCDropoutPredictor(Predictor):
    """T-sample MC-dropout predictions of a functional model, compiled and chunked.

    Args:
        model: functional keras.Model mapping ``[batch, *input_shape]`` to logits
            ``[batch, classes]``.
        num_samples: T, the number of dropout samples (>= 1). A model without
            stochastic layers is deterministic and uses a single pass (T = 1).
        consistent_masks: use the same T masks for every pool point.
        seed: int or pair of ints; the stateless base seed (override per call).
        chunk_size: pool points per chunk; default from ``memory_budget_mb``.
        split: run the trunk once and the suffix T times (True) or the whole model on
            the T-tiled input (False, the unsplit reference).
        memory_budget_mb: target size of the largest per-chunk activation, in MiB.
        strategy: a ``tf.distribute.Strategy`` to shard the chunks across its replicas
            (model built under its scope), or None for one device.

    The deterministic passes of :class:`~ddu_tf.inference.Predictor` (``logits``,
    ``features_and_logits``, ...) are available too, with the same ``chunk_size``.
    """

    def __init__(self, model, num_samples=100, *, consistent_masks=False, seed=0,
                 chunk_size=None, split=True, memory_budget_mb=256, strategy=None):
        if int(num_samples) < 1:
            raise ValueError(f"Expected num_samples >= 1. Received: num_samples={num_samples}")
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"Expected chunk_size >= 1. Received: chunk_size={chunk_size}")
        trunk, suffix, stochastic_layers = split_at_first_stochastic(model)
        self.trunk, self.suffix, self.stochastic_layers = trunk, suffix, stochastic_layers
        self.num_samples = int(num_samples) if self.stochastic_layers else 1
        self.consistent_masks = bool(consistent_masks)
        self.split = bool(split)
        self.seed = self._seed_tensor(seed)
        self._layer_index = {id(layer): k for k, layer in enumerate(self.stochastic_layers)}
        # Trunk outputs read only by stochastic layers go to the suffix untiled: the noise
        # broadcasts them against its T masks (one fewer [T * chunk, ...] copy).
        self._untiled = (_consumed_only_by_noise(self.suffix) if self.suffix is not None
                         else [])
        # Consistent masks on a Dropout -> [Flatten ->] Dense: folded into the kernel.
        self._folds = (plan_folds(self.suffix, self.stochastic_layers, self._untiled,
                                  self.num_samples, memory_budget_mb)
                       if self.consistent_masks and self.split else [])
        noisy_graph = self.suffix if (self.split and self.suffix is not None) else model
        if chunk_size is None:
            per_point = _max_activation_size(noisy_graph, self.num_samples, self._folds) * 4 * 2
            chunk_size = max(1, min(1024, (memory_budget_mb << 20) // per_point))
        super().__init__(model, chunk_size=int(chunk_size), strategy=strategy)
        self._compiled = {}

    @staticmethod
    def _seed_tensor(seed):
        seed = np.atleast_1d(np.asarray(seed, dtype=np.int64))
        if seed.shape == (1,):
            seed = np.array([0, seed[0]], dtype=np.int64)
        if seed.shape != (2,):
            raise ValueError(f"Expected seed as an int or two ints. Received: seed={seed}")
        return tf.constant(seed, tf.int64)

    def flops(self, num_points):
        """Conv/Dense FLOPs of scoring ``num_points``: trunk once + suffix T times."""
        if not self.stochastic_layers:
            return num_points * model_flops(self.model)
        if self.split:
            return num_points * (model_flops(self.trunk)
                                 + self.num_samples * model_flops(self.suffix))
        return num_points * self.num_samples * model_flops(self.model)

    def _chunk_log_probs(self, xb, seed, chunk_index, folded=()):
        """``[chunk, ...]`` inputs -> ``[T, chunk, classes]`` log-softmax (``folded``: the
        :func:`fold_kernels` of this call)."""
        t = self.num_samples
        if not self.stochastic_layers:
            logits = self.model(xb, training=False)
            return tf.nn.log_softmax(tf.cast(logits, tf.float32))[None]

        def tile(h):
            tiled = tf.broadcast_to(h[None], tf.concat([[t], tf.shape(h)], axis=0))
            return tf.reshape(tiled, tf.concat([[-1], tf.shape(h)[1:]], axis=0))

        if self.split:
            trunk_out = self.trunk(xb, training=False)
            flat = trunk_out if isinstance(trunk_out, (list, tuple)) else [trunk_out]
            logits = run_with_noise(
                self.suffix, [h if only_noise else tile(h)
                              for h, only_noise in zip(flat, self._untiled)],
                t, seed, self.consistent_masks, self._layer_index, chunk_index,
                untiled=self._untiled, folded=folded)
        else:
            logits = run_with_noise(self.model, tile(xb), t, seed, self.consistent_masks,
                                    self._layer_index, chunk_index)
        logits = tf.reshape(tf.cast(logits, tf.float32),
                            tf.concat([[t, -1], tf.shape(logits)[1:]], axis=0))
        return tf.nn.log_softmax(logits)

    def reduce_in_graph(self, x, reduce_fn, seed, first_chunk=0):
        """Graph-mode core of :meth:`reduce` (usable inside ``tf.function`` / ``strategy.run``).

        Args:
            x: ``[n, *input_shape]`` inputs, processed in chunks of ``chunk_size`` by one
                ``tf.map_fn`` (padding the last chunk).
            reduce_fn: ``[T, chunk, C] -> [chunk, ...]``.
            seed: ``[2]`` int64 stateless seed.
            first_chunk: index of ``x``'s first chunk in the whole pool; chunk ``k`` uses the
                dropout masks of pool chunk ``first_chunk + k``, so a shard of the pool gets
                exactly the masks it would get on one device.

        Returns:
            ``[n, ...]`` float32.
        """
        # the folded kernels depend on the seed only: built once, outside the chunk loop
        folded = fold_kernels(self._folds, self.num_samples, seed, self._layer_index)
        return chunked_map(tf.cast(x, tf.float32),
                           lambda xb, index: reduce_fn(
                               self._chunk_log_probs(xb, seed, index, folded)),
                           self.chunk_size, first_chunk)

    def reduce(self, x, reduce_fn, seed=None):
        """Apply ``reduce_fn`` (``[T, chunk, C] -> [chunk, ...]``) over the whole pool.

        Args:
            x: ``[N, *input_shape]`` float inputs.
            reduce_fn: e.g. an acquisition function (``bald``) or ``log_mean_prob``.
            seed: optional stateless seed overriding the constructor's.

        Returns:
            ``[N, ...]`` float32 tensor (the same on one device and sharded).
        """
        seed = self.seed if seed is None else self._seed_tensor(seed)
        if self.sharded:
            step = self._shard_step(("mc", reduce_fn), lambda p, xb, s: self.reduce_in_graph(
                xb, reduce_fn, s, self._first_chunk(p)))
            return tf.constant(sharded_map(self.strategy, lambda p, b: step(p, b, seed),
                                           np.asarray(x, np.float32), self.chunk_size))
        if reduce_fn not in self._compiled:
            self._compiled[reduce_fn] = tf.function(
                lambda x, seed: self.reduce_in_graph(x, reduce_fn, seed),
                input_signature=[self._input_spec, tf.TensorSpec([2], tf.int64)])
        return self._compiled[reduce_fn](tf.convert_to_tensor(x, tf.float32), seed)

    def log_probs(self, x, seed=None):
        """All MC log-softmax outputs, ``[N, ...] -> [T, N, classes]``."""
        return tf.transpose(self.reduce(x, _point_major, seed), [1, 0, 2])

    def mean_log_probs(self, x, seed=None):
        """Log of the MC-averaged predictive, ``[N, ...] -> [N, classes]``."""
        return self.reduce(x, log_mean_prob, seed)


def _point_major(log_probs):
    """``[T, chunk, C] -> [chunk, T, C]`` so chunks concatenate along the pool axis."""
    return tf.transpose(log_probs, [1, 0, 2])
