"""DDU active learning: scoring strategies, the Dirty-MNIST pool, and the experiment script.

Oracles: hand-built pools where the right acquisition is known, NumPy formulas, the shared
GMM's own mixture density, the loop's saved state (for resume and ambiguous fractions), and
experiments/train.py's own checkpoint names.
"""
import json
import warnings

import keras
import numpy as np
import pytest

from experiment_scripts import (ROOT, leftover_temporaries, load_experiment_script,
                                start_and_kill, without_timings)
from ddu_tf import uncertainty
from ddu_tf.active_learning import ddu_scoring
from ddu_tf.active_learning.acquisition import select_top_k
from ddu_tf.data import al_pools
from ddu_tf.density import ClassConditionalGaussians


def _identity_feature_model(dim=2, num_classes=2):
    """Input [dim] -> features = input (layer "features") -> logits = features @ W."""
    inputs = keras.Input((dim,))
    features = keras.layers.Dense(dim, name="features", kernel_initializer="identity",
                                  bias_initializer="zeros")(inputs)
    logits = keras.layers.Dense(num_classes, name="logits")(features)
    return keras.Model(inputs, logits)


# ----------------------------------------------------------------------------- scores
def test_class_log_priors_from_labelled_counts():
    log_pi = ddu_scoring.class_log_priors(np.array([0, 0, 0, 2]), num_classes=4)
    np.testing.assert_allclose(np.exp(log_pi), [0.75, 0.0, 0.25, 0.0])
    assert np.isneginf(log_pi[1]) and np.isneginf(log_pi[3])
    with pytest.raises(ValueError, match="labels"):
        ddu_scoring.class_log_priors(np.array([0, 5]), num_classes=4)


def test_weighted_density_matches_numpy_and_survives_underflow():
    rng = np.random.default_rng(0)
    cld = rng.normal(-5.0, 2.0, size=(7, 3))
    log_pi = np.log([0.5, 0.3, 0.2])
    expected = np.log(np.sum(np.exp(cld) * np.exp(log_pi), axis=1))
    np.testing.assert_allclose(
        ddu_scoring.class_prior_weighted_log_density(cld, log_pi), expected, rtol=1e-12)
    # 512-d features give log q(z|c) far below -745: exp() underflows to 0 for every point,
    # so the original's sum(exp(.) * pi) cannot rank them; log space keeps the exact order.
    deep = cld - 2000.0
    assert np.all(np.sum(np.exp(deep) * np.exp(log_pi), axis=1) == 0.0)
    got = ddu_scoring.class_prior_weighted_log_density(deep, log_pi)
    np.testing.assert_allclose(got, expected - 2000.0, rtol=1e-12)


def test_absent_class_drops_out_of_the_density():
    cld = np.array([[-1.0, 50.0], [-3.0, 50.0]])
    scores = ddu_scoring.gmm_density_scores(cld, labelled_labels=np.array([0, 0, 0]), num_classes=2)
    np.testing.assert_allclose(scores, [1.0, 3.0])  # class 1 has pi = 0 despite its density
    with pytest.raises(ValueError, match="log_priors"):
        ddu_scoring.class_prior_weighted_log_density(cld, np.array([-np.inf, -np.inf]))


def test_weighted_density_equals_the_shared_gmm_mixture():
    rng = np.random.default_rng(1)
    feats = np.concatenate([rng.normal(0, 1, (30, 3)), rng.normal(4, 1, (10, 3))])
    labels = np.array([0] * 30 + [1] * 10)
    gmm = ClassConditionalGaussians.fit(feats, labels, num_classes=2)
    query = rng.normal(2, 3, (9, 3))
    ours = -ddu_scoring.gmm_density_scores(gmm.class_log_densities(query).numpy(), labels, 2)
    np.testing.assert_allclose(ours, gmm.weighted_log_density(query).numpy(), rtol=1e-10)


def test_ensemble_scores_match_numpy():
    # The ensemble strategy scores with ddu_tf.uncertainty's PE / MI of the member logits.
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(5, 6, 4))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    mean = p.mean(0)
    pe = -(mean * np.log(mean)).sum(-1)
    mi = pe - (-(p * np.log(p)).sum(-1)).mean(0)
    np.testing.assert_allclose(uncertainty.ensemble_predictive_entropy(logits), pe, rtol=1e-5)
    np.testing.assert_allclose(uncertainty.ensemble_mutual_information(logits), mi,
                               rtol=1e-4, atol=1e-6)


def test_gmm_acquisition_picks_the_lowest_density_points():
    model = _identity_feature_model()
    rng = np.random.default_rng(3)
    labelled = np.concatenate([rng.normal([0, 0], 0.3, (20, 2)), rng.normal([5, 5], 0.3, (20, 2))])
    labels = np.array([0] * 20 + [1] * 20)
    near = np.concatenate([rng.normal([0, 0], 0.3, (6, 2)), rng.normal([5, 5], 0.3, (6, 2))])
    far = np.array([[20.0, -20.0], [-15.0, 12.0], [30.0, 30.0]])
    pool = np.concatenate([near[:4], far[:1], near[4:9], far[1:], near[9:]]).astype(np.float32)
    far_positions = {4, 10, 11}
    scores = ddu_scoring.acquisition_scores("gmm", [model], pool, labelled_images=labelled,
                                            labelled_labels=labels, num_classes=2)
    assert set(select_top_k(scores, 3).tolist()) == far_positions


def test_softmax_and_ensemble_acquisition_pick_the_ambiguous_points():
    # logits = features @ W with W = [[1, -1], [-1, 1]]: points on the diagonal x0 == x1 are
    # exactly 50/50 (max entropy), points far off it are confident.
    models = []
    for scale in (1.0, 2.0, 3.0):
        m = _identity_feature_model()
        m.get_layer("logits").set_weights([scale * np.array([[1.0, -1.0], [-1.0, 1.0]]),
                                           np.zeros(2)])
        models.append(m)
    pool = np.array([[5, -5], [1, 1], [-4, 4], [3, 3], [6, 0], [0, 6]], np.float32)
    soft = ddu_scoring.acquisition_scores("softmax", models[:1], pool)
    assert set(select_top_k(soft, 2).tolist()) == {1, 3}
    np.testing.assert_allclose(soft[[1, 3]], np.log(2), rtol=1e-6)
    pe = ddu_scoring.acquisition_scores("ensemble", models, pool)
    assert set(select_top_k(pe, 2).tolist()) == {1, 3}
    # Members agree everywhere (same sign, different sharpness): MI is small but >= 0.
    mi = ddu_scoring.acquisition_scores("ensemble", models, pool, mutual_information=True)
    assert np.all(mi >= -1e-6) and np.all(mi < pe + 1e-6)
    with pytest.raises(ValueError, match="al_type"):
        ddu_scoring.acquisition_scores("bald", models, pool)


# ----------------------------------------------------------------------------- pools
def _fake_ambiguous(num_images, per_image=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (num_images, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, (num_images, per_image))
    image_index = np.repeat(np.arange(num_images), per_image)
    return (images[image_index], labels.reshape(-1), image_index,
            np.arange(num_images * per_image))


def test_dirty_pool_draws_clean_without_replacement_and_flags_ambiguous():
    rng = np.random.default_rng(4)
    mnist_x = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    mnist_y = rng.integers(0, 10, 50)
    amb = _fake_ambiguous(6)
    # 49 of 50: a with-replacement draw of this size repeats an image almost surely.
    pool = al_pools.dirty_mnist_al_pool(mnist_x, mnist_y, *amb, subsample=49, seed=7,
                                        ambiguous_images_limit=4)
    clean = ~pool.is_ambiguous
    assert clean.sum() == 49 and np.unique(pool.source_index[clean]).size == 49
    assert pool.is_ambiguous.sum() == 40  # 4 whole images x 10 labels, cut at a multiple of 10
    assert set(pool.source_index[pool.is_ambiguous].tolist()) == {0, 1, 2, 3}
    np.testing.assert_array_equal(pool.labels[pool.is_ambiguous], amb[1][:40])
    src = pool.source_index[clean]
    np.testing.assert_allclose(pool.images[clean][..., 0],
                               (mnist_x[src] / 255.0 - 0.1307) / 0.3081, atol=1e-5)
    assert np.unique(pool.noise_key).size == len(pool)
    again = al_pools.dirty_mnist_al_pool(mnist_x, mnist_y, *amb, subsample=49, seed=7,
                                         ambiguous_images_limit=4)
    np.testing.assert_array_equal(again.source_index, pool.source_index)
    with pytest.raises(ValueError, match="subsample"):
        al_pools.dirty_mnist_al_pool(mnist_x, mnist_y, *amb, subsample=51)
    with pytest.raises(ValueError, match="ambiguous_images"):
        al_pools.dirty_mnist_al_pool(mnist_x, mnist_y, *amb, subsample=5,
                                     ambiguous_images_limit=7)


def test_mnist_pool_subset_and_normalisation_errors():
    x = np.zeros((20, 28, 28), np.float32)
    pool = al_pools.mnist_al_pool(x, np.arange(20) % 10, pool_size=8, seed=0)
    assert len(pool) == 8 and not pool.is_ambiguous.any()
    assert np.unique(pool.source_index).size == 8
    np.testing.assert_allclose(pool.images, -0.1307 / 0.3081, rtol=1e-6)
    with pytest.raises(ValueError, match="images"):
        al_pools.mnist_al_pool(x + 5.0, np.arange(20) % 10)


def test_mnist_pixels_subset_relabel_against_the_idx_reader(mnist_data_dir):
    """Gal et al.'s inputs: the IDX arrays / 255 (not normalised), the first ``train_limit``
    training images, and for Experiment 3 only two digits relabelled 0/1 by position."""
    from ddu_tf.io.mnist_idx import load_idx_arrays
    raw_x, raw_y = load_idx_arrays("mnist", "train", data_dir=mnist_data_dir)
    test_x, test_y = load_idx_arrays("mnist", "test", data_dir=mnist_data_dir)
    x, y, xt, yt = al_pools.load_mnist_pixels(mnist_data_dir, train_limit=300)
    assert x.shape == (300, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x[..., 0] * 255, raw_x[:300])
    np.testing.assert_array_equal(y, raw_y[:300])
    assert xt.shape == (10000, 28, 28, 1) and (yt == test_y).all()
    x2, y2, xt2, yt2 = al_pools.load_mnist_pixels(mnist_data_dir, train_limit=300, digits=(9, 4))
    keep = [i for i in range(300) if raw_y[i] in (4, 9)]
    np.testing.assert_array_equal(x2[..., 0] * 255, raw_x[keep])
    np.testing.assert_array_equal(y2, [0 if raw_y[i] == 9 else 1 for i in keep])
    assert len(yt2) == int(np.isin(test_y, [4, 9]).sum()) and set(yt2) == {0, 1}
    for bad in ({"digits": (4, 4)}, {"digits": (4,)}, {"digits": (4, 10)}, {"train_limit": 0}):
        with pytest.raises(ValueError, match="Expected"):
            al_pools.load_mnist_pixels(mnist_data_dir, **bad)


# ----------------------------------------------------------------------------- end to end
def _tiny_args(out, al_type, extra=()):
    return ["--seed", "3", "--model", "lenet", "--al-type", al_type, "-e", "1",
            "--fixed-length", "64", "-b", "32", "--acquisition-batch-size", "4",
            "--num-initial-samples", "20", "--max-training-samples", "28", "--num-runs", "1",
            "--output-dir", str(out), *extra]


def test_dirty_run_reports_ground_truth_fraction_and_resumes(tmp_path, monkeypatch,
                                                             experiment_script):
    script = experiment_script("ddu_active_learning")
    rng = np.random.default_rng(5)
    mnist_x = rng.integers(0, 256, (200, 28, 28), dtype=np.uint8)
    mnist_y = np.arange(200) % 10
    amb = _fake_ambiguous(8)
    pool = al_pools.dirty_mnist_al_pool(mnist_x, mnist_y, *amb, subsample=120, seed=0)
    test_x, test_y = pool.images[:50], pool.labels[:50]
    monkeypatch.setattr(script, "load_al_pool", lambda *a, **k: (pool, test_x, test_y))
    # The "pretrained" ambiguity model: any saved Keras model; its entropies are the oracle.
    keras.utils.set_random_seed(0)
    pretrained = script.build_model("lenet", False, 3.0, False)
    pretrained.save(tmp_path / "pre.keras")
    logits = pretrained.predict(pool.images, verbose=0).astype(np.float64)
    log_p = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    entropy = -(np.exp(log_p) * log_p).sum(1)
    threshold = float(np.median(entropy))
    argv = _tiny_args(tmp_path, "gmm", ["-ambiguous", "--subsample", "120",
                                        "--saved-model-path", str(tmp_path),
                                        "--saved-model-name", "pre.keras",
                                        "--threshold", str(threshold)])
    summary = script.main(argv)
    name = script.run_name(script.parse_args(argv))
    assert name == "lenet_3_gmm_dirty_mnist_120"
    run = summary["runs"][0]
    assert run["num_labelled"] == [20, 24, 28]
    info = summary["ambiguity_threshold_measure"]
    assert info["source"] == "loaded"
    np.testing.assert_allclose(info["pool_flagged_fraction"], np.mean(entropy > threshold))
    saved = json.loads((tmp_path / "runs" / f"{name}_run0.json").read_text())
    labelled = np.asarray(saved["state"]["labelled"])
    expected = [pool.is_ambiguous[labelled[:n]].mean() for n in (24, 28)]
    np.testing.assert_allclose(run["ambiguous_fraction_gt"], expected)
    np.testing.assert_allclose(run["ambiguous_fraction_gt_acquired_only"],
                               [pool.is_ambiguous[labelled[20:n]].mean() for n in (24, 28)])
    gt_file = json.loads((tmp_path / f"ambiguous_gt_{name}.json").read_text())
    np.testing.assert_allclose(gt_file["0"], expected)
    thr_file = json.loads((tmp_path / f"ambiguous_{name}.json").read_text())
    np.testing.assert_allclose(
        thr_file["0"], [np.mean(entropy[labelled[:n]] > threshold) for n in (24, 28)])
    ent_file = json.loads((tmp_path / f"ambiguous_entropies_{name}.json").read_text())
    np.testing.assert_allclose(ent_file["0"]["1"], entropy[labelled[:28]], rtol=1e-4, atol=1e-5)
    accs = json.loads((tmp_path / f"test_accs_{name}.json").read_text())["0"]
    assert len(accs) == 3 and all(0.0 <= a <= 100.0 for a in accs)
    assert (tmp_path / "al_plot_dirty_mnist.png").stat().st_size > 0
    assert list((tmp_path / "tensorboard" / name / "run0").glob("events.out.tfevents*"))

    # Interrupt during the last round (which acquires nothing): the saved file then holds
    # rounds 0-1 and the state after round 1's acquisition. Re-running computes only round 2.
    saved["history"] = saved["history"][:2]
    (tmp_path / "runs" / f"{name}_run0.json").write_text(json.dumps(saved))
    first_two = [h["round_seconds"] for h in saved["history"]]
    resumed = script.main(argv)
    again = json.loads((tmp_path / "runs" / f"{name}_run0.json").read_text())
    assert [h["round_seconds"] for h in again["history"][:2]] == first_two
    assert len(again["history"]) == 3 and again["state"]["labelled"] == labelled.tolist()
    assert resumed["runs"][0]["num_labelled"] == [20, 24, 28]
    with pytest.raises(ValueError, match="different config"):
        script.main(argv + ["--lr", "0.01"])


def test_threshold_measure_skipped_or_missing_model(tmp_path, experiment_script):
    script = experiment_script("ddu_active_learning")
    pool = al_pools.mnist_al_pool(np.zeros((20, 28, 28), np.uint8), np.arange(20) % 10)
    args = script.parse_args(["--seed", "1", "-ambiguous", "--pretrain-epochs", "0"])
    entropies, info = script.pretrained_entropies(args, pool, print)
    assert entropies is None and "--pretrain-epochs 0" in info["skipped"]
    args = script.parse_args(["--seed", "1", "-ambiguous", "--saved-model-path", str(tmp_path)])
    with pytest.raises(ValueError, match="--saved-model-path"):
        script.pretrained_entropies(args, pool, print)


def test_bad_flags_raise_value_error_naming_the_flag(experiment_script):
    script = experiment_script("ddu_active_learning")
    with pytest.raises(ValueError, match="-mi"):
        script.parse_args(["--seed", "1", "--al-type", "gmm", "-mi"])
    with pytest.raises(ValueError, match="--max-training-samples"):
        script.parse_args(["--seed", "1", "--max-training-samples", "10"])
    with pytest.raises(ValueError, match="--model"):
        script.parse_args(["--seed", "1", "--model", "alexnet"])


def _synthetic_pool(size=160):
    rng = np.random.default_rng(7)
    images = rng.normal(size=(size, 28, 28, 1)).astype(np.float32)
    labels = np.arange(size) % 10
    pool = al_pools.ActiveLearningPool(images=images, labels=labels,
                                       is_ambiguous=np.zeros(size, bool),
                                       source_index=np.arange(size), noise_key=np.arange(size))
    return pool, images[:40], labels[:40]


def acquisitions_under(out_dir, al_type, strategy):
    """Acquired pool indices per round of a tiny run with ``--strategy`` (run in this process
    or, for 2 replicas, by the ``two_replicas`` fixture), with the number of replicas.

    ``--lr 0``: the networks keep their seeded initial weights whatever the number of
    replicas (summing float32 gradients over replicas rounds differently, which reorders
    near-tied scores), so every difference would come from the sharded passes, the split
    batches' plumbing or the loop; the trainer's cross-replica numerics are checked in
    tests/test_distribute.py."""
    from ddu_tf import distribute

    script = load_experiment_script("ddu_active_learning")
    pool = _synthetic_pool()
    script.load_al_pool = lambda *a, **k: pool
    extra = ["--num-ensemble", "2"] if al_type == "ensemble" else []
    argv = _tiny_args(out_dir, al_type, [*extra, "--strategy", strategy, "--lr", "0",
                                         "--max-training-samples", "24"])
    script.main(argv)
    name = script.run_name(script.parse_args(argv))
    with open(f"{out_dir}/runs/{name}_run0.json", encoding="utf-8") as handle:
        saved = json.load(handle)
    return {"acquired": [r["acquired"] for r in saved["history"]],
            "accuracy": [r["metrics"]["test/accuracy"] for r in saved["history"]],
            "replicas": distribute.get_strategy(strategy).num_replicas_in_sync}


@pytest.mark.slow  # ~41 s per type (a 2-replica subprocess); make test stays under 15 min
@pytest.mark.parametrize("al_type", ["gmm", "ensemble"])
def test_two_replica_run_acquires_what_the_single_device_run_acquires(tmp_path, two_replicas,
                                                                      al_type):
    """--strategy mirrored on 2 logical CPUs: the trainer splits every batch over 2 replicas
    and every test, validation and pool pass is sharded; the run acquires exactly what the
    one-device run acquires."""
    single = acquisitions_under(str(tmp_path / "default"), al_type, "default")
    mirrored = two_replicas("test_ddu_active_learning:acquisitions_under",
                            str(tmp_path / "mirrored"), al_type, "mirrored")
    assert mirrored["replicas"] == 2 and single["replicas"] == 1
    assert mirrored["acquired"] == single["acquired"]
    assert sum(len(a) for a in single["acquired"]) == 4
    assert mirrored["accuracy"] == single["accuracy"]


# ----------------------------------------------------------------------------- issue 21
def test_dataset_spellings_and_small_batch_warning(experiment_script):
    script = experiment_script("ddu_active_learning")
    notices = []
    for spelling in ("dirty-mnist", "dirty_mnist"):
        with pytest.warns(UserWarning, match="at least 10"):
            args = script.parse_args(["--seed", "1", "--dataset", spelling,
                                      "--ambiguous-config", "generated"], log=notices.append)
        assert args.ambiguous and args.acquisition_batch_size == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        args = script.parse_args(["--seed", "1", "--dataset", "mnist"])
        assert not args.ambiguous
        script.parse_args(["--seed", "1", "-ambiguous", "--acquisition-batch-size", "10",
                           "--ambiguous-config", "generated"])
    assert notices == []  # an explicit --ambiguous-config needs no notice
    with pytest.raises(ValueError, match="contradicts"):
        script.parse_args(["--seed", "1", "--dataset", "mnist", "-ambiguous"])


def test_ambiguous_config_defaults_to_the_official_files_when_present(tmp_path, monkeypatch,
                                                                      experiment_script):
    script = experiment_script("ddu_active_learning")
    monkeypatch.delenv("DDU_TF_DATA_DIR", raising=False)
    notices = []
    argv = ["--seed", "1", "-ambiguous", "--acquisition-batch-size", "10",
            "--dataset-root", str(tmp_path)]
    assert script.parse_args(argv, log=notices.append).ambiguous_config == "generated"
    assert len(notices) == 1 and "--ambiguous-config generated" in notices[0]
    (tmp_path / "ambiguous_mnist").mkdir()
    for name in ("amnist_samples.pt", "amnist_labels.pt"):
        (tmp_path / "ambiguous_mnist" / name).write_bytes(b"")
    notices.clear()
    assert script.parse_args(argv, log=notices.append).ambiguous_config == "official"
    assert notices == []


def test_saved_model_name_defaults_to_what_train_py_writes(tmp_path, experiment_script):
    script = experiment_script("ddu_active_learning")
    train = experiment_script("train")
    train_args = train.parse_args(["--seed", "1", "--dataset", "dirty-mnist", "--model",
                                   "resnet18", "-sn"])
    assert train_args.dataset == "dirty_mnist"
    written = script.checkpoint_name(train_args.model, train_args.sn, train_args.mod,
                                     train_args.coeff, train_args.seed, train_args.epoch)
    args = script.parse_args(["--seed", "1", "--trained-model", "resnet18", "-tsn",
                              "--saved-model-path", str(tmp_path)])
    assert script.saved_model_file(args) == str(tmp_path / written)
    assert written == "resnet18_sn_3.0_1_350.keras"
    # The DDU README's name with the original's extension finds the .keras file.
    (tmp_path / written).write_bytes(b"")
    args = script.parse_args(["--seed", "1", "--saved-model-path", str(tmp_path),
                              "--saved-model-name", "resnet18_sn_3.0_1_350.model"])
    assert script.saved_model_file(args) == str(tmp_path / written)


def test_runs_saved_with_measurement_flags_in_their_config_resume(tmp_path, monkeypatch,
                                                                 experiment_script):
    """Results files written before the measurement flags left the run identity (e.g. the
    committed results/ddu_active_learning/*/runs/) resume with the same command."""
    script = experiment_script("ddu_active_learning")
    pool = _synthetic_pool(120)
    monkeypatch.setattr(script, "load_al_pool", lambda *a, **k: pool)
    argv = _tiny_args(tmp_path, "softmax")
    script.main(argv)
    name = script.run_name(script.parse_args(argv))
    path = tmp_path / "runs" / f"{name}_run0.json"
    saved = json.loads(path.read_text())
    saved["config"].update({"trained_model_name": "resnet18", "tsn": False, "tcoeff": 3.0,
                            "tmod": False, "saved_model_name": "resnet18_sn_3.0_1.keras",
                            "threshold": 1.0, "subsample": 1000, "ambiguous_config": "generated",
                            "ambiguous_images": None})
    first_two = saved["history"][:2]
    saved["history"] = first_two  # interrupted in the last round (which acquires nothing)
    path.write_text(json.dumps(saved))
    summary = script.main(argv)
    assert summary["runs"][0]["num_labelled"] == [20, 24, 28]
    again = json.loads(path.read_text())
    assert again["history"][:2] == first_two  # resumed, not recomputed
    assert again["config"] == script.run_config(script.parse_args(argv))


# ----------------------------------------------------------------------------- issue 21 item 4
def test_cpu_scale_flags_subset_the_scored_pool_validation_and_test(tmp_path, monkeypatch,
                                                                    experiment_script):
    """--pool-subset scores the loop's stateless per-round subset (every acquisition lies in
    it), --val-size fixes the validation set, --test-subset measures accuracy on a seeded
    subset; the flags join the run identity only when set (older files still resume)."""
    from ddu_tf.active_learning.pool import PoolState

    script = experiment_script("ddu_active_learning")
    pool, test_x, test_y = _synthetic_pool(160)
    test_x = np.concatenate([test_x] * 3)
    test_y = np.concatenate([test_y] * 3)  # 120 test images
    monkeypatch.setattr(script, "load_al_pool", lambda *a, **k: (pool, test_x, test_y))
    argv = _tiny_args(tmp_path, "softmax", ["--pool-subset", "12", "--val-size", "15",
                                            "--test-subset", "30"])
    scored = []
    real_scores = script.ddu_scoring.acquisition_scores
    monkeypatch.setattr(script.ddu_scoring, "acquisition_scores",
                        lambda *a, **k: scored.append(len(a[2])) or real_scores(*a, **k))
    summary = script.main(argv)
    assert scored == [12, 12]
    name = script.run_name(script.parse_args(argv))
    saved = json.loads((tmp_path / "runs" / f"{name}_run0.json").read_text())
    assert len(saved["state"]["validation"]) == 15
    # Replay the pool state: each round's acquisitions come from that round's subset.
    state = PoolState.from_dict(dict(saved["state"], labelled=saved["state"]["labelled"][:20],
                                     pool=sorted(saved["state"]["pool"]
                                                 + saved["state"]["labelled"][20:])))
    for record in saved["history"][:2]:
        subset = set(state.pool_subset(record["round"], 12).tolist())
        assert set(record["acquired"]) <= subset
        state.acquire(record["acquired"])
    # Accuracy on 30 test images: a multiple of 100/30.
    for acc in summary["runs"][0]["test_accuracy"]:
        assert abs(acc * 30 / 100 - round(acc * 30 / 100)) < 1e-6
    config = saved["config"]
    assert (config["pool_subset"], config["val_size"], config["test_subset"]) == (12, 15, 30)
    assert "val_fraction" not in config
    plain = script.run_config(script.parse_args(_tiny_args(tmp_path, "softmax")))
    assert not {"pool_subset", "val_size", "test_subset"} & set(plain)
    with pytest.raises(ValueError, match="--pool-subset"):
        script.parse_args(_tiny_args(tmp_path, "softmax", ["--pool-subset", "0"]))
    args = script.parse_args(_tiny_args(tmp_path, "softmax", ["--val-size", "150"]))
    with pytest.raises(ValueError, match="--val-size"):
        script.validation_size(args, 160)


def test_paper_comparison_reports_accuracy_and_ambiguous_share_per_size(tmp_path,
                                                                        experiment_script):
    script = experiment_script("ddu_active_learning")
    sizes = list(range(20, 301, 5))  # 57 rounds, as the ResNet-18 runs
    runs = {}
    rng = np.random.default_rng(0)
    accs = rng.uniform(30, 90, (3, len(sizes)))
    fracs = rng.uniform(0, 1, (3, 3))
    for r in range(3):
        runs[str(r)] = {"num_labelled": sizes, "test_accuracy": accs[r].tolist(),
                        "size_after_acquisition": [100, 200, 300],
                        "ambiguous_fraction_gt_acquired_only": fracs[r].tolist()}
    summary = {"name": "x_gmm", "dataset": "dirty_mnist", "al_type": "gmm", "runs": runs,
               "args": {"model_name": "resnet18", "pool_subset": 5000}, "pool": {"size": 9}}
    (tmp_path / "summary_x_gmm.json").write_text(json.dumps(summary))
    result = script.paper_comparison(str(tmp_path), "dirty_mnist")
    cell = result["ours"]["gmm"]["accuracy"]["200"]
    assert cell["runs"] == 3
    at = sizes.index(200)
    np.testing.assert_allclose(cell["mean"], accs[:, at].mean())
    np.testing.assert_allclose(cell["standard_error"], accs[:, at].std(ddof=1) / np.sqrt(3))
    window = result["ours"]["gmm"]["accuracy_window"]["200"]  # rounds at 180, ..., 200
    np.testing.assert_allclose(window["values"], accs[:, at - 4:at + 1].mean(axis=1))
    np.testing.assert_allclose(window["mean"], accs[:, at - 4:at + 1].mean())
    np.testing.assert_allclose(result["ours"]["gmm"]["ambiguous_acquired_fraction"]["300"]["mean"],
                               fracs[:, 2].mean())
    assert result["paper"]["300"] == {"softmax": 52, "gmm": 75, "ensemble": 55, "ensemble_mi": 70}
    assert result["ours"]["gmm"]["setting"]["pool_subset"] == 5000
    assert json.loads((tmp_path / "comparison_dirty_mnist.json").read_text()) == result
    assert (tmp_path / "comparison_dirty_mnist.png").stat().st_size > 0
    assert script.paper_comparison(str(tmp_path), "mnist") is None
    (tmp_path / "comparison_dirty_mnist.json").unlink()
    report = ["--seed", "1", "--report", "--output-dir", str(tmp_path)]
    assert script.main([*report, "-ambiguous"]) is None
    assert json.loads((tmp_path / "comparison_dirty_mnist.json").read_text()) == result
    with pytest.raises(ValueError, match="Expected summary_.*Received: none"):
        script.main(report)  # MNIST: no such runs there


# ----------------------------------------------------------------------------- issue 19 item 3
@pytest.mark.slow  # a subprocess + 2 runs: ~2-3 min on the loaded 2-core machine
def test_run_killed_at_a_random_point_resumes_exactly(tmp_path, mnist_data_dir,
                                                      experiment_script):
    """The CLI on MNIST, SIGKILLed a random delay after its first round was saved, then the
    same command again: the loop file, test accuracies and summary equal the uninterrupted
    run's (timings aside) and no temporary file is left."""
    script = experiment_script("ddu_active_learning")

    def argv(out):
        return _tiny_args(out, "gmm", ["--max-training-samples", "32", "--pool-size", "300",
                                       "--val-size", "20", "--test-subset", "100",
                                       "--data-dir", str(mnist_data_dir)])

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    summary = script.main(argv(reference))
    name = summary["name"]
    saved = resumed / "runs" / f"{name}_run0.json"
    start_and_kill([ROOT / "experiments" / "ddu_active_learning.py", *argv(resumed)],
                   ready=saved.exists, seed=12, max_delay=2.0, log_path=tmp_path / "killed.log")
    again = script.main(argv(resumed))
    for relative in (f"runs/{name}_run0.json", f"test_accs_{name}.json"):
        ours, theirs = (json.loads((d / relative).read_text()) for d in (resumed, reference))
        assert without_timings(ours) == without_timings(theirs), relative
    assert [r["round"] for r in json.loads(saved.read_text())["history"]] == [0, 1, 2, 3]
    for s in (again, summary):
        s["args"].pop("output_dir")
    assert without_timings(again) == without_timings(summary)
    assert leftover_temporaries(resumed) == []
