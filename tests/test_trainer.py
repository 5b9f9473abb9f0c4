"""CompiledTrainer against Keras' own ``model.fit`` and its reset / reproducibility contract."""
import keras
import numpy as np
import pytest

from ddu_tf.active_learning import CompiledTrainer


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
