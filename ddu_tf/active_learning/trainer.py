"""The one trainer of active-learning rounds: seeded reset in place + compiled epochs.

An active-learning run trains the same architecture ~100 times on a few hundred points
(Gal et al. 2017: re-initialised every round, Adam, 50 epochs, batch 128; DDU: Adam with
coupled weight decay, 20 epochs of a fixed-length sampler, the best epoch on validation).
With ``model.fit`` each round builds a new model, so every round pays a new trace of the
train step (~1 s) and of the scoring functions, plus Keras' per-epoch overhead (~30 ms x 50
epochs). :class:`CompiledTrainer` keeps ONE model and ONE optimiser for the whole run:
:meth:`CompiledTrainer.reset` gives them a fresh seeded initialisation in place (the one
"reset model and optimiser" of the package), and the epochs and steps run inside one
``tf.function`` (a ``tf.while_loop`` over batch orders drawn by a pluggable sampler), so
nothing is traced again after the first round and predictors built on ``trainer.model``
(e.g. an ``MCDropoutPredictor``) stay valid across rounds.

Pluggable pieces:

* optimiser: Keras ``Adam(learning_rate)`` by default (Gal et al.'s Keras code), or any
  ``keras.optimizers.Optimizer`` factory, e.g. ``lambda: TorchAdam(1e-3,
  coupled_weight_decay=5e-4)`` (``torch.optim.Adam(weight_decay=5e-4)`` of the DDU code);
* sampler: :class:`PermutationSampler` (one stateless permutation per epoch, ``model.fit``'s
  shuffle) or :class:`FixedLengthSampler` (DDU's ``RandomFixedLengthSampler``);
* strategy: a ``tf.distribute.Strategy``; the model and optimiser are built under its scope
  and every step splits its GLOBAL batch over the replicas (replica ``i`` of ``R`` takes rows
  ``[m i / R, m (i + 1) / R)``), each computes the gradient of
  ``sum_its_rows loss / m + penalties / R`` and the optimiser all-reduces (sums) them: the
  gradient of the batch-mean loss, as on one device (BatchNorm statistics are per replica).

:func:`fit_best_on_validation` trains one trainer, or an ensemble side by side, and keeps
the epoch with the best validation accuracy (DDU's ``active_learning_script.py``).

Example:
    >>> trainer = CompiledTrainer(lambda: bayesian_cnn(), epochs=50,
    ...                           decay_layers=["features"])
    >>> loss = trainer.fit(x_labelled, y_labelled, seed=7, weight_decay=3.5 / 20)
    >>> predictor = MCDropoutPredictor(trainer.model, 100)   # reuse every round
"""
import keras
import numpy as np
import tensorflow as tf

from ddu_tf import metrics
from ddu_tf.inference import Predictor, ensemble_log_probs
from ddu_tf.training import epoch_permutation


class PermutationSampler:
    """One random permutation of the ``n`` examples per epoch, from stateless RNG.

    Epoch ``e`` of seed ``s`` is ``argsort(stateless_uniform([n], fold_in((s, 0x5EED), e)))``;
    the last batch of an epoch is smaller when the batch size does not divide ``n`` (as
    ``model.fit``).
    """

    def __call__(self, n, epochs, seed):
        """``int64 [epochs, n]`` example orders for an int ``seed``
        (:func:`ddu_tf.training.epoch_permutation`, the order of ``experiments/train.py``)."""
        return np.stack([epoch_permutation(n, seed, epoch).numpy()
                         for epoch in range(int(epochs))]).astype(np.int64)


def fixed_length_indices(n: int, target_length: int, rng: np.random.Generator) -> np.ndarray:
    """One epoch of the original's ``RandomFixedLengthSampler``: ``int64 [max(target, n)]``.

    If ``target_length < n`` a plain permutation of ``n``; else a permutation of the next
    multiple of ``n`` at or above ``target_length`` (``ceil(target / n)`` copies of each
    sample), cut to ``target_length``, modulo ``n``: every sample appears at most
    ``ceil(target / n)`` times, and the cut removes fewer than ``n`` draws in all.
    """
    if n < 1 or target_length < 1:
        raise ValueError(f"Expected n >= 1 and target_length >= 1. Received: n={n}, "
                         f"target_length={target_length}")
    if target_length < n:
        return rng.permutation(n).astype(np.int64)
    padded = target_length + (-target_length % n)
    return (rng.permutation(padded)[:target_length] % n).astype(np.int64)


class FixedLengthSampler:
    """DDU's ``RandomFixedLengthSampler``: ``length`` draws per epoch (:func:`fixed_length_indices`).

    A few hundred labelled points then still give ``length / batch`` steps per epoch (DDU:
    5056 draws, 79 batches of 64). Epochs are drawn in turn from
    ``numpy.random.default_rng(seed)`` (``seed``: an int or a sequence of ints).
    """

    def __init__(self, length):
        if isinstance(length, bool) or int(length) != length or length < 1:
            raise ValueError(f"Expected length >= 1. Received: length={length!r}")
        self.length = int(length)

    def __call__(self, n, epochs, seed):
        """``int64 [epochs, max(length, n)]`` example orders."""
        rng = np.random.default_rng(seed)
        return np.stack([fixed_length_indices(n, self.length, rng) for _ in range(int(epochs))])


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

    Loss per step: mean sparse softmax cross-entropy of the logits over the (global) batch,
    plus ``weight_decay * sum(kernel ** 2)`` over the kernels of ``decay_layers`` (Keras'
    ``l2(weight_decay)``), plus any ``model.losses``.

    Args:
        model_fn: zero-argument callable building the (uncompiled) functional model
            ``[batch, *input_shape] -> [batch, classes]`` logits. Called once here (under
            the strategy's scope) and once per :meth:`reset` (under
            ``keras.utils.set_random_seed(seed)``) to draw the initial weights, which equal
            those of ``model_fn()`` built after that seed.
        epochs: passes of the sampler per :meth:`fit` (>= 1).
        batch_size: GLOBAL examples per step (>= 1), split over the replicas.
        learning_rate: step size of the default optimiser (Keras ``Adam``).
        optimizer: None (Keras ``Adam(learning_rate)``) or a zero-argument callable returning
            a ``keras.optimizers.Optimizer`` (called under the strategy's scope).
        decay_layers: names of the layers whose ``kernel`` gets the L2 penalty.
        sampler: ``sampler(n, epochs, seed) -> int64 [epochs, length]`` example orders;
            default :class:`PermutationSampler`.
        strategy: a ``tf.distribute.Strategy`` or None (one device).
    """

    def __init__(self, model_fn, *, epochs, batch_size=128, learning_rate=1e-3, optimizer=None,
                 decay_layers=(), sampler=None, strategy=None):
        if int(epochs) < 1 or int(batch_size) < 1:
            raise ValueError("Expected epochs >= 1 and batch_size >= 1. Received: "
                             f"epochs={epochs}, batch_size={batch_size}")
        if optimizer is not None and not callable(optimizer):
            raise ValueError("Expected optimizer to be None or a zero-argument callable "
                             f"returning a keras optimizer. Received: {optimizer!r}")
        self.model_fn = model_fn
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.sampler = sampler or PermutationSampler()
        self.strategy = strategy
        self._replicas = 1 if strategy is None else int(strategy.num_replicas_in_sync)
        with (strategy or tf.distribute.get_strategy()).scope():
            self.model = model_fn()
            self.optimizer = (keras.optimizers.Adam(learning_rate) if optimizer is None
                              else optimizer())
            if not isinstance(self.optimizer, keras.optimizers.Optimizer):
                raise ValueError("Expected optimizer() to return a keras.optimizers.Optimizer. "
                                 f"Received: {type(self.optimizer).__name__}")
            self.optimizer.build(self.model.trainable_variables)
        names = [layer.name for layer in self.model.layers]
        missing = sorted(set(decay_layers) - set(names))
        if missing:
            raise ValueError(f"decay_layers {missing} are not layers of {self.model.name!r}. "
                             f"Received: decay_layers={list(decay_layers)}; layers: {names}")
        self._decay_kernels = [self.model.get_layer(name).kernel for name in decay_layers]
        self._initial_optimizer = [v.numpy() for v in self.optimizer.variables]
        input_spec = tf.TensorSpec([None, *self.model.inputs[0].shape[1:]], tf.float32)
        self._train = tf.function(self._train_graph, input_signature=[
            input_spec, tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, None], tf.int64),
            tf.TensorSpec([], tf.float32)])

    def reset(self, seed, initialize=True):
        """``reinitialize(model, model_fn, seed, initialize)`` and the optimiser's initial
        state (zero moments and step count)."""
        reinitialize(self.model, self.model_fn, seed, initialize)
        for variable, value in zip(self.optimizer.variables, self._initial_optimizer):
            variable.assign(value)

    def train_epochs(self, x, y, orders, weight_decay=0.0):
        """Train on ``(x, y)`` along given example orders, without resetting (compiled).

        Args:
            x: ``[n, *input_shape]`` float inputs, n >= 1.
            y: ``[n]`` integer labels in ``[0, classes)``.
            orders: ``int64 [epochs, length]`` indices into ``x``, one row per epoch (from
                ``self.sampler``); each row is cut into batches of ``batch_size``.
            weight_decay: L2 coefficient of the ``decay_layers`` kernels (>= 0).

        Returns:
            Mean training loss (cross-entropy + penalties) over the last epoch's steps
            (float, nats).
        """
        x, y = self._check_data(x, y, weight_decay)
        orders = np.asarray(orders, np.int64)
        if orders.ndim != 2 or orders.size == 0 or orders.min() < 0 or orders.max() >= len(x):
            raise ValueError("Expected orders int64 [epochs, length] with indices in "
                             f"[0, {len(x)}). Received: shape {orders.shape}.")
        return float(self._train(x, y, orders, tf.constant(weight_decay, tf.float32)))

    def fit(self, x, y, *, seed, weight_decay=0.0, initialize=True, sampler_seed=None):
        """Re-initialise (``reset(seed)``) and train ``epochs`` epochs on ``(x, y)``.

        Args:
            x: ``[n, *input_shape]`` float inputs, n >= 1.
            y: ``[n]`` integer labels in ``[0, classes)``.
            seed: int; the initial weights and dropout noise derive from it.
            weight_decay: L2 coefficient of the ``decay_layers`` kernels (>= 0).
            initialize: draw fresh weights (True) or continue from the current ones
                (the optimiser state is reset either way).
            sampler_seed: seed of the batch orders (default ``seed``).

        Returns:
            Mean training loss (cross-entropy + penalties) over the last epoch's steps
            (float, nats).
        """
        x, y = self._check_data(x, y, weight_decay)
        self.reset(seed, initialize)
        orders = self.sampler(len(x), self.epochs, seed if sampler_seed is None else sampler_seed)
        return self.train_epochs(x, y, orders, weight_decay)

    @staticmethod
    def _check_data(x, y, weight_decay=0.0):
        """``(x float32 [n, ...], y int64 [n])`` after checking them and ``weight_decay >= 0``."""
        if not weight_decay >= 0:
            raise ValueError(f"Expected weight_decay >= 0. Received: {weight_decay}")
        x = np.asarray(x, np.float32)
        y = np.asarray(y, np.int64).reshape(-1)
        if len(x) < 1 or len(x) != len(y):
            raise ValueError("Expected as many labels as inputs, at least one. Received: "
                             f"{len(x)} inputs and {len(y)} labels.")
        if not np.isfinite(x).all():
            raise ValueError("The training inputs contain NaN or inf values.")
        return x, y

    def _replica_step(self, xb, yb, weight_decay):
        """One optimiser step on this replica's rows of the global batch ``xb``."""
        global_size = tf.shape(xb)[0]
        if self._replicas > 1:
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            lo = global_size * replica // self._replicas
            hi = global_size * (replica + 1) // self._replicas
            xb, yb = xb[lo:hi], yb[lo:hi]
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(xb, training=True), tf.float32)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=yb, logits=logits)) / tf.cast(global_size, tf.float32)
            penalties = [weight_decay * tf.reduce_sum(tf.square(tf.cast(kernel, tf.float32)))
                         for kernel in self._decay_kernels]
            penalties += [tf.cast(extra, tf.float32) for extra in self.model.losses]
            for penalty in penalties:  # counted once over the replicas' summed gradients
                loss += penalty if self._replicas == 1 else penalty / self._replicas
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    def _step(self, xb, yb, weight_decay):
        if self.strategy is None:
            return self._replica_step(xb, yb, weight_decay)
        losses = self.strategy.run(self._replica_step, args=(xb, yb, weight_decay))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    def _train_graph(self, x, y, orders, weight_decay):
        # Full batches have a static batch dimension (some kernels, e.g. BatchNorm's moments,
        # round differently with a dynamic one); the last, smaller batch of an epoch, if any,
        # has a dynamic one. The steps run in order: full batches, then the remainder.
        length = tf.shape(orders)[1]
        batch = self.batch_size
        full = length // batch
        steps = (length + batch - 1) // batch
        epoch_loss = tf.constant(0.0)
        for epoch in tf.range(tf.shape(orders)[0]):
            order = orders[epoch]
            batches = tf.reshape(order[:full * batch], [-1, batch])
            total = tf.constant(0.0)
            for step in tf.range(full):
                idx = batches[step]
                total += self._step(tf.gather(x, idx), tf.gather(y, idx), weight_decay)
            if full < steps:
                idx = order[full * batch:]
                total += self._step(tf.gather(x, idx), tf.gather(y, idx), weight_decay)
            epoch_loss = total / tf.cast(steps, tf.float32)
        return epoch_loss


def fit_best_on_validation(trainers, x, y, validation_data, *, seeds, sampler_seeds,
                           weight_decay=0.0, chunk_size=512):
    """Train one trainer or an ensemble side by side and keep the best validation epoch.

    Every trainer is reset (``reset(seeds[k])``); then for each of the ``epochs`` epochs,
    every trainer trains one epoch (orders from its sampler with ``sampler_seeds[k]``,
    drawn for all epochs at once), and the validation accuracy of the ensemble's mean
    softmax (:func:`ddu_tf.inference.ensemble_log_probs`) is measured. The weights of the
    first epoch with the best accuracy are restored at the end (DDU's
    ``active_learning_script.py``, whose intent -- the original keeps a reference to the model
    it goes on training, so it ends with the last epoch -- is what is done here).

    Args:
        trainers: sequence of :class:`CompiledTrainer` with equal ``epochs``.
        x, y: labelled training inputs ``[n, ...]`` and labels ``[n]``.
        validation_data: ``(x_val [n_val, ...], y_val [n_val])``.
        seeds: one reset seed per trainer.
        sampler_seeds: one sampler seed per trainer.
        weight_decay: L2 coefficient of the trainers' ``decay_layers`` kernels.
        chunk_size: rows per compiled chunk of the validation passes.

    Returns:
        The best validation accuracy, a fraction in [0, 1].
    """
    trainers = list(trainers)
    if not trainers or len(seeds) != len(trainers) or len(sampler_seeds) != len(trainers):
        raise ValueError("Expected at least one trainer and one seed and one sampler seed per "
                         f"trainer. Received: {len(trainers)} trainers, {len(seeds)} seeds, "
                         f"{len(sampler_seeds)} sampler seeds.")
    epochs = {trainer.epochs for trainer in trainers}
    if len(epochs) != 1:
        raise ValueError(f"Expected trainers with equal epochs. Received: {sorted(epochs)}")
    val_x, val_y = validation_data
    x, y = CompiledTrainer._check_data(x, y)
    for trainer, seed in zip(trainers, seeds):
        trainer.reset(seed)
    orders = [trainer.sampler(len(x), trainer.epochs, sampler_seed)
              for trainer, sampler_seed in zip(trainers, sampler_seeds)]
    predictors = [Predictor(trainer.model, chunk_size=chunk_size, strategy=trainer.strategy)
                  for trainer in trainers]
    best, best_weights = -1.0, None
    for epoch in range(epochs.pop()):
        for trainer, order in zip(trainers, orders):
            trainer.train_epochs(x, y, order[epoch:epoch + 1], weight_decay)
        accuracy = metrics.accuracy(val_y, ensemble_log_probs(predictors, val_x).argmax(-1))
        if accuracy > best:
            best, best_weights = accuracy, [trainer.model.get_weights() for trainer in trainers]
    for trainer, weights in zip(trainers, best_weights):
        trainer.model.set_weights(weights)
    return best


__all__ = ["CompiledTrainer", "FixedLengthSampler", "PermutationSampler",
           "fit_best_on_validation", "fixed_length_indices", "reinitialize"]
