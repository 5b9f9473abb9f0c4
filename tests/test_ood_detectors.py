"""experiments/ood_detectors.py on a tiny MNIST-1D model against sklearn / scipy oracles."""
import json

import keras
import numpy as np
import pytest
from scipy import special, stats
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.neighbors import NearestNeighbors

from ddu_tf.experiment_data import DATASETS, split_arrays, train_validation_arrays
from ddu_tf.models import get_model
from experiment_scripts import load_experiment_script


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ood_detectors")
    keras.utils.set_random_seed(0)
    model = get_model("mlp", num_classes=10, input_shape=(40,))
    (x, y), _ = train_validation_arrays(DATASETS["mnist1d"], seed=3, val_size=0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=100, verbose=0)
    path = str(tmp / "mlp.keras")
    model.save(path)
    out = tmp / "result.json"
    result = load_experiment_script("ood_detectors").main([
        "--dataset", "mnist1d", "--models", path, "--seeds", "3", "--knn-k", "5",
        "--output-json", str(out)])
    return model, (x, y), result, json.loads(out.read_text())


def test_scores_match_independent_oracles(run):
    model, (x_train, _), result, _ = run
    x_in, _ = split_arrays("mnist1d", "test")
    x_ood, _ = split_arrays("mnist1d/shuffled", "test")
    is_ood = np.r_[np.zeros(len(x_in)), np.ones(len(x_ood))]
    logits = model.predict(np.concatenate([x_in, x_ood]), verbose=0).astype(np.float64)
    entropy = stats.entropy(special.softmax(logits, axis=1), axis=1)
    energy = -special.logsumexp(logits, axis=1)
    features_model = keras.Model(model.inputs[0], model.get_layer("features").output)
    unit = lambda z: z / np.linalg.norm(z, axis=1, keepdims=True)  # noqa: E731
    bank = unit(features_model.predict(x_train, verbose=0).astype(np.float64))
    queries = unit(features_model.predict(np.concatenate([x_in, x_ood]), verbose=0)
                   .astype(np.float64))
    knn = -NearestNeighbors(n_neighbors=5).fit(bank).kneighbors(queries)[0][:, -1]
    mean = result["mean"]
    key = "mnist1d_vs_mnist1d_shuffled"
    assert mean[f"{key}/softmax_entropy_auroc"] == pytest.approx(
        roc_auc_score(is_ood, entropy), abs=2e-4)
    assert mean[f"{key}/energy_auroc"] == pytest.approx(roc_auc_score(is_ood, energy), abs=2e-4)
    assert mean[f"{key}/knn_auroc"] == pytest.approx(roc_auc_score(1 - is_ood, knn), abs=2e-4)
    # FPR@95 of the kNN score: sklearn's ROC (in-distribution positive) at TPR >= 0.95.
    fpr, tpr, _ = roc_curve(1 - is_ood, knn)
    assert mean[f"{key}/knn_fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=2e-3)


def test_json_has_every_score_and_metric(run):
    _, (x_train, _), result, stored = run
    assert stored["mean"] == result["mean"]
    expected = {f"mnist1d_vs_mnist1d_shuffled/{s}_{m}"
                for s in ("softmax_entropy", "energy", "gmm", "shared_gaussian", "knn")
                for m in ("auroc", "auprc", "fpr95")}
    assert set(stored["mean"]) == expected
    assert all(0.0 <= v <= 1.0 for v in stored["mean"].values())
    assert stored["runs"][0]["fit_examples"] == len(x_train) == 3600
    assert stored["sizes"] == {"mnist1d": 1000, "mnist1d_shuffled": 1000}
    assert "| gmm |" in stored["table"]


def test_mismatched_seeds_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="one --seeds value per model"):
        load_experiment_script("ood_detectors").main([
            "--dataset", "mnist1d", "--models", "a.keras", "b.keras", "--seeds", "0",
            "--output-json", str(tmp_path / "x.json")])
