"""Tests for ddu_tf.training and experiments/train.py: PyTorch-faithful optimizers and lr
schedule, checkpoint names, callbacks, augmentation, flag validation, tiny training runs on
MNIST-1D and a mock CIFAR-10, and resuming an interrupted run."""
import io
import json
import math
import os
import re

import numpy as np
import pytest

import keras
import tensorflow as tf
import tensorflow_datasets as tfds

from ddu_tf import data as ddu_data
from ddu_tf import experiment_data, training
from experiment_scripts import ROOT, leftover_temporaries, start_and_kill


@pytest.fixture
def train_script(experiment_script):
    return experiment_script("train")


# ----- optimizers against hand-written PyTorch update rules -----

def _torch_sgd_reference(w, grads, lr, momentum, wd, nesterov):
    """torch.optim.SGD (dampening 0) on numpy arrays."""
    buf = None
    for g in grads:
        d = g + wd * w
        buf = d.copy() if buf is None else momentum * buf + d
        step = d + momentum * buf if nesterov else buf
        w = w - lr * step
    return w


@pytest.mark.parametrize("nesterov", [False, True])
def test_torch_sgd_matches_pytorch_rule(nesterov):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 2)).astype("float32")
    grads = [rng.normal(size=(3, 2)).astype("float32") for _ in range(4)]
    var = keras.Variable(w0)
    opt = training.TorchSGD(learning_rate=0.1, momentum=0.9, nesterov=nesterov,
                            coupled_weight_decay=5e-4)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), var)])
    expected = _torch_sgd_reference(w0.astype("float64"), grads, 0.1, 0.9, 5e-4, nesterov)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_torch_adam_adds_l2_to_the_gradient():
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(4,)).astype("float32")
    grads = [rng.normal(size=(4,)).astype("float32") for _ in range(3)]
    coupled, plain = keras.Variable(w0), keras.Variable(w0)
    opt_coupled = training.TorchAdam(learning_rate=1e-2, coupled_weight_decay=0.1)
    opt_plain = keras.optimizers.Adam(learning_rate=1e-2, epsilon=1e-8)
    for g in grads:
        opt_plain.apply_gradients([(tf.constant(g) + 0.1 * plain.value, plain)])
        opt_coupled.apply_gradients([(tf.constant(g), coupled)])
    np.testing.assert_allclose(coupled.numpy(), plain.numpy(), rtol=1e-6, atol=1e-7)


def test_make_optimizer_and_errors():
    opt = training.make_optimizer("sgd", lr=0.1, momentum=0.9, weight_decay=5e-4)
    assert isinstance(opt, training.TorchSGD) and opt.coupled_weight_decay == 5e-4
    restored = training.TorchSGD.from_config(opt.get_config())
    assert (restored.momentum, restored.nesterov, restored.coupled_weight_decay) == (0.9, False, 5e-4)
    assert isinstance(training.make_optimizer("adam", lr=1e-3), training.TorchAdam)
    with pytest.raises(ValueError, match="name='rmsprop'"):
        training.make_optimizer("rmsprop")
    with pytest.raises(ValueError, match="momentum"):
        training.TorchSGD(momentum=1.5)
    with pytest.raises(ValueError, match="coupled_weight_decay"):
        training.TorchSGD(coupled_weight_decay=-1.0)


def test_lr_schedule_is_multistep_per_epoch():
    steps = 7
    schedule = training.lr_schedule(3, 5, lr=0.1, steps_per_epoch=steps)
    for step in range(8 * steps):
        epoch = step // steps
        expected = 0.1 * 0.1 ** sum(epoch >= m for m in (3, 5))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6), step
    # Fractional milestones (a schedule compressed into one epoch): drops at round(m * steps).
    schedule = training.lr_schedule(0.5, 0.75, lr=0.1, steps_per_epoch=8)
    assert [round(float(schedule(t)), 6) for t in range(8)] == [0.1] * 4 + [0.01] * 2 + [0.001] * 2
    with pytest.raises(ValueError, match="first_milestone"):
        training.lr_schedule(5, 3, lr=0.1, steps_per_epoch=1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        training.lr_schedule(1, 2, lr=0.1, steps_per_epoch=0)


def _original_model_save_name(model_name, sn, mod, coeff, seed):
    """DDU utils/train_utils.py ``model_save_name`` (the naming scheme to follow)."""
    if sn:
        strn = "_sn_" + str(coeff) + ("_mod_" if mod else "_")
    else:
        strn = "_mod_" if mod else "_"
    return str(model_name) + strn + str(seed)


@pytest.mark.parametrize("sn", [False, True])
@pytest.mark.parametrize("mod", [False, True])
def test_checkpoint_name_follows_original(sn, mod):
    stem = _original_model_save_name("wide_resnet", sn, mod, 3.0, 4)
    assert training.checkpoint_name("wide_resnet", sn, mod, 3.0, 4, extension="") == stem
    assert training.checkpoint_name("wide_resnet", sn, mod, 3, 4, epoch=350) == stem + "_350.keras"


def test_make_callbacks(tmp_path):
    callbacks = training.make_callbacks(str(tmp_path), "run", save_interval=5)
    kinds = [type(c) for c in callbacks]
    # The backup last: an epoch is saved as finished only after its checkpoints are written.
    assert kinds == [keras.callbacks.TensorBoard, keras.callbacks.ModelCheckpoint,
                     training.EpochCheckpoint, training.ResumableBackup]
    assert callbacks[3].backup_dir == os.path.join(str(tmp_path), "backup", "run")
    assert callbacks[3].monitors == [callbacks[1]]
    assert callbacks[1].monitor == "val_accuracy"
    with pytest.raises(ValueError, match="run_name"):
        training.make_callbacks(str(tmp_path), "")


def test_random_crop_flip_is_a_padded_window():
    image = tf.reshape(tf.range(1, 6 * 6 * 2 + 1, dtype=tf.int32), (6, 6, 2))
    padded = np.pad(image.numpy(), ((4, 4), (4, 4), (0, 0)))
    windows = [w for i in range(9) for j in range(9)
               for w in (padded[i:i + 6, j:j + 6], padded[i:i + 6, j:j + 6][:, ::-1])]
    seeds = [tf.constant([7, k], tf.int64) for k in range(20)]
    outputs = [experiment_data.random_crop_flip(image, seed).numpy() for seed in seeds]
    for out in outputs:
        assert out.shape == (6, 6, 2)
        assert any(np.array_equal(out, w) for w in windows)
    assert len({o.tobytes() for o in outputs}) > 1
    again = [experiment_data.random_crop_flip(image, seed).numpy() for seed in seeds]
    np.testing.assert_array_equal(again, outputs)  # stateless: a pure function of the seed


def test_normalize_images():
    pixels = np.full((1, 2, 2, 3), 255, np.uint8)
    out = experiment_data.normalize_images(pixels).numpy()
    expected = (1.0 - np.array(experiment_data.DDU_IMAGE_MEAN)) / np.array(experiment_data.DDU_IMAGE_STD)
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-6)


# ----- experiments/train.py -----

def test_parser_defaults_match_original(train_script):
    args = train_script.parse_args(["--seed", "1"])
    assert (args.learning_rate, args.momentum, args.weight_decay, args.optimiser) == (0.1, 0.9, 5e-4, "sgd")
    assert (args.train_batch_size, args.epoch, args.first_milestone, args.second_milestone) == (128, 350, 150, 250)
    assert (args.coeff, args.sn, args.mod, args.data_aug, args.save_interval) == (3.0, False, False, True, 25)
    assert (args.dataset, args.model) == ("cifar10", "resnet50")
    assert (args.density_every, args.density_ood, args.density_samples) == (
        None, "fashion_mnist", 1000)  # the feature-density callback is off by default
    short = train_script.parse_args(["--seed", "2", "-sn", "-mod", "-e", "3", "-b", "64",
                                     "--model", "wide_resnet"])
    assert (short.sn, short.mod, short.epoch, short.train_batch_size) == (True, True, 3, 64)


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "imagenet"], "invalid choice"),
    (["--model", "resnet18", "--dataset", "mnist1d"], "does not fit"),
    (["--model", "resnet1d", "--dataset", "cifar10"], "does not fit"),
    (["--model", "lenet", "--dataset", "mnist", "-sn"], "lenet has no spectral"),
    (["--model", "lenet", "--dataset", "mnist", "-mod"], "lenet has no spectral"),
    (["--first-milestone", "300"], "must not exceed"),
    (["--lr", "-1"], "expected a number"),
    (["-b", "0"], "expected a positive integer"),
    (["--mom", "1.0"], "fraction"),
    ([], "--seed"),
])
def test_bad_flags_exit_with_message(train_script, capsys, argv, message):
    base = [] if not argv else ["--seed", "0"]
    with pytest.raises(SystemExit) as info:
        train_script.parse_args(base + argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_seeded_validation_split_matches_original(train_script):
    n = 50
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n) % 10
    ddu_data.register_source("ddu_test_split", lambda split, data_dir=None: (x, y))
    try:
        spec = experiment_data.DatasetSpec("ddu_test_split", 10, (2,))
        (xt, yt), (xv, yv) = experiment_data.train_validation_arrays(spec, seed=7, val_size=0.1)
    finally:
        ddu_data.unregister_source("ddu_test_split")
    np.random.seed(7)  # the original: np.random.seed(val_seed); np.random.shuffle(list)
    indices = list(range(n))
    np.random.shuffle(indices)
    assert list(yv) == [y[i] for i in indices[:5]] and len(yt) == 45
    np.testing.assert_array_equal(xt, x[indices[5:]])


def _argv(tmp_path, *extra):
    return ["--seed", "3", "--save-path", str(tmp_path) + os.sep, "--verbose", "0", *extra]


def test_tiny_mnist1d_run_saves_loadable_model(train_script, tmp_path, capsys):
    args = train_script.parse_args(_argv(
        tmp_path, "--dataset", "mnist1d", "--model", "resnet1d", "-sn", "-mod", "-e", "1",
        "--max-train-samples", "64", "--max-val-samples", "32", "-b", "32", "--save-interval", "1",
        "--verbose", "2", "--progress-every", "1"))
    model, history, final_path = train_script.run(args)
    assert "epoch 1/1 step 1/2: loss " in capsys.readouterr().out  # 2 steps: a line after 1
    assert final_path == os.path.join(str(tmp_path), "resnet1d_sn_3.0_mod_3_1.keras")
    for name in ("resnet1d_sn_3.0_mod_3_1.keras", "resnet1d_sn_3.0_mod_3_best.keras",
                 "resnet1d_sn_3.0_mod_3_history.json"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "stats_logging" / "resnet1d_sn_3.0_mod_3").is_dir()
    assert not (tmp_path / "backup" / "resnet1d_sn_3.0_mod_3").exists()  # removed on success
    restored = keras.saving.load_model(final_path)
    x = np.random.default_rng(0).normal(size=(2, 40)).astype("float32")
    np.testing.assert_allclose(restored(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    assert isinstance(restored.optimizer, training.TorchSGD)
    logged = json.loads((tmp_path / "resnet1d_sn_3.0_mod_3_history.json").read_text())
    assert logged["epochs"] == [0] and "val_accuracy" in logged["history"]


def test_step_progress_prints_every_n_steps():
    """40 examples in batches of 4 = 10 steps per epoch; a line after steps 3, 6, 9 of each."""
    stream = io.StringIO()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(40, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    progress = training.StepProgress(3, 10, 4, 2, stream=stream)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False, callbacks=[progress])
    lines = stream.getvalue().splitlines()
    pattern = re.compile(r"epoch (\d)/2 step (\d+)/10: loss ([0-9.]+) accuracy ([0-9.]+); "
                         r"([0-9.]+) examples/s, epoch ETA ([0-9.]+) min")
    matches = [pattern.fullmatch(line) for line in lines]
    assert all(matches), lines
    assert [(int(m[1]), int(m[2])) for m in matches] == [
        (e, s) for e in (1, 2) for s in (3, 6, 9)]
    assert all(0 <= float(m[4]) <= 1 and float(m[5]) > 0 for m in matches)
    with pytest.raises(ValueError, match="Expected every >= 1. Received: every=0"):
        training.StepProgress(0, 10, 4, 2)


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt(f"simulated interruption after epoch {epoch}")


class _EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_interrupted_run_resumes_from_backup(train_script, tmp_path):
    """Interrupted after epoch 1, the same command trains only epoch 2 and ends with the
    weights and history of the uninterrupted run (stateless per-epoch shuffle, restored
    optimiser and SN state)."""
    def argv_in(out):
        return _argv(out, "--dataset", "mnist1d", "--model", "resnet1d", "-sn", "-e", "3",
                     "--max-train-samples", "64", "--max-val-samples", "16", "-b", "32",
                     "--no-jit")

    reference, _, _ = train_script.run(train_script.parse_args(argv_in(tmp_path / "reference")))
    argv = argv_in(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train_script.run(train_script.parse_args(argv), extra_callbacks=[_Interrupt(at_epoch=1)])
    assert (tmp_path / "backup" / "resnet1d_sn_3.0_3").is_dir()
    assert not (tmp_path / "resnet1d_sn_3.0_3_3.keras").exists()
    recorder = _EpochRecorder()
    model, history, _ = train_script.run(train_script.parse_args(argv), extra_callbacks=[recorder])
    assert recorder.epochs == [2]  # epochs 0 and 1 were restored, not repeated
    assert history.epoch == [2]
    steps_per_epoch = math.ceil(64 / 32)
    assert int(model.optimizer.iterations.numpy()) == 3 * steps_per_epoch
    assert (tmp_path / "resnet1d_sn_3.0_3_3.keras").exists()
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    history = [json.loads((d / "resnet1d_sn_3.0_3_history.json").read_text())
               for d in (tmp_path, tmp_path / "reference")]
    assert history[0]["epochs"] == [0, 1, 2] and history[0]["history"] == history[1]["history"]


def _saved_weights(path):
    return keras.saving.load_model(path).get_weights()


@pytest.mark.slow  # a subprocess + 2 runs: ~2-3 min on the loaded 2-core machine
def test_run_killed_at_a_random_point_resumes_exactly(train_script, tmp_path, capsys):
    """A subprocess SIGKILLed a random delay after its first epoch's backup, then the same
    command again: every output equals the uninterrupted run's (final, best and periodic
    models bit for bit, the history of all epochs) and no temporary file is left."""
    def argv(out):
        return _argv(out, "--dataset", "mnist1d", "--model", "resnet1d", "-sn", "-mod",
                     "-e", "3", "--max-train-samples", "64", "--max-val-samples", "16",
                     "-b", "32", "--save-interval", "1", "--first-milestone", "2")

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    train_script.run(train_script.parse_args(argv(reference)))  # also builds MNIST-1D
    state = resumed / "backup" / "resnet1d_sn_3.0_mod_3" / "state.json"
    killed = start_and_kill([ROOT / "experiments" / "train.py", *argv(resumed)],
                            ready=state.exists, seed=11, max_delay=1.5,
                            log_path=tmp_path / "killed.log")
    capsys.readouterr()
    train_script.run(train_script.parse_args(argv(resumed)))
    if killed and state.exists():
        assert "resuming after epoch" in capsys.readouterr().out
    names = ["resnet1d_sn_3.0_mod_3_3.keras", "resnet1d_sn_3.0_mod_3_best.keras",
             *(f"resnet1d_sn_3.0_mod_3_{k}.keras" for k in (1, 2))]
    for name in names:
        for ours, theirs in zip(_saved_weights(resumed / name), _saved_weights(reference / name)):
            np.testing.assert_array_equal(ours, theirs, err_msg=name)
    history = [json.loads((d / "resnet1d_sn_3.0_mod_3_history.json").read_text())
               for d in (resumed, reference)]
    assert history[0]["epochs"] == history[1]["epochs"] == [0, 1, 2]
    assert history[0]["history"] == history[1]["history"]
    assert not (resumed / "backup" / "resnet1d_sn_3.0_mod_3").exists()
    assert leftover_temporaries(resumed) == []


@pytest.mark.parametrize("model_flags", [
    ["--model", "lenet"],
    pytest.param(["--model", "resnet18", "-sn", "-mod"], marks=pytest.mark.slow),
])
def test_tiny_mock_cifar10_run(train_script, tmp_path, model_flags):
    with tfds.testing.mock_data(num_examples=24):
        args = train_script.parse_args(_argv(tmp_path, "--dataset", "cifar10", *model_flags,
                                             "-e", "1", "-b", "8", "-tb", "8"))
        model, history, final_path = train_script.run(args)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)
    expected = training.checkpoint_name(args.model, args.sn, args.mod, 3.0, 3, epoch=1)
    assert os.path.basename(final_path) == expected
    assert np.isfinite(history.history["loss"][0]) and "val_loss" in history.history
    # 24 mock examples: floor(10%) = 2 held out for validation, 22 trained on (3 batches of 8).
    assert int(model.optimizer.iterations.numpy()) == 3


# ----- --density-callback-every: ddu_tf.training.FeatureDensityMonitor in train.py -----

def test_density_callback_flag_logs_history_json_and_tensorboard(train_script, tmp_path):
    args = train_script.parse_args(_argv(
        tmp_path, "--dataset", "mnist1d", "--model", "mlp", "-e", "2", "--no-jit", "--max-train-samples",
        "200", "--max-val-samples", "100", "-b", "50", "--density-callback-every", "1",
        "--density-callback-ood", "mnist1d", "--density-callback-samples", "150"))
    _, history, _ = train_script.run(args)
    keys = training.FeatureDensityMonitor.LOG_KEYS
    for key in keys:
        assert len(history.history[key]) == 2 and np.all(np.isfinite(history.history[key]))
    for key in ("density_auroc", "entropy_auroc"):
        assert all(0.0 <= v <= 1.0 for v in history.history[key])
    logged = json.loads((tmp_path / "mlp_3_history.json").read_text())
    assert logged["density_callback_epochs"] == [0, 1]
    assert logged["history"]["density_auroc"] == pytest.approx(history.history["density_auroc"])
    tags = {}
    log_dir = tmp_path / "stats_logging" / "mlp_3" / "feature_density"
    for path in log_dir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                tags.setdefault(v.tag, []).append(event.step)
    assert tags == {f"feature_density/{key}": [0, 1] for key in keys}


def test_density_monitor_data_errors(tmp_path, monkeypatch):
    arrays = (np.zeros((4, 28, 28, 1), np.float32), np.arange(4))
    with pytest.raises(ValueError, match="input shape"):
        experiment_data.density_monitor_data("mnist1d", "fashion_mnist", arrays, arrays,
                                             samples=4, seed=0, batch_size=2)
    monkeypatch.setenv("DDU_TF_DATA_DIR", str(tmp_path))  # no IDX files anywhere
    with pytest.raises(ValueError, match="'fashion_mnist' to be readable offline"):
        experiment_data.density_monitor_data("mnist", "fashion_mnist", arrays, arrays, samples=4,
                                             seed=0, batch_size=2, data_dir=str(tmp_path))
