"""ddu_tf.training.FeatureDensityMonitor on a tiny MLP and separable synthetic data: History,
TensorBoard events and the values against an independent numpy / scipy / sklearn oracle."""
import glob

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats
from sklearn.metrics import roc_auc_score

from ddu_tf import training

CLASSES, DIM = 3, 6


def _data(rng, n, centre_scale=4.0, offset=0.0):
    labels = np.arange(n) % CLASSES
    centres = centre_scale * np.eye(CLASSES, DIM)
    x = centres[labels] + rng.normal(size=(n, DIM)) + offset
    return x.astype(np.float32), labels.astype(np.int64)


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((DIM,))
    h = keras.layers.Dense(16, activation="relu")(inputs)
    features = keras.layers.Dense(8, name="features")(h)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(features))
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _oracle(model, train, in_x, ood_x):
    """The five monitored values, recomputed without ddu_tf (Keras forward, numpy GMM)."""
    net = keras.Model(model.input, [model.get_layer("features").output, model.output])

    def forward(x):
        f, logits = net(x, training=False)
        return np.asarray(f, np.float64), np.asarray(logits, np.float64)

    f_train, _ = forward(train[0])
    means = np.stack([f_train[train[1] == c].mean(0) for c in range(CLASSES)])
    covs = np.stack([np.cov(f_train[train[1] == c].T) for c in range(CLASSES)])

    def scores(x):
        f, logits = forward(x)
        density = special.logsumexp(np.stack([stats.multivariate_normal(m, c).logpdf(f)
                                              for m, c in zip(means, covs)], 1), axis=1)
        return density, stats.entropy(special.softmax(logits, axis=1), axis=1)

    (d_in, e_in), (d_ood, e_ood) = scores(in_x), scores(ood_x)
    is_ood = np.r_[np.zeros(len(in_x)), np.ones(len(ood_x))]
    within = np.mean([np.trace(c) for c in covs])
    between = np.sum((means - means.mean(0)) ** 2) / CLASSES
    return {"density_auroc": roc_auc_score(is_ood, -np.r_[d_in, d_ood]),
            "entropy_auroc": roc_auc_score(is_ood, np.r_[e_in, e_ood]),
            "within_class_std": np.sqrt(within / 8), "between_class_std": np.sqrt(between / 8),
            "within_between_ratio": within / between}


def test_monitor_logs_history_and_tensorboard_matching_an_independent_oracle(tmp_path):
    rng = np.random.default_rng(0)
    train = _data(rng, 300)
    held_out = _data(rng, 90)
    ood = _data(rng, 60, centre_scale=0.0, offset=-3.0)  # one blob away from every class
    model = _model()
    monitor = training.FeatureDensityMonitor(
        train, held_out, tf.data.Dataset.from_tensor_slices(ood).batch(25), CLASSES, every=2,
        log_dir=str(tmp_path / "tb"), chunk_size=64)
    history = model.fit(*train, epochs=4, batch_size=50, callbacks=[monitor], verbose=0)

    assert monitor.epochs == [1, 3]
    for key in monitor.LOG_KEYS:
        values = history.history[key]
        assert len(values) == 2 and np.all(np.isfinite(values)), key
    for key in ("density_auroc", "entropy_auroc"):
        assert all(0.0 <= v <= 1.0 for v in history.history[key])
    # The last monitored epoch is the last one: the final weights are the ones it measured.
    expected = _oracle(model, train, held_out[0], ood[0])
    for key, value in expected.items():
        assert history.history[key][-1] == pytest.approx(value, rel=1e-6), key

    events = {}
    for path in glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                events.setdefault(v.tag, {})[event.step] = float(tf.make_ndarray(v.tensor))
    assert set(events) == {f"feature_density/{key}" for key in monitor.LOG_KEYS}
    for key in monitor.LOG_KEYS:
        logged = events[f"feature_density/{key}"]
        assert sorted(logged) == [1, 3]
        np.testing.assert_allclose([logged[1], logged[3]], history.history[key], rtol=1e-6)
    assert monitor.get_config() == {"num_classes": CLASSES, "every": 2,
                                    "log_dir": str(tmp_path / "tb"), "chunk_size": 64}


def test_monitor_argument_errors():
    with pytest.raises(ValueError, match="Expected every >= 1"):
        training.FeatureDensityMonitor(None, None, None, 3, every=0)
    with pytest.raises(ValueError, match="Expected num_classes >= 2"):
        training.FeatureDensityMonitor(None, None, None, 1)
