"""The Bayesian CNN and the experiment CLI end to end on tiny MNIST runs (with resume), its
weight-decay tuner, and --strategy mirrored with 2 replicas."""
import json
import os

import keras
import numpy as np
import pytest

from ddu_tf.models.bayesian_cnn import ALL_DECAY_LAYERS, bayesian_cnn
from experiment_scripts import load_experiment_script


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
    assert table["bald"]["rounds_done"] == 2
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
    table = cli.main(_TINY + ["--experiment", "3", "--functions", "var_ratios", "--rounds", "1",
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
    assert run["table"]["var_ratios"]["rounds_done"] == 1


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
