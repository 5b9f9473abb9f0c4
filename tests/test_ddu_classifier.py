"""ddu_tf.ddu_classifier: DDU for a Keras classifier the package did not build (tiny models)."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats
from sklearn.neighbors import NearestNeighbors

import ddu_tf  # noqa: F401  (registers DDUClassifier / DensityScore for load_model)
from ddu_tf.ddu_classifier import DDUClassifier, fit_ddu
from ddu_tf.density import SharedGaussian

CLASSES = 3
KINDS = {"gmm": {}, "shared_gaussian": {}, "knn": {"k": 4}}


def _data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % CLASSES
    x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
    x[:, :, :, 0] += (y[:, None, None] - 1.0).astype(np.float32) * np.linspace(-1, 1, 8)
    return x, y.astype(np.int64)


def _dataset(x, y, batch=64):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _functional():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(6, 3, activation="relu")(inputs)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(h))


def _sequential():
    keras.utils.set_random_seed(2)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(5, activation="tanh", name="hidden"),
                             keras.layers.Dense(CLASSES)])


@keras.saving.register_keras_serializable(package="test_ddu_classifier")
class SubclassedNet(keras.Model):
    """A subclassed classifier with an ``embed`` method (no layer graph)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(5, activation="tanh")
        self.head = keras.layers.Dense(CLASSES)

    def embed(self, x):
        return self.hidden(self.flatten(x))

    def call(self, x, training=False):
        return self.head(self.embed(x))


def _feature_oracle(model, features, x):
    """Features by an independent route: a fresh sub-model or the method itself."""
    if isinstance(features, str) and features in [layer.name for layer in model.layers]:
        return keras.Model(model.inputs[0], model.get_layer(features).output)(x).numpy()
    return model.embed(x).numpy()


@pytest.mark.parametrize("build,features", [(_functional, "pool"), (_sequential, "hidden"),
                                            (SubclassedNet, "embed")])
def test_outputs_match_independent_computation(build, features):
    x, y = _data()
    model = build()
    ddu = fit_ddu(model, _dataset(x, y), features=features)
    out = ddu(x[:50])
    logits = model(x[:50]).numpy()
    np.testing.assert_allclose(out["logits"].numpy(), logits, rtol=1e-6)
    np.testing.assert_allclose(out["entropy"].numpy(),
                               stats.entropy(special.softmax(logits, axis=1), axis=1),
                               rtol=1e-5, atol=1e-6)
    train_features = _feature_oracle(model, features, x).astype(np.float64)
    test_features = train_features[:50]
    oracle = special.logsumexp([
        stats.multivariate_normal(train_features[y == c].mean(0),
                                  np.cov(train_features[y == c].T)).logpdf(test_features)
        for c in range(CLASSES)], axis=0)
    np.testing.assert_allclose(out["density"].numpy(), oracle, rtol=1e-6)


def test_shared_gaussian_and_knn_scores_match_the_detectors_and_sklearn():
    x, y = _data()
    model = _functional()
    z = keras.Model(model.inputs[0], model.get_layer("pool").output)(x).numpy().astype(np.float64)
    shared = fit_ddu(model, _dataset(x, y), features="pool", density="shared_gaussian")
    np.testing.assert_allclose(shared(x[:40])["density"].numpy(),
                               SharedGaussian.fit(z, y, CLASSES).score(z[:40]), rtol=1e-9)
    knn = fit_ddu(model, _dataset(x, y), features="pool", density="knn", k=4)
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    distances, _ = NearestNeighbors(n_neighbors=4).fit(unit).kneighbors(unit[:40])
    np.testing.assert_allclose(knn(x[:40])["density"].numpy(), -distances[:, -1], atol=1e-5)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("build,features", [(_functional, "pool"), (SubclassedNet, "embed")])
def test_keras_file_and_export_round_trips_give_identical_scores(tmp_path, kind, build,
                                                                   features):
    x, y = _data()
    model = build()
    ddu = fit_ddu(model, _dataset(x, y), features=features, density=kind, **KINDS[kind])
    eager_before = {k: v.numpy() for k, v in ddu(x[:30]).items()}
    compiled_before = ddu.predict(x[:30], verbose=0)
    path = str(tmp_path / "ddu.keras")
    ddu.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, DDUClassifier)
    assert loaded.density.trainable_weights == [] and loaded.density.non_trainable_weights
    eager_after = {k: v.numpy() for k, v in loaded(x[:30]).items()}
    compiled_after = loaded.predict(x[:30], verbose=0)
    loaded.export(str(tmp_path / "export"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "export"))  # keep: .serve uses its variables
    served = reloaded.serve(tf.constant(x[:30]))
    # Bitwise equal within one execution mode (eager vs compiled graphs may differ in the last
    # bits: graph optimisations and the matmul's thread split reorder sums; measured up to
    # 4e-6 relative on the float32 logits when the cores were busy).
    for key in ("logits", "entropy", "density"):
        np.testing.assert_array_equal(eager_after[key], eager_before[key])
        np.testing.assert_array_equal(compiled_after[key], compiled_before[key])
        np.testing.assert_array_equal(served[key].numpy(), compiled_before[key])
        # (the float64 entropy and density start from the float32 logits and features)
        np.testing.assert_allclose(eager_before[key], compiled_before[key], rtol=2e-5, atol=1e-6)


def test_bound_method_is_saved_by_name_and_other_functions_cannot_be_saved(tmp_path):
    x, y = _data()
    model = SubclassedNet()
    by_method = fit_ddu(model, _dataset(x, y), features=model.embed)
    assert by_method.get_config()["features"] == "embed"
    by_lambda = fit_ddu(model, _dataset(x, y), features=lambda t: model.embed(t))
    np.testing.assert_array_equal(by_lambda(x[:5])["density"], by_method(x[:5])["density"])
    with pytest.raises(ValueError, match="layer or method name"):
        by_lambda.save(str(tmp_path / "lambda.keras"))


def test_bad_arguments_are_clear_errors():
    x, y = _data()
    model = _functional()
    with pytest.raises(ValueError, match="name a layer"):
        fit_ddu(model, _dataset(x, y), features="nope")
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        fit_ddu(model, (x, y), features="pool")
    with pytest.raises(ValueError, match=r"\[batch, dim\]"):
        fit_ddu(model, _dataset(x, y), features=model.layers[1].name)  # the conv feature map
    with pytest.raises(ValueError, match="detector kind"):
        fit_ddu(model, _dataset(x, y), features="pool", density="mahalanobis")


def fit_under(strategy_name):
    """Scores of fit_ddu under ``strategy_name`` (for the two_replicas fixture)."""
    from ddu_tf import distribute

    strategy = distribute.get_strategy(strategy_name)
    x, y = _data()
    with strategy.scope():
        model = _functional()
    out = {"replicas": strategy.num_replicas_in_sync}
    for kind, options in KINDS.items():
        ddu = fit_ddu(model, _dataset(x, y, batch=32), features="pool", density=kind,
                      strategy=strategy, **options)
        out[kind] = ddu(x[:60])["density"].numpy().tolist()
    return out


def test_fit_with_two_replicas_matches_one_device(two_replicas):
    mirrored = two_replicas("test_ddu_classifier:fit_under", "mirrored")
    single = fit_under("default")
    assert mirrored["replicas"] == 2 and single["replicas"] == 1
    for kind in KINDS:
        np.testing.assert_allclose(mirrored[kind], single[kind], rtol=1e-9, atol=1e-6)
