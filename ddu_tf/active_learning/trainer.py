"""Re-initialise and train a classifier for a whole active-learning round in one compiled call.

An active-learning run trains the same architecture ~100 times on a few hundred points
(Gal et al. 2017: re-initialised every round, Adam, 50 epochs, batch 128). With
``model.fit`` each round builds a new model, so every round pays a new trace of the train
step (~1 s) and of the MC-dropout scoring functions, plus Keras' per-epoch overhead
(~30 ms x 50 epochs). :class:`CompiledTrainer` keeps ONE model and ONE optimizer for the
whole run: :meth:`CompiledTrainer.fit` resets them to a fresh seeded initialisation and runs
all epochs and steps inside one ``tf.function`` (a ``tf.while_loop`` with stateless
per-epoch shuffles), so nothing is traced again after the first round and scoring functions
built on ``trainer.model`` (e.g. an ``MCDropoutPredictor``) stay valid across rounds.

Example:
    >>> trainer = CompiledTrainer(lambda: bayesian_cnn(), epochs=50,
    ...                           decay_layers=["features"])
    >>> loss = trainer.fit(x_labelled, y_labelled, seed=7, weight_decay=3.5 / 20)
    >>> predictor = MCDropoutPredictor(trainer.model, 100)   # reuse every round
"""
import keras
import numpy as np
import tensorflow as tf


def reinitialize(model, model_fn, seed, initialize=True):
    """Give ``model`` the initial state of ``model_fn()`` built after
    ``keras.utils.set_random_seed(seed)``, in place (compiled functions stay valid).

    Copies all weights (trainable and not, e.g. spectral-norm vectors) unless
    ``initialize`` is False, and always the dropout layers' seed-generator states, so
    training noise depends on ``seed`` only, not on earlier rounds.
    """
    keras.utils.set_random_seed(int(seed))
    fresh = model_fn()
    if initialize:
        model.set_weights(fresh.get_weights())
    for mine, theirs in zip(model.layers, fresh.layers):
        if hasattr(mine, "seed_generator") and hasattr(theirs, "seed_generator"):
            mine.seed_generator.state.assign(theirs.seed_generator.state)


class CompiledTrainer:
    """Seeded re-initialisation + compiled multi-epoch training of a Keras classifier.

    Loss per step: mean sparse softmax cross-entropy of the logits, plus
    ``weight_decay * sum(kernel ** 2)`` over the kernels of ``decay_layers`` (Keras'
    ``l2(weight_decay)``), plus any ``model.losses``. Optimizer: Keras ``Adam``.
    Batches: a stateless permutation per epoch, the last batch smaller when ``batch_size``
    does not divide ``n`` (as ``model.fit``).

    Args:
        model_fn: zero-argument callable building the (uncompiled) functional model
            ``[batch, *input_shape] -> [batch, classes]`` logits. Called once here and once
            per :meth:`fit` (under ``keras.utils.set_random_seed(seed)``) to draw the
            initial weights, which equal those of ``model_fn()`` built after that seed.
        epochs: passes over the labelled set per :meth:`fit` (>= 1).
        batch_size: examples per step (>= 1).
        learning_rate: Adam step size.
        decay_layers: names of the layers whose ``kernel`` gets the L2 penalty.
    """

    def __init__(self, model_fn, *, epochs, batch_size=128, learning_rate=1e-3,
                 decay_layers=()):
        if int(epochs) < 1 or int(batch_size) < 1:
            raise ValueError("Expected epochs >= 1 and batch_size >= 1. Received: "
                             f"epochs={epochs}, batch_size={batch_size}")
        self.model_fn = model_fn
        self.model = model_fn()
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        names = [layer.name for layer in self.model.layers]
        missing = sorted(set(decay_layers) - set(names))
        if missing:
            raise ValueError(f"decay_layers {missing} are not layers of {self.model.name!r}. "
                             f"Received: decay_layers={list(decay_layers)}; layers: {names}")
        self._decay_kernels = [self.model.get_layer(name).kernel for name in decay_layers]
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self.model.trainable_variables)
        self._initial_optimizer = [v.numpy() for v in self.optimizer.variables]
        input_spec = tf.TensorSpec([None, *self.model.inputs[0].shape[1:]], tf.float32)
        self._fit = tf.function(self._fit_graph, input_signature=[
            input_spec, tf.TensorSpec([None], tf.int64), tf.TensorSpec([2], tf.int64),
            tf.TensorSpec([], tf.float32)])

    def reset(self, seed, initialize=True):
        """``reinitialize(model, model_fn, seed, initialize)`` and the optimizer's initial
        state (zero Adam moments and step count)."""
        reinitialize(self.model, self.model_fn, seed, initialize)
        for variable, value in zip(self.optimizer.variables, self._initial_optimizer):
            variable.assign(value)

    def fit(self, x, y, *, seed, weight_decay=0.0, initialize=True):
        """Re-initialise (``reset(seed)``) and train ``epochs`` epochs on ``(x, y)``.

        Args:
            x: ``[n, *input_shape]`` float inputs, n >= 1.
            y: ``[n]`` integer labels in ``[0, classes)``.
            seed: int; the initial weights, dropout noise and batch order derive from it.
            weight_decay: L2 coefficient of the ``decay_layers`` kernels (>= 0).
            initialize: draw fresh weights (True) or continue from the current ones
                (the optimizer state is reset either way).

        Returns:
            Mean training loss (cross-entropy + penalties) over the last epoch's steps
            (float, nats).
        """
        x = np.asarray(x, np.float32)
        y = np.asarray(y, np.int64).reshape(-1)
        if len(x) < 1 or len(x) != len(y):
            raise ValueError("Expected as many labels as inputs, at least one. Received: "
                             f"{len(x)} inputs and {len(y)} labels.")
        if not np.isfinite(x).all():
            raise ValueError("The training inputs contain NaN or inf values.")
        if weight_decay < 0:
            raise ValueError(f"Expected weight_decay >= 0. Received: {weight_decay}")
        self.reset(seed, initialize)
        seed_pair = tf.constant([int(seed), 0x5EED], tf.int64)
        return float(self._fit(x, y, seed_pair, tf.constant(weight_decay, tf.float32)))

    def _step(self, xb, yb, weight_decay):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(xb, training=True), tf.float32)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits))
            for kernel in self._decay_kernels:
                loss += weight_decay * tf.reduce_sum(tf.square(tf.cast(kernel, tf.float32)))
            for extra in self.model.losses:
                loss += tf.cast(extra, tf.float32)
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    def _fit_graph(self, x, y, seed, weight_decay):
        n = tf.shape(x)[0]
        batch = self.batch_size
        steps = (n + batch - 1) // batch
        epoch_loss = tf.constant(0.0)
        for epoch in tf.range(self.epochs):
            order = tf.argsort(tf.random.stateless_uniform(
                [n], tf.random.experimental.stateless_fold_in(seed, epoch)))
            total = tf.constant(0.0)
            for step in tf.range(steps):
                idx = order[step * batch:tf.minimum((step + 1) * batch, n)]
                total += self._step(tf.gather(x, idx), tf.gather(y, idx), weight_decay)
            epoch_loss = total / tf.cast(steps, tf.float32)
        return epoch_loss
