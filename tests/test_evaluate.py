"""ddu_tf.evaluation on synthetic arrays, and experiments/evaluate.py,
experiments/plot_uncertainty.py and experiments/train.py -> evaluate.py end to end on tiny
models."""
import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special
from sklearn.metrics import average_precision_score, roc_auc_score

from ddu_tf import calibration, evaluation, plotting
from ddu_tf.density import ClassConditionalGaussians
from ddu_tf.inference import Predictor, fit_gmm
from experiment_scripts import load_experiment_script


def _entropy(logits):
    logp = logits - special.logsumexp(logits, axis=1, keepdims=True)
    return -(np.exp(logp) * logp).sum(axis=1)


def _synthetic_logits(rng, n=120, classes=4, scale=3.0):
    labels = rng.integers(0, classes, size=n)
    logits = scale * (rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels])
    return logits, labels


def test_softmax_metrics_match_direct_computation():
    rng = np.random.default_rng(0)
    test_logits, test_labels = _synthetic_logits(rng)
    ood_logits = rng.normal(size=(80, 4))
    val_logits, val_labels = _synthetic_logits(rng)
    out = evaluation.softmax_metrics(test_logits, test_labels, ood_logits, val_logits, val_labels)
    assert set(evaluation.METRIC_KEYS) <= set(out)
    assert out["accuracy"] == np.mean(test_logits.argmax(1) == test_labels)
    is_id = np.r_[np.ones(120), np.zeros(80)]
    lse = np.r_[special.logsumexp(test_logits, axis=1), special.logsumexp(ood_logits, axis=1)]
    ent = np.r_[_entropy(test_logits), _entropy(ood_logits)]
    assert out["m1_auroc"] == pytest.approx(roc_auc_score(is_id, lse))
    assert out["m1_auprc"] == pytest.approx(average_precision_score(is_id, lse))
    assert out["m2_auroc"] == pytest.approx(roc_auc_score(1 - is_id, ent))
    assert out["m2_auprc"] == pytest.approx(average_precision_score(1 - is_id, ent))
    t = calibration.fit_temperature(val_logits, val_labels)
    assert out["temperature"] == t
    t_lse = np.r_[special.logsumexp(test_logits / t, axis=1), special.logsumexp(ood_logits / t, axis=1)]
    assert out["t_m1_auprc"] == pytest.approx(average_precision_score(is_id, t_lse))


def test_gmm_metrics_use_gmm_scores_and_skip_temperature_for_them():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(90, 3)) + 4.0 * np.eye(3)[np.arange(90) % 3]
    gmm = ClassConditionalGaussians.fit(features, np.arange(90) % 3, num_classes=3)
    test_logits, test_labels = _synthetic_logits(rng, n=30, classes=3)
    val_logits, val_labels = _synthetic_logits(rng, n=30, classes=3)
    test_ld = gmm.class_log_densities(features[:30]).numpy()
    ood_ld = gmm.class_log_densities(rng.normal(size=(20, 3)) * 6.0).numpy()
    out = evaluation.gmm_metrics(test_logits, test_labels, test_ld, ood_ld, val_logits, val_labels)
    is_id = np.r_[np.ones(30), np.zeros(20)]
    density = np.r_[special.logsumexp(test_ld, axis=1), special.logsumexp(ood_ld, axis=1)]
    assert out["m1_auroc"] == pytest.approx(roc_auc_score(is_id, density))
    ent = np.r_[_entropy(test_ld), _entropy(ood_ld)]
    assert out["m2_auroc"] == pytest.approx(roc_auc_score(1 - is_id, ent))
    for key in ("m1_auroc", "m1_auprc", "m2_auroc", "m2_auprc"):
        assert out["t_" + key] == out[key]
    assert out["ece"] == evaluation.softmax_metrics(
        test_logits, test_labels, rng.normal(size=(5, 3)), val_logits, val_labels)["ece"]


def test_ensemble_metrics_m1_is_mi_and_m2_is_pe():
    rng = np.random.default_rng(2)
    members = np.stack([_synthetic_logits(np.random.default_rng(3), n=50)[0]
                        + rng.normal(size=(50, 4)) for _ in range(3)])
    labels = _synthetic_logits(np.random.default_rng(3), n=50)[1]
    ood = rng.normal(scale=4.0, size=(3, 40, 4))
    val = [_synthetic_logits(np.random.default_rng(10 + m))[0] for m in range(3)]
    val_labels = [_synthetic_logits(np.random.default_rng(10 + m))[1] for m in range(3)]
    out = evaluation.ensemble_metrics(members, labels, ood, val, val_labels)

    def pe_mi(logits):
        p = special.softmax(logits, axis=-1)
        pbar = p.mean(0)
        pe = -(pbar * np.log(pbar)).sum(-1)
        return pe, pe - (-(p * np.log(p)).sum(-1)).mean(0)

    pe_in, mi_in = pe_mi(members)
    pe_ood, mi_ood = pe_mi(ood)
    is_ood = np.r_[np.zeros(50), np.ones(40)]
    assert out["m1_auroc"] == pytest.approx(roc_auc_score(is_ood, np.r_[mi_in, mi_ood]))
    assert out["m2_auprc"] == pytest.approx(average_precision_score(is_ood, np.r_[pe_in, pe_ood]))
    pbar = special.softmax(members, axis=-1).mean(0)
    assert out["accuracy"] == np.mean(pbar.argmax(1) == labels)
    assert len(out["temperature"]) == 3
    with pytest.raises(ValueError, match="one validation set per ensemble member"):
        evaluation.ensemble_metrics(members, labels, ood, val[:2], val_labels[:2])


def test_summarize_standard_error():
    runs = [{key: v for key in evaluation.METRIC_KEYS} for v in (0.9, 0.8, 0.7)]
    out = evaluation.summarize(runs)
    assert out["mean"]["accuracy"] == pytest.approx(0.8)
    assert out["std"]["ece"] == pytest.approx(0.1 / np.sqrt(3))  # std(ddof=1) = 0.1
    assert out["values"]["t_m2_auprc"] == [0.9, 0.8, 0.7]
    assert evaluation.summarize(runs[:1])["std"]["accuracy"] is None


def _tiny_model(seed, dim_in=6, classes=3):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((dim_in,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    features = keras.layers.Dense(5, activation="tanh", name="features")(hidden)
    logits = keras.layers.Dense(classes, name="logits")(features)
    return keras.Model(inputs, logits)


def test_extraction_and_streamed_gmm_fit():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(70, 6)).astype(np.float32)
    y = np.arange(70) % 3
    model = _tiny_model(0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    features, logits, labels = Predictor(model).dataset_features_and_logits(ds)
    assert features.dtype == np.float64 and features.shape == (70, 5)
    np.testing.assert_allclose(logits, model(x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, y)
    streamed = fit_gmm(model, ds, num_classes=3)
    in_memory = ClassConditionalGaussians.fit(features, labels, num_classes=3)
    np.testing.assert_allclose(streamed.class_log_densities(features).numpy(),
                               in_memory.class_log_densities(features).numpy(), rtol=1e-9)


# ------------------------------------------------------------------ the CLI, end to end
def _register_synthetic(module):
    """Two synthetic data sets as ddu_tf.data sources and DATASETS entries; returns an undo."""
    from ddu_tf import data as ddu_data

    rng = np.random.default_rng(5)
    centres = 3.0 * rng.normal(size=(3, 6))
    arrays = {}
    for split, n in (("train", 150), ("test", 60)):
        labels = np.arange(n) % 3
        arrays[("synth_id", split)] = ((centres[labels] + rng.normal(size=(n, 6))).astype(np.float32),
                                       labels.astype(np.int64))
        arrays[("synth_ood", split)] = ((8.0 * rng.normal(size=(n, 6))).astype(np.float32),
                                        labels.astype(np.int64))
    for name in ("synth_id", "synth_ood"):
        ddu_data.register_source(name, lambda split, data_dir=None, name=name: arrays[(name, split)],
                                 overwrite=True)
        module.DATASETS[name] = module.DATASETS["mnist1d"].__class__(name, 3, (6,))

    def undo():
        for name in ("synth_id", "synth_ood"):
            ddu_data.unregister_source(name)
            module.DATASETS.pop(name)
    return undo


@pytest.fixture
def cli():
    """evaluate.py with two synthetic data sets registered as ddu_tf.data sources."""
    module = load_experiment_script("evaluate")
    undo = _register_synthetic(module)
    yield module
    undo()


def _save_models(path, seeds, epoch=350):
    from ddu_tf.training import checkpoint_name

    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        _tiny_model(seed).save(path / checkpoint_name("mlp", False, False, 3.0, seed, epoch))


@pytest.mark.parametrize("model_type,runs,ensemble", [("softmax", 2, 5), ("gmm", 2, 5), ("ensemble", 1, 2)])
def test_cli_end_to_end(cli, tmp_path, model_type, runs, ensemble):
    _save_models(tmp_path, seeds=[1, 2])
    result = cli.main([
        "--seed", "1", "--dataset", "synth_id", "--ood_dataset", "synth_ood", "--model", "mlp",
        "--model-type", model_type, "--runs", str(runs), "--ensemble", str(ensemble),
        "--load-path", str(tmp_path), "--output-dir", str(tmp_path), "-b", "32",
    ])
    path = tmp_path / f"res_mlp_1_{model_type}_synth_id_synth_ood.json"
    stored = json.loads(path.read_text())
    assert set(stored) == {"mean", "std", "values", "info"}
    extra = {"test/nll", "test/brier", "ood/m1_fpr95", "ood/m2_fpr95"}
    for part in ("mean", "std", "values"):
        assert set(stored[part]) == set(evaluation.METRIC_KEYS) | extra
    assert stored["info"]["model_type"] == model_type
    assert all(len(v) == runs for v in stored["values"].values())
    assert all(0.0 <= m <= 1.0 for k, m in stored["mean"].items() if k != "test/nll")
    assert 0.0 <= stored["mean"]["test/brier"] <= 2.0 and stored["mean"]["test/nll"] >= 0.0
    assert result["mean"] == stored["mean"]


def test_cli_missing_model_is_a_clear_error(cli, tmp_path):
    with pytest.raises(ValueError, match="Expected a model saved by experiments/train.py"):
        cli.main(["--seed", "7", "--dataset", "synth_id", "--ood_dataset", "synth_ood",
                  "--model", "mlp", "--runs", "1", "--load-path", str(tmp_path),
                  "--output-dir", str(tmp_path)])


def test_cli_protocol_only_keeps_the_protocol_keys_and_values(cli, tmp_path):
    """--protocol-only: the same protocol numbers as the full run, and nothing else."""
    _save_models(tmp_path, seeds=[1])
    rng = np.random.default_rng(11)
    sets = {}
    for name, scale in (("mnist", 1.0), ("ambiguous", 2.0), ("fashion_mnist", 8.0)):
        x = (scale * rng.normal(size=(40, 6))).astype(np.float32)
        sets[name] = (x, np.arange(40, dtype=np.int64) % 3)
    cli.protocol_datasets = lambda args: {
        name: tf.data.Dataset.from_tensor_slices(xy).batch(16) for name, xy in sets.items()}
    base = ["--seed", "1", "--dataset", "synth_id", "--ood_dataset", "synth_ood", "--model",
            "mlp", "--model-type", "gmm", "--runs", "1", "--load-path", str(tmp_path), "-b", "32",
            "--protocol", "dirty_mnist", "--ood-sets", "fashion_mnist", "--no-tensorboard"]
    full = cli.main(base + ["--output-dir", str(tmp_path / "full")])["mean"]
    only = cli.main(base + ["--output-dir", str(tmp_path / "only"), "--protocol-only"])["mean"]
    protocol = {k: v for k, v in full.items() if k.split("/")[0] in (
        "mnist", "mnist_vs_fashion_mnist", "ambiguous_vs_fashion_mnist", "dirty_vs_fashion_mnist")}
    assert only == protocol and len(protocol) == 4 + 3 * 6
    assert "accuracy" in full and "accuracy" not in only
    with pytest.raises(ValueError, match="--protocol dirty_mnist with --protocol-only"):
        cli.main(base[:-5] + ["--output-dir", str(tmp_path), "--protocol-only"])


def evaluate_cli_under(out_dir, strategy, model_type="gmm"):
    """evaluate.py --strategy ``strategy`` on the synthetic sets (run in this process or, for
    2 replicas, by the ``two_replicas`` fixture): the result JSON and the replica count."""
    from ddu_tf import distribute

    module = load_experiment_script("evaluate")
    undo = _register_synthetic(module)
    try:
        _save_models(pathlib.Path(out_dir) / "models", seeds=[1, 2])
        result = module.main([
            "--seed", "1", "--dataset", "synth_id", "--ood_dataset", "synth_ood",
            "--model", "mlp", "--model-type", model_type, "--runs", "1", "--ensemble", "2",
            "--load-path", str(pathlib.Path(out_dir) / "models"), "-b", "32",
            "--output-dir", str(out_dir), "--strategy", strategy])
    finally:
        undo()
    result["replicas"] = distribute.get_strategy(strategy).num_replicas_in_sync
    return result


@pytest.mark.parametrize("model_type", ["gmm", "ensemble"])
def test_cli_sharded_code_path_matches_default(tmp_path, model_type):
    """``--strategy mirrored`` in this process (one CPU replica: the sharded passes and the
    distributed GMM statistics, not yet several replicas -- see
    test_distribute.py::test_evaluate_cli_with_two_replicas_matches_default) = the default."""
    single = evaluate_cli_under(str(tmp_path / "single"), "default", model_type)
    sharded = evaluate_cli_under(str(tmp_path / "sharded"), "mirrored", model_type)
    assert sharded["info"]["strategy"] == "mirrored"
    for key, value in single["mean"].items():
        assert sharded["mean"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


# ------------------------------------------------------------------ Fig. 1/2 plotting
def test_plot_scores_and_png(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    y = np.arange(60) % 3
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(20)
    sets = {name: tf.data.Dataset.from_tensor_slices((x[:k] * s, y[:k])).batch(16)
            for name, k, s in (("MNIST", 30, 1.0), ("Ambiguous-MNIST", 20, 1.0),
                               ("Fashion-MNIST", 25, 5.0))}
    model = _tiny_model(3)
    scores, gmm = evaluation.uncertainty_scores(model, train, sets)
    assert set(scores) == set(sets)
    assert scores["Ambiguous-MNIST"]["entropy"].shape == (20,)
    # Entropy of the first 20 MNIST rows equals that of the identical ambiguous rows.
    np.testing.assert_allclose(scores["MNIST"]["entropy"][:20], scores["Ambiguous-MNIST"]["entropy"])
    assert gmm.jitter == fit_gmm(model, train, 3).jitter
    feats = Predictor(model).dataset_features_and_logits(sets["Fashion-MNIST"])[0]
    np.testing.assert_allclose(scores["Fashion-MNIST"]["log_density"],
                               gmm.log_density(feats).numpy(), rtol=1e-12)
    path = plotting.uncertainty_histograms({"tiny": scores, "tiny again": scores},
                                           str(tmp_path / "fig" / "f.png"))
    header = pathlib.Path(path).read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert (width, height) == (1200, 760)  # 12 x 7.6 inches at 100 dpi: 2 models x 2 panels


def test_plot_rejects_non_finite_scores(tmp_path):
    bad = {"m": {"MNIST": {"entropy": np.array([0.1, np.nan]), "log_density": np.zeros(2)}}}
    with pytest.raises(ValueError, match="finite entropy"):
        plotting.uncertainty_histograms(bad, str(tmp_path / "bad.png"))


def test_pair_aurocs_match_sklearn():
    rng = np.random.default_rng(8)
    scores = {name: {"entropy": rng.normal(shift, 1.0, size=n),
                     "log_density": rng.normal(-shift, 1.0, size=n)}
              for name, shift, n in (("a", 0.0, 40), ("b", 1.0, 30), ("c", 2.0, 20))}
    out = evaluation.pair_aurocs(scores, [("a", "b"), ("b", "c")])
    for negative, positive in (("a", "b"), ("b", "c")):
        labels = np.r_[np.zeros(len(scores[negative]["entropy"])),
                       np.ones(len(scores[positive]["entropy"]))]
        row = out[f"{negative} vs {positive}"]
        assert row["entropy"] == pytest.approx(roc_auc_score(
            labels, np.r_[scores[negative]["entropy"], scores[positive]["entropy"]]))
        assert row["log_density"] == pytest.approx(roc_auc_score(
            labels, -np.r_[scores[negative]["log_density"], scores[positive]["log_density"]]))


def test_cli_on_a_model_trained_by_train_py(tmp_path):
    """train.py (1 epoch, MNIST-1D, ResNet-1D) -> evaluate.py --model-type gmm, in process.

    iD and OoD are the same test set here (the only 1-D data set), so every score ties
    pairwise and both AUROCs are exactly 1/2: a plumbing check, not a quality one.
    """
    evaluate = load_experiment_script("evaluate")
    train = load_experiment_script("train")
    train.main(["--seed", "1", "--dataset", "mnist1d", "--model", "resnet1d", "-e", "1",
                "--max-train-samples", "300", "--max-val-samples", "100", "-b", "100",
                "--verbose", "0", "--save-path", str(tmp_path)])
    result = evaluate.main(["--seed", "1", "--dataset", "mnist1d", "--ood_dataset", "mnist1d",
                            "--model", "resnet1d", "--model-type", "gmm", "--runs", "1",
                            "-e", "1", "--load-path", str(tmp_path),
                            "--output-dir", str(tmp_path), "-b", "500"])
    assert (tmp_path / "res_resnet1d_1_gmm_mnist1d_mnist1d.json").is_file()
    assert result["mean"]["m1_auroc"] == pytest.approx(0.5)
    assert result["mean"]["m2_auroc"] == pytest.approx(0.5)
    assert 0.0 <= result["mean"]["accuracy"] <= 1.0


# ------------------------------------------------------------------ Dirty-MNIST protocol
def _protocol_scores(rng):
    scores = {}
    for name, n, shift in (("mnist", 50, 0.0), ("ambiguous", 30, 1.0), ("fashion_mnist", 40, 2.0),
                           ("uniform_noise", 20, 3.0)):
        logits, labels = _synthetic_logits(rng, n=n, classes=4)
        scores[name] = {"entropy": rng.normal(shift, 1.0, n),
                        "log_density": rng.normal(-shift, 1.0, n),
                        "logits": logits, "labels": labels}
    return scores


def test_dirty_mnist_protocol_against_sklearn():
    from sklearn.metrics import log_loss, roc_curve

    rng = np.random.default_rng(11)
    scores = _protocol_scores(rng)
    out = evaluation.dirty_mnist_protocol(scores, ["fashion_mnist", "uniform_noise"])
    logits, labels = scores["mnist"]["logits"], scores["mnist"]["labels"]
    probs = special.softmax(logits, axis=1)
    assert out["mnist/accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels))
    assert out["mnist/nll"] == pytest.approx(log_loss(labels, probs, labels=range(4)))
    onehot = np.eye(4)[labels]
    assert out["mnist/brier"] == pytest.approx(np.mean(np.sum((probs - onehot) ** 2, 1)))
    # dirty = mnist and ambiguous together; density: in-distribution positive.
    for ood in ("fashion_mnist", "uniform_noise"):
        for key, sign in (("entropy", -1.0), ("log_density", 1.0)):
            iid = np.r_[scores["mnist"][key], scores["ambiguous"][key]]
            y = np.r_[np.ones(iid.size), np.zeros(scores[ood][key].size)]
            s = sign * np.r_[iid, scores[ood][key]]
            assert out[f"dirty_vs_{ood}/{key}_auroc"] == pytest.approx(roc_auc_score(y, s))
            positive = y if key == "log_density" else 1 - y
            assert out[f"dirty_vs_{ood}/{key}_auprc"] == pytest.approx(
                average_precision_score(positive, np.r_[iid, scores[ood][key]]))
            fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
            assert out[f"dirty_vs_{ood}/{key}_fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)])
    splits = {key.split("/")[0] for key in out}
    assert splits == {"mnist", *(f"{i}_vs_{o}" for i in ("mnist", "ambiguous", "dirty")
                                 for o in ("fashion_mnist", "uniform_noise"))}


def test_summarize_keeps_split_metric_keys():
    rng = np.random.default_rng(12)
    runs = []
    for _ in range(3):
        run = {key: float(rng.random()) for key in evaluation.METRIC_KEYS}
        run.update({"test/nll": float(rng.random()), "temperature": 1.0})
        runs.append(run)
    runs[0]["only_first/x"] = 1.0
    out = evaluation.summarize(runs)
    assert "test/nll" in out["mean"] and "temperature" not in out["mean"]
    assert "only_first/x" not in out["mean"]
    values = [r["test/nll"] for r in runs]
    assert out["std"]["test/nll"] == pytest.approx(np.std(values, ddof=1) / np.sqrt(3))
