"""CompiledTrainer against Keras' own ``model.fit`` and a per-batch loop, its samplers, its
reset / reproducibility contract and the best-epoch selection."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from ddu_tf.active_learning import (CompiledTrainer, FixedLengthSampler, PermutationSampler,
                                    fit_best_on_validation, fixed_length_indices)
from ddu_tf.active_learning.trainer import reinitialize
from ddu_tf.training import TorchAdam


def _mlp(dropout=0.0, decay=None):
    regularizer = keras.regularizers.L2(decay) if decay else None
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu", kernel_regularizer=regularizer,
                           name="hidden")(inputs)
    if dropout:
        x = keras.layers.Dropout(dropout, name="drop")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)


def test_full_batch_training_equals_keras_fit():
    # One batch per epoch: the example order cannot matter, so the compiled loop must take
    # the same Adam steps as model.fit with an L2 regulariser on the named layer only.
    x, y = _data()
    trainer = CompiledTrainer(_mlp, epochs=3, batch_size=16, learning_rate=0.01,
                              decay_layers=["hidden"])
    trainer.fit(x, y, seed=5, weight_decay=0.1)
    keras.utils.set_random_seed(5)
    oracle = _mlp(decay=0.1)
    oracle.compile(optimizer=keras.optimizers.Adam(0.01),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    oracle.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    for ours, theirs in zip(trainer.model.get_weights(), oracle.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_fit_resets_weights_optimizer_and_noise():
    x, y = _data(40)
    trainer = CompiledTrainer(lambda: _mlp(dropout=0.5), epochs=4, batch_size=8)
    first = trainer.fit(x, y, seed=1)
    weights = trainer.model.get_weights()
    assert trainer.fit(x, y, seed=1) == first  # same seed: same init, masks, batch order
    for a, b in zip(weights, trainer.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    trainer.fit(x, y, seed=2)
    assert not np.array_equal(weights[0], trainer.model.get_weights()[0])
    # initialize=False continues from the current weights instead of a fresh draw.
    trainer.fit(x, y, seed=1)
    trainer.fit(x, y, seed=1, initialize=False)
    assert not np.array_equal(weights[0], trainer.model.get_weights()[0])


def test_minibatch_training_fits_a_separable_problem():
    x, y = _data(60, seed=3)
    trainer = CompiledTrainer(_mlp, epochs=150, batch_size=16, learning_rate=0.03)
    loss = trainer.fit(x, y, seed=0)
    accuracy = np.mean(trainer.model.predict(x, verbose=0).argmax(-1) == y)
    assert loss < 0.2 and accuracy >= 0.95


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="decay_layers"):
        CompiledTrainer(_mlp, epochs=1, decay_layers=["conv9"])
    with pytest.raises(ValueError, match="epochs"):
        CompiledTrainer(_mlp, epochs=0)
    trainer = CompiledTrainer(_mlp, epochs=1)
    x, y = _data()
    with pytest.raises(ValueError, match="labels"):
        trainer.fit(x, y[:-1], seed=0)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        trainer.fit(x, y, seed=0)


@pytest.mark.parametrize("weight_decay", [-1e-3, float("nan")])
def test_a_negative_or_nan_weight_decay_is_refused_before_any_change(weight_decay):
    x, y = _data()
    trainer = CompiledTrainer(_mlp, epochs=1, decay_layers=["hidden"])
    trainer.fit(x, y, seed=0)
    weights = trainer.model.get_weights()
    orders = trainer.sampler(len(x), 1, 0)
    for call in (lambda: trainer.fit(x, y, seed=1, weight_decay=weight_decay),
                 lambda: trainer.train_epochs(x, y, orders, weight_decay)):
        with pytest.raises(ValueError, match="Expected weight_decay >= 0"):
            call()
        for before, after in zip(weights, trainer.model.get_weights()):
            np.testing.assert_array_equal(before, after)  # fit did not reset first


# ----------------------------------------------------------------------------- samplers
def test_permutation_sampler_draws_one_seeded_permutation_per_epoch():
    orders = PermutationSampler()(13, 4, seed=3)
    assert orders.shape == (4, 13) and orders.dtype == np.int64
    for row in orders:
        np.testing.assert_array_equal(np.sort(row), np.arange(13))
    assert len({tuple(row) for row in orders}) == 4
    np.testing.assert_array_equal(orders, PermutationSampler()(13, 4, seed=3))
    assert not np.array_equal(orders, PermutationSampler()(13, 4, seed=4))


def test_fixed_length_indices_balance_repeats():
    # (moved from test_ddu_active_learning.py with the sampler)
    idx = fixed_length_indices(7, 100, np.random.default_rng(0))
    counts = np.bincount(idx, minlength=7)
    assert idx.size == 100 and counts.min() >= 100 // 7 and counts.max() <= 100 // 7 + 1
    np.testing.assert_array_equal(np.sort(fixed_length_indices(
        10, 4, np.random.default_rng(0))), np.arange(10))


def test_fixed_length_sampler_balances_repeats_per_epoch():
    orders = FixedLengthSampler(100)(7, 3, seed=[1, 2])
    assert orders.shape == (3, 100)
    for row in orders:
        # A permutation of 105 = 15 x 7 draws cut to 100: each example 10..15 times.
        counts = np.bincount(row, minlength=7)
        assert counts.sum() == 100 and counts.max() <= 15 and counts.min() >= 15 - 5
    # Epochs are consecutive draws of one generator seeded once.
    rng = np.random.default_rng([1, 2])
    np.testing.assert_array_equal(orders, [fixed_length_indices(7, 100, rng) for _ in range(3)])
    # Fewer draws than examples: a plain permutation of all of them.
    np.testing.assert_array_equal(np.sort(FixedLengthSampler(4)(10, 1, seed=0)[0]), np.arange(10))
    with pytest.raises(ValueError, match="length"):
        FixedLengthSampler(0)


# ----------------------------------------------------------------------------- DDU recipe
def _sn_bn_net():
    """A small conv net with soft SN and BatchNorm (the kernels whose rounding depends on
    static vs dynamic batch shapes) and a "features" layer."""
    from ddu_tf.models import blocks

    inputs = keras.Input((6, 6, 1))
    x = blocks.conv(inputs, 4, 3, 1, spectral_normalization=True, coeff=1.0, name="conv")
    x = blocks.activation(blocks.batch_norm(x, name="bn"), mod=True, name="act")
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(features))


def _per_batch_loop(model_fn, x, y, orders, batch, seed):
    """The oracle: one compiled optimiser step per batch, fed from NumPy (how DDU active
    learning trained before the trainer existed): TorchAdam with coupled decay, Keras'
    cross-entropy, full batches traced with their static shape, the last one dynamic."""
    model = model_fn()
    optimizer = TorchAdam(1e-2, coupled_weight_decay=5e-4)
    optimizer.build(model.trainable_variables)
    reinitialize(model, model_fn, seed)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(loss_fn(yb, model(xb, training=True))) / tf.cast(
                tf.shape(xb)[0], tf.float32)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    static = tf.function(step)
    dynamic = tf.function(step, input_signature=[
        tf.TensorSpec([None, *x.shape[1:]], tf.float32), tf.TensorSpec([None], tf.int64)])
    for order in orders:
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            (static if len(idx) == batch else dynamic)(tf.constant(x[idx]), tf.constant(y[idx]))
    return model.get_weights()


@pytest.mark.parametrize("length", [24, 26])  # all batches full / a smaller last batch
def test_compiled_epochs_equal_a_per_batch_loop_exactly(length):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10, 6, 6, 1)).astype(np.float32)
    y = np.arange(10) % 3
    trainer = CompiledTrainer(_sn_bn_net, epochs=2, batch_size=8,
                              optimizer=lambda: TorchAdam(1e-2, coupled_weight_decay=5e-4),
                              sampler=FixedLengthSampler(length))
    trainer.fit(x, y, seed=11, sampler_seed=[5, 0])
    orders = FixedLengthSampler(length)(10, 2, seed=[5, 0])
    expected = _per_batch_loop(_sn_bn_net, x, y, orders, 8, seed=11)
    for ours, theirs, variable in zip(trainer.model.get_weights(), expected,
                                      trainer.model.weights):
        np.testing.assert_array_equal(ours, theirs, err_msg=variable.path)


def test_fit_best_on_validation_keeps_the_best_ensemble_epoch():
    x, y = _data(40, seed=5)
    val_x, val_y = _data(30, seed=6)
    make = lambda: CompiledTrainer(_mlp, epochs=5, batch_size=8,  # noqa: E731
                                   sampler=FixedLengthSampler(16))
    trainers = [make(), make()]
    best = fit_best_on_validation(trainers, x, y, (val_x, val_y), seeds=[1, 2],
                                  sampler_seeds=[[3, 0], [3, 1]], chunk_size=7)
    # Oracle: the same epochs one at a time, the ensemble accuracy measured by hand.
    twins = [make(), make()]
    for twin, seed in zip(twins, (1, 2)):
        twin.reset(seed)
    orders = [twin.sampler(40, 5, s) for twin, s in zip(twins, ([3, 0], [3, 1]))]
    accuracies, weights = [], []
    for epoch in range(5):
        for twin, order in zip(twins, orders):
            twin.train_epochs(x, y, order[epoch:epoch + 1])
        probs = np.mean([keras.ops.softmax(t.model(val_x)).numpy() for t in twins], axis=0)
        accuracies.append(np.mean(probs.argmax(-1) == val_y))
        weights.append([t.model.get_weights() for t in twins])
    chosen = int(np.argmax(accuracies))  # the first best epoch
    assert best == pytest.approx(accuracies[chosen])
    for trainer, twin_weights in zip(trainers, weights[chosen]):
        for ours, theirs in zip(trainer.model.get_weights(), twin_weights):
            np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ValueError, match="seed"):
        fit_best_on_validation(trainers, x, y, (val_x, val_y), seeds=[1], sampler_seeds=[1, 2])


def test_optimizer_and_orders_are_checked():
    with pytest.raises(ValueError, match="optimizer"):
        CompiledTrainer(_mlp, epochs=1, optimizer=keras.optimizers.Adam())
    with pytest.raises(ValueError, match="keras.optimizers.Optimizer"):
        CompiledTrainer(_mlp, epochs=1, optimizer=lambda: "adam")
    trainer = CompiledTrainer(_mlp, epochs=1)
    x, y = _data()
    with pytest.raises(ValueError, match="orders"):
        trainer.train_epochs(x, y, np.array([[0, 99]]))


def _conv_dropout_net():
    """A small Bayesian-CNN-like net: conv, max-pool, dropout, dense, dropout, logits."""
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Dropout(0.25, name="dropout1")(keras.layers.MaxPooling2D()(x))
    x = keras.layers.Dense(8, activation="relu", name="features")(keras.layers.Flatten()(x))
    x = keras.layers.Dropout(0.5, name="dropout2")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def test_permutation_epochs_equal_the_in_graph_recipe_of_the_bayesian_runs():
    """The Gal et al. runs (bayesian_al.py) were trained by one tf.function drawing each
    epoch's permutation in the graph and slicing batches with dynamic shapes; the trainer
    (host-drawn orders, static full batches) must take exactly the same steps."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(13, 6, 6, 1)).astype(np.float32)
    y = np.arange(13) % 3
    trainer = CompiledTrainer(_conv_dropout_net, epochs=3, batch_size=4,
                              decay_layers=["features"])
    trainer.fit(x, y, seed=9, weight_decay=0.01)

    model = _conv_dropout_net()
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    reinitialize(model, _conv_dropout_net, 9)
    kernel = model.get_layer("features").kernel

    @tf.function
    def recipe(x, y, seed):
        n = tf.shape(x)[0]
        steps = (n + 3) // 4
        for epoch in tf.range(3):
            order = tf.argsort(tf.random.stateless_uniform(
                [n], tf.random.experimental.stateless_fold_in(seed, epoch)))
            for step in tf.range(steps):
                idx = order[step * 4:tf.minimum((step + 1) * 4, n)]
                with tf.GradientTape() as tape:
                    logits = model(tf.gather(x, idx), training=True)
                    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                        labels=tf.gather(y, idx), logits=logits))
                    loss += 0.01 * tf.reduce_sum(tf.square(kernel))
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply(grads, model.trainable_variables)

    recipe(tf.constant(x), tf.constant(y, tf.int64), tf.constant([9, 0x5EED], tf.int64))
    for ours, theirs, variable in zip(trainer.model.get_weights(), model.get_weights(),
                                      model.weights):
        np.testing.assert_array_equal(ours, theirs, err_msg=variable.path)
