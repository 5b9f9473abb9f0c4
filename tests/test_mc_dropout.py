"""MC-dropout predictor: split == unsplit with the same masks, moments, seeds, FLOPs."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from ddu_tf.active_learning.acquisition import bald
from ddu_tf.inference.mc_dropout import (MCDropoutPredictor, apply_noise, bernoulli_mask,
                                         model_flops, plan_folds, split_at_first_stochastic)
from ddu_tf.models.bayesian_cnn import bayesian_cnn


def _branchy_model():
    """conv -> dropout -> BN, plus a skip that bypasses the dropout: a 2-tensor frontier."""
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, activation="relu")(inputs)
    skip = keras.layers.Flatten()(h)
    d = keras.layers.SpatialDropout2D(0.3)(h)
    d = keras.layers.BatchNormalization()(d)
    d = keras.layers.Flatten()(d)
    d = keras.layers.GaussianDropout(0.2)(keras.layers.Dense(5, activation="relu")(d))
    out = keras.layers.Dense(4)(keras.layers.Concatenate()([d, skip]))
    model = keras.Model(inputs, out)
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)][0]
    bn.moving_mean.assign(np.full(3, 0.2, np.float32))
    bn.moving_variance.assign(np.full(3, 2.0, np.float32))
    return model


def _x(n, shape=(6, 6, 1), seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def test_split_bayesian_cnn_shares_weights_and_reproduces_model():
    model = bayesian_cnn()
    trunk, suffix, stochastic = split_at_first_stochastic(model)
    assert [layer.name for layer in stochastic] == ["dropout1", "dropout2"]
    assert tuple(trunk.output.shape) == (None, 11, 11, 32)
    assert suffix.get_layer("features") is model.get_layer("features")
    x = _x(3, (28, 28, 1))
    np.testing.assert_allclose(suffix(trunk(x)), model(x), atol=1e-5)


def test_split_equals_full_pass_with_same_consistent_masks():
    keras.utils.set_random_seed(0)
    model = _branchy_model()
    x = _x(13)
    kwargs = dict(num_samples=7, consistent_masks=True, seed=5)
    predictor = MCDropoutPredictor(model, chunk_size=4, **kwargs)
    # the frontier is the conv output (read only by the spatial dropout: passed untiled and
    # broadcast against the masks) and the skip (read by Concatenate: tiled)
    assert sorted(predictor._untiled) == [False, True]
    split = predictor.log_probs(x).numpy()
    full = MCDropoutPredictor(model, chunk_size=13, split=False, **kwargs).log_probs(x).numpy()
    assert split.shape == (7, 13, 4)
    np.testing.assert_allclose(split, full, atol=1e-5)
    # per-example masks (not consistent), same chunking: still identical noise
    kwargs["consistent_masks"] = False
    split = MCDropoutPredictor(model, chunk_size=5, **kwargs).log_probs(x).numpy()
    full = MCDropoutPredictor(model, chunk_size=5, split=False, **kwargs).log_probs(x).numpy()
    np.testing.assert_allclose(split, full, atol=1e-5)


def _sum_model(dim, rate):
    inputs = keras.Input((dim,))
    h = keras.layers.Dropout(rate)(inputs)
    out = keras.layers.Dense(2, use_bias=False)(h)
    model = keras.Model(inputs, out)
    kernel = np.zeros((dim, 2), np.float32)
    kernel[:, 0] = 1.0
    model.layers[-1].kernel.assign(kernel)
    return model


def _first_logit(log_probs):
    return (log_probs[..., 0] - log_probs[..., 1]).numpy()  # logit_0 - logit_1 = logit_0


def test_consistent_masks_are_shared_across_points_and_chunks():
    model = _sum_model(dim=8, rate=0.5)
    x = np.ones((10, 8), np.float32)
    y = _first_logit(MCDropoutPredictor(model, 6, consistent_masks=True, seed=1,
                                        chunk_size=3).log_probs(x))
    np.testing.assert_allclose(y, np.repeat(y[:, :1], 10, axis=1), atol=1e-4)
    assert np.all(np.isin(np.round(y, 3), 2.0 * np.arange(9)))  # sum(mask) / keep
    y = _first_logit(MCDropoutPredictor(model, 6, seed=1, chunk_size=3).log_probs(x))
    assert np.unique(np.round(y, 3)).size > 1 and not np.allclose(y, y[:, :1])


def _conv_dropout_dense(extra_reader=False):
    """conv -> pool -> dropout -> flatten -> dense -> dropout -> dense (the Bayesian CNN's
    layout, small); ``extra_reader``: the dropout output is read by a second branch too."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.MaxPooling2D(2)(h)
    d = keras.layers.Dropout(0.25)(h)
    f = keras.layers.Dense(6, activation="relu")(keras.layers.Flatten()(d))
    f = keras.layers.Dropout(0.5)(f)
    if extra_reader:
        f = keras.layers.Concatenate()([f, keras.layers.GlobalAveragePooling2D()(d)])
    return keras.Model(inputs, keras.layers.Dense(3)(f))


def test_consistent_dropout_folded_into_dense_kernel_equals_masked_activations():
    # x @ (diag(m_t / keep) W) == (x * m_t / keep) @ W with the same masks: the folded split
    # path against the unsplit path, which tiles the input and applies the masks.
    keras.utils.set_random_seed(2)
    model = _conv_dropout_dense()
    x = _x(11, (8, 8, 1))
    folded = MCDropoutPredictor(model, 9, consistent_masks=True, seed=4, chunk_size=4)
    assert [(d.name, f.name, dense.name) for d, f, dense in folded._folds] == [
        (model.layers[3].name, model.layers[4].name, model.layers[5].name)]
    full = MCDropoutPredictor(model, 9, consistent_masks=True, seed=4, split=False,
                              chunk_size=11)
    assert full._folds == []
    np.testing.assert_allclose(folded.log_probs(x), full.log_probs(x), atol=1e-5)
    # the folded path is on by default for consistent masks and sizes its chunks without the
    # T-tiled [T * chunk, 36] activations it no longer stores
    default = MCDropoutPredictor(model, 9, consistent_masks=True, seed=4)
    assert default.chunk_size == 1024 and len(default._folds) == 1
    np.testing.assert_allclose(default.reduce(x, bald), full.reduce(x, bald), atol=1e-5)


def test_fold_only_where_it_is_exact_and_fits():
    model = _conv_dropout_dense()
    assert MCDropoutPredictor(model, 5)._folds == []  # per-example masks: nothing to fold
    trunk, suffix, layers = split_at_first_stochastic(model)
    predictor = MCDropoutPredictor(model, 5, consistent_masks=True)
    assert len(plan_folds(suffix, layers, predictor._untiled, 5, 1)) == 1
    # the folded kernel (T x 36 x 6 float32) over the memory budget: not folded
    assert plan_folds(suffix, layers, predictor._untiled, 10 ** 6, 1) == []
    # a dropout read by two layers cannot be folded into one of them
    branchy = _conv_dropout_dense(extra_reader=True)
    assert MCDropoutPredictor(branchy, 5, consistent_masks=True)._folds == []
    # SpatialDropout2D (masks whole channels): left to apply_noise
    assert MCDropoutPredictor(_branchy_model(), 5, consistent_masks=True)._folds == []


def test_dropout_moments_match_analytic_values():
    # y = sum_j x_j m_j / keep with m_j ~ Bernoulli(keep): E[y] = sum x, Var = rate/keep sum x^2
    rate, x = 0.25, np.array([[0.5, -1.0, 2.0, 1.5, 0.1]], np.float32)
    model = _sum_model(dim=5, rate=rate)
    y = _first_logit(MCDropoutPredictor(model, 20000, seed=3).log_probs(x))[:, 0]
    keep = 1.0 - rate
    np.testing.assert_allclose(y.mean(), x.sum(), atol=0.05)
    np.testing.assert_allclose(y.var(), rate / keep * np.sum(x ** 2), rtol=0.05)
    # Keras' own training-mode dropout has the same moments (distributional equality).
    keras_y = np.stack([model(np.repeat(x, 4000, 0), training=True).numpy()[:, 0]
                        for _ in range(2)]).ravel()
    np.testing.assert_allclose(keras_y.var(), y.var(), rtol=0.1)


def test_seeds_reproducible_and_deterministic_twin():
    keras.utils.set_random_seed(1)
    model = _branchy_model()
    x = _x(5)
    a = MCDropoutPredictor(model, 4, seed=2).reduce(x, bald).numpy()
    np.testing.assert_array_equal(a, MCDropoutPredictor(model, 4, seed=2).reduce(x, bald))
    assert not np.allclose(a, MCDropoutPredictor(model, 4, seed=3).reduce(x, bald))
    assert np.all(a > 0)  # dropout active although Keras' training flag was never set
    twin = bayesian_cnn(dropout=False)
    x = _x(4, (28, 28, 1))
    predictor = MCDropoutPredictor(twin, num_samples=50)
    assert predictor.num_samples == 1
    np.testing.assert_allclose(np.exp(predictor.mean_log_probs(x)),
                               keras.ops.softmax(twin(x)), atol=1e-5)


def test_spatial_dropout_drops_whole_channels():
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.SpatialDropout2D(0.5)(inputs))
    _, _, layers = split_at_first_stochastic(model)
    x = tf.ones((2 * 3, 4, 4, 3))  # T=2, batch=3
    out = apply_noise(layers[0], x, 2, tf.constant([0, 7], tf.int64), False).numpy()
    per_channel = out.reshape(6, 16, 3)
    assert np.all(per_channel.min(axis=1) == per_channel.max(axis=1))
    assert set(np.unique(out)) <= {0.0, 2.0}


def test_flops_hand_computed_for_bayesian_cnn():
    model = bayesian_cnn()
    trunk, suffix, _ = split_at_first_stochastic(model)
    conv1 = 2 * 25 * 25 * (4 * 4 * 1 * 32)
    conv2 = 2 * 22 * 22 * (4 * 4 * 32 * 32)
    dense = 2 * 3872 * 128 + 2 * 128 * 10
    assert model_flops(trunk) == conv1 + conv2
    assert model_flops(suffix) == dense
    predictor = MCDropoutPredictor(model, 100)
    assert predictor.flops(2000) == 2000 * (conv1 + conv2 + 100 * dense)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="num_samples"):
        MCDropoutPredictor(bayesian_cnn(), 0)
    with pytest.raises(ValueError, match="seed"):
        MCDropoutPredictor(bayesian_cnn(), 2, seed=(1, 2, 3))
    with pytest.raises(ValueError, match="functional"):
        split_at_first_stochastic(keras.Sequential([keras.layers.Dense(2)]))


@pytest.mark.parametrize("keep_prob", [0.75, 0.5, 0.7])
def test_bernoulli_mask_frequency_and_reproducibility(keep_prob):
    # 0.75 / 0.5 use one random byte per element (exact: 192/256, 128/256); 0.7 uses floats.
    shape = tf.constant([7, 11, 13])  # 1001 elements: not a multiple of 4 bytes
    seed = tf.constant([3, 4], tf.int64)
    masks = np.stack([bernoulli_mask(shape, seed + k, keep_prob).numpy() for k in range(200)])
    assert masks.shape == (200, 7, 11, 13) and masks.dtype == bool
    n = masks.size
    assert abs(masks.mean() - keep_prob) < 5 * np.sqrt(keep_prob * (1 - keep_prob) / n)
    np.testing.assert_array_equal(bernoulli_mask(shape, seed, keep_prob).numpy(), masks[0])
    # Elements are not correlated with their neighbours (bytes of one word are independent).
    flat = masks.reshape(200, -1).astype(float)
    lag1 = np.corrcoef(flat[:, :-1].ravel(), flat[:, 1:].ravel())[0, 1]
    assert abs(lag1) < 0.02
