"""The Bayesian CNN and the experiment CLI end to end on tiny MNIST runs (with resume), its
weight-decay tuner, and --strategy mirrored with 2 replicas."""
import json
import os

import keras
import numpy as np
import pytest

from ddu_tf.models.bayesian_cnn import ALL_DECAY_LAYERS, AUTHORS_CODE_SHAPE, bayesian_cnn
from experiment_scripts import (ROOT, leftover_temporaries, load_experiment_script,
                                start_and_kill, without_timings)


def _experiment_module():
    return load_experiment_script("bayesian_al")


def test_bayesian_cnn_architecture():
    model = bayesian_cnn()
    assert model.output_shape == (None, 10)
    assert model.get_layer("features").output.shape == (None, 128)
    # conv1 32*(16+1) + conv2 32*(512+1) + dense 128*(3872+1) + logits 10*(128+1)
    assert model.count_params() == 544 + 16416 + 495744 + 1290
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Dropout") == 2
    twin = bayesian_cnn(dropout=False, num_classes=2)
    assert "Dropout" not in [type(layer).__name__ for layer in twin.layers]
    assert twin.count_params() == 544 + 16416 + 495744 + 258
    x = np.zeros((2, 28, 28, 1), np.float32)
    np.testing.assert_allclose(model(x), model(x))  # inference: dropout off
    # The authors' Keras script: conv 3x3 twice -> 24x24, pool 5 -> 4x4x32 = 512, dense 256.
    authors = bayesian_cnn(**AUTHORS_CODE_SHAPE)
    assert authors.get_layer("flatten").output.shape == (None, 512)
    assert authors.count_params() == 32 * 10 + 32 * 289 + 256 * 513 + 10 * 257
    with pytest.raises(ValueError, match="pool_size"):
        bayesian_cnn(pool_size=0)
    with pytest.raises(ValueError, match="weight_decay"):
        bayesian_cnn(weight_decay=-1.0)
    with pytest.raises(ValueError, match="num_classes"):
        bayesian_cnn(num_classes=0)


def test_weight_decay_adds_l2_loss():
    def penalty(model, names):
        return 0.5 * sum(float(np.sum(np.square(model.get_layer(n).kernel.numpy())))
                         for n in names)

    authors = bayesian_cnn(weight_decay=0.5)  # authors' code: first dense layer only
    every = bayesian_cnn(weight_decay=0.5, decay_layers=ALL_DECAY_LAYERS)
    for model, names in ((authors, ["features"]), (every, ALL_DECAY_LAYERS)):
        model(np.zeros((1, 28, 28, 1), np.float32))
        np.testing.assert_allclose(float(sum(model.losses)), penalty(model, names), rtol=1e-5)
    with pytest.raises(ValueError, match="decay_layers"):
        bayesian_cnn(weight_decay=0.5, decay_layers=("conv3",))


_TINY = ["--train-limit", "400", "--epochs", "1", "--dropout_iter", "2", "--test-size", "40",
         "--val_size", "20", "--pool-subset", "60", "--experiments", "1", "--query", "5"]


@pytest.mark.real_data
def test_experiment_1_resumes_after_interruption(tmp_path):
    cli = _experiment_module()
    argv = _TINY + ["--experiment", "1", "--acq_func", "3", "--rounds", "2",
                    "--result_dir", str(tmp_path)]
    original_train, calls = cli.CNNRun.train, []

    def interrupted(self, labelled, round_index):
        calls.append(round_index)
        if round_index == 2:
            raise KeyboardInterrupt  # the process is killed during round 2
        return original_train(self, labelled, round_index)

    cli.CNNRun.train = interrupted
    with pytest.raises(KeyboardInterrupt):
        cli.main(argv)
    path = tmp_path / "exp1" / "bald_seed369" / "results.json"
    before = json.loads(path.read_text())["history"]
    assert [r["round"] for r in before] == [0, 1]

    def counted(self, labelled, round_index):
        calls.append(round_index)
        return original_train(self, labelled, round_index)

    calls.clear()
    cli.CNNRun.train = counted
    table = cli.main(argv)
    after = json.loads(path.read_text())["history"]
    assert calls == [2]  # only the unfinished round runs again
    assert after[:2] == before
    assert [r["num_acquired"] for r in after] == [0, 5, 10]
    assert table["bald"]["rounds_done"] == [2]
    assert (tmp_path / "exp1" / "test_accuracy.png").stat().st_size > 0
    assert "bald" in (tmp_path / "exp1" / "table.md").read_text()
    assert os.listdir(tmp_path / "tensorboard" / "exp1" / "bald_seed369")


@pytest.mark.real_data
def test_experiment_2_continues_experiment_1_and_mixed_precision(tmp_path, monkeypatch):
    cli = _experiment_module()
    common = _TINY + ["--functions", "bald", "--rounds", "1", "--mixed-precision",
                      "--result_dir", str(tmp_path)]
    cli.main(common + ["--experiment", "1"])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    trained, original_train = [], cli.CNNRun.train

    def counted(self, labelled, round_index):
        trained.append((self.determ, self.trainer_policy()))
        return original_train(self, labelled, round_index)

    monkeypatch.setattr(cli.CNNRun, "train", counted)
    monkeypatch.setattr(cli.CNNRun, "trainer_policy",
                        lambda self: keras.mixed_precision.global_policy().name, raising=False)
    table = cli.main(common + ["--experiment", "2"])
    # The MC-dropout run is Experiment 1's (copied, not retrained); only the twin trains.
    assert trained == [(True, "mixed_bfloat16")] * 2
    exp1 = json.loads((tmp_path / "exp1" / "bald_seed369" / "results.json").read_text())
    exp2 = json.loads((tmp_path / "exp2" / "bald_mc_seed369" / "results.json").read_text())
    assert exp2["history"] == exp1["history"] and exp2["config"]["experiment"] == 2
    assert exp1["config"]["mixed_precision"] is True
    assert set(table) == {"bald_mc", "bald_determ"}


@pytest.mark.real_data
@pytest.mark.slow
def test_experiment_3_mbr_and_experiment_2_determ(tmp_path):
    cli = _experiment_module()
    table = cli.main(_TINY + ["--experiment", "3", "--functions", "var_ratios", "mbr",
                              "--rounds", "1",
                              "--mbr-graph-size", "60", "--result_dir", str(tmp_path)])
    assert set(table) == {"var_ratios", "mbr"}
    mbr = json.loads((tmp_path / "exp3" / "mbr_seed369" / "results.json").read_text())
    assert len(mbr["history"][0]["acquired"]) == 5
    assert 0.5 <= mbr["history"][-1]["metrics"]["test/accuracy"] <= 1.0
    table = cli.main(_TINY + ["--experiment", "2", "--functions", "max_entropy", "--rounds", "1",
                              "--result_dir", str(tmp_path)])
    assert set(table) == {"max_entropy_mc", "max_entropy_determ"}
    keras.backend.clear_session()


def strategy_run(result_dir, strategy):
    """A one-round run with ``--strategy`` (in this process, or with 2 replicas by the
    ``two_replicas`` fixture): its saved history and table, and the replica count."""
    from ddu_tf import distribute

    cli = _experiment_module()
    table = cli.main(_TINY + ["--experiment", "1", "--functions", "var_ratios", "--rounds", "1",
                              "--strategy", strategy, "--result_dir", result_dir])
    with open(os.path.join(result_dir, "exp1", "var_ratios_seed369", "results.json")) as f:
        saved = json.load(f)
    return {"history": saved["history"], "table": table,
            "replicas": distribute.get_strategy(strategy).num_replicas_in_sync}


@pytest.mark.real_data
@pytest.mark.slow
def test_strategy_path_with_two_replicas(tmp_path, two_replicas):
    # Under --strategy mirrored (2 logical CPUs) the compiled trainer builds the CNN in
    # strategy.scope() and splits every batch over the replicas; the MC-dropout scoring is
    # sharded; the loop and the results are shared with the one-device path.
    run = two_replicas("test_bayesian_al:strategy_run", str(tmp_path), "mirrored")
    assert run["replicas"] == 2
    history = run["history"]
    assert [r["num_acquired"] for r in history] == [0, 5]
    assert len(set(history[0]["acquired"])) == 5
    assert 0.0 <= history[-1]["metrics"]["test/accuracy"] <= 1.0
    assert run["table"]["var_ratios"]["rounds_done"] == [1]


@pytest.mark.real_data
def test_tuner_trial_trains_what_a_run_with_its_weight_decay_trains(tmp_path):
    """Issue 20: a keras-tuner trial is the run's own round 0 with the trial's weight decay
    (same compiled trainer, seed, data, decay placement), scored on the validation points."""
    cli = _experiment_module()
    args = cli.parse_args(_TINY + ["--experiment", "1", "--functions", "bald", "--rounds", "1",
                                   "--tune-trials", "2", "--result_dir", str(tmp_path)])
    data = cli.load_data(args)
    state = cli.make_state(args, data, 369)
    tuning = cli.CNNRun(args, data, state, "bald", False, 369, None, str(tmp_path))
    tuner = cli.weight_decay_tuner(tuning, args, state.labelled, 0, str(tmp_path / "tuner"))
    tuner.search()
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2
    last = max(trials, key=lambda t: int(t.trial_id))
    decay = last.hyperparameters.get("weight_decay")
    assert 0.035 <= decay <= 35.0
    run = cli.CNNRun(args, data, state, "bald", False, 369, decay, str(tmp_path))
    model = run.train(np.asarray(state.labelled, np.int64), 0)
    for ours, trial in zip(model.get_weights(), tuning.trainer.model.get_weights()):
        np.testing.assert_array_equal(ours, trial)
    assert last.score == run.evaluate(model, 0)["val/accuracy"]
    best = float(tuner.get_best_hyperparameters(1)[0].get("weight_decay"))
    assert best in {t.hyperparameters.get("weight_decay") for t in trials}


def _fake_run(path, seed, errors, experiment=1, acquisition="bald", seconds=6.0, **config):
    history = [{"round": r, "num_labelled": 20 + 10 * r, "num_acquired": 10 * r,
                "metrics": {"test/error": e, "test/accuracy": 1 - e}, "acquired": [],
                "train_seconds": 1.0, "round_seconds": seconds} for r, e in enumerate(errors)]
    config = {"seed": seed, "experiment": experiment, "acquisition": acquisition, **config}
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"config": config, "state": {},
                                                   "history": history}))


def test_report_aggregates_seeds_with_sample_std(tmp_path):
    cli = _experiment_module()
    exp1 = tmp_path / "exp1"
    _fake_run(exp1 / "bald_seed369", 369, [0.5, 0.2, 0.09, 0.04, 0.03])
    _fake_run(exp1 / "bald_seed370", 370, [0.5, 0.08, 0.06, 0.05, 0.02])
    _fake_run(exp1 / "bald_seed371", 371, [0.5, 0.3, 0.2, 0.095, 0.06])  # never <= 5%
    _fake_run(exp1 / "random_seed369", 369, [0.5, 0.4], acquisition="random", seconds=30.0)
    tuned = tmp_path / "tuned_wd" / "exp1" / "bald_seed369"
    _fake_run(tuned, 369, [0.5, 0.07])
    (tuned / "weight_decay.json").write_text(json.dumps({"per_round": {
        "0": {"weight_decay": cli.WEIGHT_DECAY_RANGE[0], "trials": []},
        "1": {"weight_decay": 2.0, "trials": []}}}))
    _fake_run(tmp_path / "exp4" / "bald_seed369", 369, [0.5, 0.3, 0.08], experiment=4,
              tune_every=10, tune_trials=4)
    text = cli.write_report(cli.parse_args(["--report", "--result_dir", str(tmp_path)]))
    assert "re-tuned every 10 rounds by 4 keras-tuner trials of" in text  # from the runs' configs
    assert "| bald | 1 | 2 | 20 | not reached |" in text and "| 1.80 |" in text  # Table 2
    table = json.loads((exp1 / "table.json").read_text())
    bald = table["bald"]
    assert bald["to_10pct_error"]["per_seed"] == [20, 10, 30]
    assert bald["to_10pct_error"]["mean"] == pytest.approx(20.0)
    assert bald["to_10pct_error"]["std"] == pytest.approx(np.std([20, 10, 30], ddof=1))
    assert bald["to_5pct_error"]["per_seed"] == [30, 30, None]
    assert bald["to_5pct_error"]["mean"] is None  # one seed has not got there
    assert bald["rounds_done"] == [4, 4, 4]
    assert table["random"]["wall_minutes"]["mean"] == pytest.approx(2 * 30.0 / 60)
    assert "| bald | 3 | 4 | 20 +- 10 | not reached |" in text
    assert "145 / 335" in text  # the paper's Table 1 beside ours
    assert "tuned_wd/exp1/test_accuracy.png" in text
    # seed-matched comparison: seed 369's fixed run cut to the tuned run's 2 rounds (0.5,
    # 0.2: 10% not reached) beside the tuned run (0.07 at 10 acquired); no wall time column
    empty = "  |" * 6  # 5 error columns (fewer than 100 acquired) and the paper's column
    assert "\n| bald, fixed 3.5 / N_train | 1 | 1 | not reached | not reached |" + empty + "\n" \
        in text
    assert "\n| bald, tuned every round | 1 | 1 | 10 | not reached |" + empty + "\n" in text
    assert "bald: median 1.02 over 2 rounds, 1 of them at 0.035" in text
    assert (exp1 / "test_accuracy.png").stat().st_size > 0
    assert (tmp_path / "README.md").read_text() == text


def test_report_names_the_seed_count_of_a_cell_a_running_seed_has_not_reached(tmp_path):
    """A seed still running (4 rounds) counts in the row's seeds but not in the error at 100
    acquired images nor in the wall time, and those cells say so."""
    cli = _experiment_module()
    exp1 = tmp_path / "exp1"
    _fake_run(exp1 / "random_seed369", 369, [0.5] * 10 + [0.2], acquisition="random",
              seconds=60.0)
    _fake_run(exp1 / "random_seed370", 370, [0.5] * 10 + [0.4], acquisition="random",
              seconds=120.0)
    _fake_run(exp1 / "random_seed371", 371, [0.5] * 5, acquisition="random", seconds=6.0)
    text = cli.write_report(cli.parse_args(["--report", "--result_dir", str(tmp_path)]))
    row = json.loads((exp1 / "table.json").read_text())["random"]
    at_100 = row["error_pct_at"]["100"]
    assert at_100["seeds"] == 2
    assert at_100["mean"] == pytest.approx(30.0)
    assert at_100["std"] == pytest.approx(np.std([20.0, 40.0], ddof=1))
    assert row["wall_minutes"]["seeds"] == 2
    assert row["wall_minutes"]["mean"] == pytest.approx((11 * 60 + 11 * 120) / 60 / 2)
    assert ("| random | 3 | 4/10 | not reached | not reached | 30.00 +- 14.14 (2 of 3 seeds) |"
            + "  |" * 4 + " 255 / 835 | 16.5 (2 of 3 seeds) |") in text


@pytest.mark.slow  # ~30 s; test_tuner_trial_trains_what_a_run_with_its_weight_decay_trains stays
@pytest.mark.real_data
def test_per_round_tuning_and_deterministic_test_pass(tmp_path):
    """--tune-every 1 tunes at every round with the run's own fit and keeps the choice for a
    resumed round; --test-eval both adds the deterministic pass (dropout off)."""
    cli = _experiment_module()
    def argv(rounds):
        return _TINY + ["--experiment", "1", "--functions", "random", "--rounds", str(rounds),
                        "--tune-weight-decay", "--tune-every", "1", "--tune-trials", "2",
                        "--test-eval", "both", "--result_dir", str(tmp_path)]

    cli.main(argv(1))
    run_dir = tmp_path / "exp1" / "random_seed369"
    tuned = json.loads((run_dir / "weight_decay.json").read_text())["per_round"]
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["config"]["tune_every"] == 1 and saved["config"]["test_eval"] == "both"
    for record in saved["history"]:
        entry = tuned[str(record["round"])]
        assert len(entry["trials"]) == 2
        assert entry["weight_decay"] == max(entry["trials"], key=lambda t: t[1])[0]
        assert record["metrics"]["train/weight_decay"] == entry["weight_decay"]
    # The deterministic pass equals Keras' own inference call of the trained model.
    args = cli.parse_args(argv(1))
    data = cli.load_data(args)
    state = cli.make_state(args, data, 369)
    run = cli.CNNRun(args, data, state, "random", False, 369, 3.5, str(tmp_path / "x"))
    model = run.fit(np.asarray(state.labelled, np.int64), 0)
    x_test, y_test = data[2][state.test], data[3][state.test]
    expected = np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)
    assert run.split_metrics("test", 0, deterministic=True)["test/accuracy"] == expected
    # Resuming with more rounds reuses the saved choices (no new trials for rounds 0-1).
    calls = []
    original = cli.tune_weight_decay
    cli.tune_weight_decay = lambda *a, **k: calls.append(a[3]) or original(*a, **k)
    cli.main(argv(2))
    assert calls == [2]


@pytest.mark.slow  # a subprocess + 2 runs: ~2-3 min on the loaded 2-core machine
@pytest.mark.parametrize("reinit", ["--reinit", "--no-reinit"])
def test_run_killed_at_a_random_point_resumes_exactly(tmp_path, mnist_data_dir, reinit):
    """The CLI SIGKILLed a random delay after its first round was saved, then the same command
    again: results.json equals the uninterrupted run's (timings aside), no temporary file;
    with --no-reinit (each round continues the previous round's weights) as well."""
    cli = _experiment_module()

    def argv(out):
        return _TINY + ["--experiment", "1", "--acq_func", "3", "--rounds", "3", reinit,
                        "--data-dir", str(mnist_data_dir), "--result_dir", str(out)]

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    cli.main(argv(reference))
    saved = resumed / "exp1" / "bald_seed369" / "results.json"
    start_and_kill([ROOT / "experiments" / "bayesian_al.py", *argv(resumed)],
                   ready=saved.exists, seed=13, max_delay=2.0, log_path=tmp_path / "killed.log")
    cli.main(argv(resumed))
    ours, theirs = (json.loads((d / "exp1" / "bald_seed369" / "results.json").read_text())
                    for d in (resumed, reference))
    assert [r["round"] for r in ours["history"]] == [0, 1, 2, 3]
    assert without_timings(ours) == without_timings(theirs)
    assert leftover_temporaries(resumed) == []
    kept = sorted(p.name for p in (resumed / "exp1" / "bald_seed369").glob("*.weights.h5"))
    assert kept == ([] if reinit == "--reinit"
                    else ["weights_round2.weights.h5", "weights_round3.weights.h5"])


def test_mbr_test_predictions_use_the_initial_sets_class_prior():
    """CMN takes the class-1 share of the random initial set, not of the (actively chosen)
    labelled set: acquiring only class-1 points must not move it."""
    from ddu_tf.active_learning import initial_state
    from ddu_tf.active_learning.acquisition import harmonic_solution

    cli = _experiment_module()
    rng = np.random.default_rng(0)
    y_train = np.repeat([0, 1], 40)
    x_train = rng.normal(size=(80, 3)) + 2.5 * y_train[:, None]
    y_test = np.repeat([0, 1], 15)
    x_test = rng.normal(size=(30, 3)) + 2.5 * y_test[:, None]
    state = initial_state(y_train, num_initial=4, num_validation=0, test_size=30, seed=1)
    run = cli.MBRRun((x_train, y_train, x_test, y_test), state, num_neighbors=5)
    assert run.prior == 0.5  # (2 + 1) / (4 + 2): a balanced initial set, Laplace-smoothed
    ones = [i for i in state.pool if y_train[i] == 1][:12]
    nodes = run.train(np.concatenate([state.labelled, ones]), 1)
    metrics = run.evaluate(nodes, 1)
    assert run.prior == 0.5
    # Hand-made CMN (Zhu et al. 2003) with the prior 0.5 on the same harmonic solution.
    unlabelled, f_u, _ = harmonic_solution(run.weights, nodes, y_train[run.nodes[nodes]])
    f_test = f_u[np.searchsorted(unlabelled, np.arange(len(run.nodes), run.weights.shape[0]))]
    def cmn_accuracy(prior):
        predicted = prior * f_test / f_u.sum() > (1 - prior) * (1 - f_test) / (1 - f_u).sum()
        return np.mean(predicted == y_test[state.test])

    assert metrics["test/accuracy"] == pytest.approx(cmn_accuracy(0.5))
    # The labelled share, (2 + 12 + 1) / (16 + 2), would predict otherwise here.
    assert cmn_accuracy(15 / 18) != pytest.approx(cmn_accuracy(0.5))
