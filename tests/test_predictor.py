"""ddu_tf.inference.Predictor and fit_gmm against direct Keras calls and the in-memory GMM fit.

The sharded path runs here under the default strategy (one replica, the same code as on
several); ``tests/test_distribute.py`` runs it with 2 replicas and 2 workers.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from ddu_tf.density import ClassConditionalGaussians
from ddu_tf.inference import (Predictor, as_predictor, ensemble_log_probs, fit_gmm,
                              gmm_scores)
from ddu_tf.inference.predictor import chunked_map, sharded_map


def _model(seed=0, dim_in=6, classes=3):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((dim_in,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    features = keras.layers.Dense(5, activation="tanh", name="features")(hidden)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(features))


def _data(n=37, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32), np.arange(n) % 3


@pytest.mark.parametrize("sharded", [False, True])
def test_logits_and_features_equal_direct_calls_for_any_chunk(sharded):
    model = _model()
    x, _ = _data()
    features_model = keras.Model(model.inputs[0], model.get_layer("features").output)
    strategy = tf.distribute.get_strategy() if sharded else None
    for chunk in (1, 5, 37, 100):
        predictor = Predictor(model, chunk_size=chunk, strategy=strategy)
        assert predictor.sharded == sharded
        np.testing.assert_allclose(predictor.logits(x), model(x).numpy(), rtol=1e-6, atol=1e-6)
        features, logits = predictor.features_and_logits(x)
        assert features.shape == (37, 5) and features.dtype == np.float32
        np.testing.assert_allclose(features, features_model(x).numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(logits, predictor.logits(x))


@pytest.mark.parametrize("sharded", [False, True])
def test_dataset_passes_keep_order_and_labels(sharded):
    model = _model(1)
    x, y = _data(50)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    predictor = Predictor(model, chunk_size=16,
                          strategy=tf.distribute.get_strategy() if sharded else None)
    logits, labels = predictor.dataset_logits(ds)
    assert logits.dtype == np.float64 and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(logits, model(x).numpy(), rtol=1e-6, atol=1e-6)
    features, logits2, labels2 = predictor.dataset_features_and_logits(ds)
    assert features.shape == (50, 5)
    np.testing.assert_array_equal(logits2, logits)
    np.testing.assert_array_equal(labels2, y)


def test_chunked_map_pads_and_numbers_the_chunks():
    x = tf.reshape(tf.range(7, dtype=tf.float32), [7, 1])
    out = chunked_map(x, lambda xb, k: xb[:, 0] * 0 + tf.cast(k, tf.float32), chunk=3,
                      first_chunk=4)
    np.testing.assert_array_equal(out.numpy(), [4, 4, 4, 5, 5, 5, 6])


@pytest.mark.parametrize("sharded", [False, True])
def test_fit_gmm_from_arrays_and_streamed_dataset_equal_in_memory_fit(sharded):
    model = _model(2)
    x, y = _data(70, seed=4)
    strategy = tf.distribute.get_strategy() if sharded else None
    predictor = Predictor(model, chunk_size=16, strategy=strategy)
    features = np.asarray(predictor.features_and_logits(x)[0], np.float64)
    oracle = ClassConditionalGaussians.fit(features, y, num_classes=3)
    from_arrays = fit_gmm(predictor, (x, y), 3)
    streamed = fit_gmm(predictor, tf.data.Dataset.from_tensor_slices((x, y)).batch(16), 3)
    for gmm in (from_arrays, streamed):
        np.testing.assert_allclose(gmm.class_log_densities(features).numpy(),
                                   oracle.class_log_densities(features).numpy(), rtol=1e-9)
    with pytest.raises(ValueError, match="at least one batch"):
        fit_gmm(Predictor(model), tf.data.Dataset.from_tensor_slices((x, y)).take(0).batch(4), 3)


def test_gmm_scores_equal_scipy_on_arrays_and_datasets():
    """log q(z) = logsumexp_c log N(z; mu_c, Sigma_c + eps I) (the unweighted mixture) and the
    softmax entropy, against scipy; arrays and a batched dataset give the same scores."""
    from scipy.special import logsumexp, softmax
    from scipy.stats import entropy, multivariate_normal

    model = _model(5)
    x, y = _data(60, seed=6)
    predictor = Predictor(model, chunk_size=16)
    gmm = fit_gmm(predictor, (x, y), 3)
    features, logits = (np.asarray(a, np.float64) for a in predictor.features_and_logits(x[:20]))
    covariances = gmm.covariances.numpy() + gmm.jitter * np.eye(gmm.dim)
    oracle = logsumexp([multivariate_normal(m, c).logpdf(features)
                        for m, c in zip(gmm.means.numpy(), covariances)], axis=0)
    from_arrays = gmm_scores(predictor, gmm, (x[:20], y[:20]))
    from_dataset = gmm_scores(model, gmm, tf.data.Dataset.from_tensor_slices(
        (x[:20], y[:20])).batch(7))
    for scores in (from_arrays, from_dataset):
        # The features are float32: other batch sizes may round them differently (oneDNN picks
        # kernels by shape; seen on an AVX2-only CPU), moving log q(z) by ~1e-6 nats; a wrong
        # density formula is off by O(1).
        np.testing.assert_allclose(scores["log_density"], oracle, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(scores["entropy"], entropy(softmax(logits, axis=1), axis=1),
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(scores["logits"], logits, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(scores["labels"], y[:20])
        assert scores["log_density"].dtype == scores["entropy"].dtype == np.float64


def test_ensemble_log_probs_is_the_log_mean_softmax():
    models = [_model(seed) for seed in (3, 4)]
    x, _ = _data(11)
    logits = np.stack([m(x).numpy() for m in models]).astype(np.float64)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.exp(ensemble_log_probs(models, x)), probs.mean(0), rtol=1e-6)
    single = ensemble_log_probs([Predictor(models[0])], x)
    np.testing.assert_allclose(np.exp(single), probs[0], rtol=1e-6)


def test_errors_name_the_argument():
    model = _model()
    with pytest.raises(ValueError, match="chunk_size"):
        Predictor(model, chunk_size=0)
    with pytest.raises(ValueError, match="non-empty"):
        Predictor(model).logits(np.zeros((0, 6), np.float32))
    with pytest.raises(ValueError, match="keras.Model or a Predictor"):
        as_predictor("model")
    with pytest.raises(ValueError, match="features"):
        Predictor(keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
                  ).features_and_logits(_data()[0])


@pytest.mark.parametrize("n,batch_size", [(1, 4), (10, 4), (12, 4)])
def test_chunked_inference_equals_one_direct_pass(n, batch_size):
    """The compiled, chunked inference pass (pool scoring) equals calling the model directly,
    for sizes that are and are not multiples of the chunk (moved from test_models.py)."""
    from ddu_tf.models import features_and_logits, get_model

    model = get_model("resnet1d", spectral_normalization=True, mod=True)
    x = np.random.default_rng(n).normal(size=(n, 40)).astype("float32")
    predictor = Predictor(model, chunk_size=batch_size)
    features, logits = predictor.features_and_logits(x)
    direct_features, direct_logits = features_and_logits(model)(x, training=False)
    np.testing.assert_allclose(features, direct_features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, direct_logits, rtol=1e-5, atol=1e-6)
    only_logits = predictor.logits(x)
    np.testing.assert_allclose(only_logits, direct_logits, rtol=1e-5, atol=1e-6)


def test_sharded_map_rejects_ragged_and_empty_inputs():
    predictor = Predictor(_model(), chunk_size=4, strategy=tf.distribute.get_strategy())
    step = predictor._shard_step("check", lambda p, b: b[0])
    x, y = _data(9)
    with pytest.raises(ValueError, match="one common N"):
        sharded_map(predictor.strategy, step, (x, y[:3]), 4)
    with pytest.raises(ValueError, match="non-empty"):
        sharded_map(predictor.strategy, step, (x[:0], y[:0]), 4)
    out = sharded_map(predictor.strategy, step, (x, y), 4)  # a nest reaches the replicas
    np.testing.assert_array_equal(out, x)
