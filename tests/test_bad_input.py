"""Bad input through the public entry points and the commands (issue #19, item 4).

Each case of ``docs/bad_input.md`` once: the exact exception type and the key words of its
message (what was expected, what to do). Commands run in-process through ``ddu_tf.cli.run``
-- exactly what their ``__main__`` block does -- and must exit with status 2 and the message
on stderr; one subprocess run checks the real ``python experiments/<script>.py`` path prints
no traceback. Data files are crafted in ``tmp_path``: no real MNIST is needed.
"""
import ast
import gzip
import shutil
import struct
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import ddu_tf  # noqa: F401  (registers the TFDS builders)
from ddu_tf import cli, data
from ddu_tf.active_learning import ActiveLearningLoop, PoolState, select_top_k
from ddu_tf.ddu_classifier import fit_ddu
from ddu_tf.density import ClassConditionalGaussians
from ddu_tf.io import mnist_idx
from ddu_tf.layers import SpectralNormalization
from ddu_tf.models import get_model
from experiment_scripts import ROOT, load_experiment_script, subprocess_env

# ----------------------------------------------------------------------------- helpers


def _run_cli(script, argv, capsys):
    """``cli.run(main, argv)`` of ``experiments/<script>.py``: returns its stderr after
    asserting the exit status 2 of a rejected command."""
    main = load_experiment_script(script).main
    with pytest.raises(SystemExit) as exit_:
        cli.run(main, argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def _idx_bytes(dims, payload):
    """An IDX file of unsigned bytes: magic, big-endian dims, data."""
    return struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + payload


def _manual_dir(tmp_path, split, images_gz):
    """``<tmp>/mnist/`` with ``images_gz`` as the split's image file and a well-formed (but
    not official) label file."""
    root = tmp_path / "manual"
    (root / "mnist").mkdir(parents=True)
    images, labels = mnist_idx.FILES[split]
    n = mnist_idx.NUM_EXAMPLES[split]
    (root / "mnist" / f"{images}.gz").write_bytes(images_gz)
    (root / "mnist" / f"{labels}.gz").write_bytes(
        gzip.compress(_idx_bytes((n,), bytes(n))))
    return root


@pytest.fixture(scope="module")
def mnist1d_prepared(tmp_path_factory):
    """A TFDS data dir holding a freshly built ``mnist1d`` (4000 / 1000 signals)."""
    root = tmp_path_factory.mktemp("tfds_clean")
    data.tfds_builder("mnist1d", data_dir=str(root))
    return root


def _damage(clean, tmp_path, how):
    """A copy of the prepared TFDS dir ``clean`` damaged ``how``; returns (data_dir,
    version directory)."""
    root = tmp_path / "tfds"
    shutil.copytree(clean, root)
    (version,) = (root / "mnist1d" / "default").iterdir()
    shard = version / "mnist1d-train.tfrecord-00000-of-00001"
    if how == "truncated_shard":
        with open(shard, "r+b") as handle:
            handle.truncate(shard.stat().st_size // 2)
    elif how == "missing_shard":
        shard.unlink()
    elif how == "missing_info":
        (version / "dataset_info.json").unlink()
    elif how == "unreadable_info":
        (version / "dataset_info.json").write_text("{not json")
    elif how == "overwritten_records":  # same size: found only while reading
        with open(shard, "r+b") as handle:
            handle.seek(shard.stat().st_size // 2)
            handle.write(b"\xff" * 64)
    return root, version


# ----------------------------------------------------------------------------- names


def test_unknown_dataset_name_in_data_load():
    with pytest.raises(ValueError, match="Unknown data set") as e:
        data.load("mnist_1d", "train", batch_size=8)
    message = str(e.value)
    assert "name='mnist_1d'" in message and "'mnist1d'" in message
    assert "register_source" in message and "Available datasets" not in message


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"Unknown model\. Expected one of .*'resnet18'"):
        get_model("resnet19", num_classes=10, input_shape=(28, 28, 1))


@pytest.mark.parametrize("script, argv, words", [
    ("train", ["--seed", "0", "--dataset", "cifar-11"], ["--dataset", "invalid choice"]),
    ("train", ["--seed", "0", "--model", "resnet19"], ["--model", "invalid choice"]),
    ("ddu_active_learning", ["--seed", "0", "--model", "resnet19"],
     ["Expected --model in", "Received: 'resnet19'"]),
])
def test_unknown_names_on_the_command_line(script, argv, words, capsys):
    err = _run_cli(script, argv, capsys)
    assert all(word in err for word in words), err


# ----------------------------------------------------------------------------- flags


@pytest.mark.parametrize("script, argv, words", [
    ("train", ["--seed", "0", "--model", "lenet", "-sn", "--dataset", "mnist"],
     ["lenet has no spectral-normalised", "use resnet18"]),
    ("train", ["--seed", "0", "--model", "resnet18", "--dataset", "mnist1d"],
     ["does not fit --dataset mnist1d", "use one of the sequence models"]),
    ("ddu_active_learning", ["--seed", "0", "-mi"], ["-mi needs --al-type ensemble"]),
    ("ddu_active_learning", ["--seed", "0", "--acquisition-batch-size", "10",
                             "--pool-subset", "5"],
     ["Expected --pool-subset >= --acquisition-batch-size", "Raise --pool-subset"]),
    ("bayesian_al", ["--query", "10", "--pool-subset", "5"],
     ["Expected --pool-subset >= --query", "Received: --pool-subset=5, --query=10"]),
    ("batchbald_mnist", ["--acquisition-size", "10", "--pool-subset", "5", "--max-labels", "30"],
     ["Expected --pool-subset >= --acquisition-size"]),
])
def test_flag_combinations_that_cannot_work(script, argv, words, capsys):
    err = _run_cli(script, argv, capsys)
    assert all(word in err for word in words), err


def test_demo_refuses_more_acquisitions_than_pool_before_training(mnist1d_prepared, tmp_path,
                                                                  capsys):
    err = _run_cli("demo", ["--data-dir", str(mnist1d_prepared), "--output-dir",
                            str(tmp_path), "--al-rounds", "400", "--al-acquire", "10"], capsys)
    assert ("Expected a pool of at least --al-acquire x --al-rounds = 10 x 400 = 4000 points"
            in err and "a pool of 3980 points" in err), err
    assert not (tmp_path / "tensorboard").exists()  # stopped before training


# ----------------------------------------------------------------------------- IDX files


def test_truncated_idx_file(tmp_path, capsys):
    full = gzip.compress(_idx_bytes((10000, 28, 28), bytes(10000 * 28 * 28)))
    root = _manual_dir(tmp_path, "test", full[: len(full) // 2])
    with pytest.raises(mnist_idx.IdxFormatError, match="corrupt or truncated gzip file") as e:
        data.load("mnist", "test", batch_size=8, data_dir=str(root))
    assert "t10k-images-idx3-ubyte.gz" in str(e.value)


def test_wrong_idx_file_fails_its_checksum(tmp_path):
    root = _manual_dir(tmp_path, "test", gzip.compress(_idx_bytes((3,), b"abc")))
    with pytest.raises(mnist_idx.IdxChecksumError,
                       match=r"SHA-256 .* expected .* delete it and download it again"):
        data.load("mnist", "test", batch_size=8, data_dir=str(root))


def test_truncated_idx_file_on_the_command_line(tmp_path, capsys):
    full = gzip.compress(_idx_bytes((60000, 28, 28), bytes(60000 * 28 * 28)))
    root = _manual_dir(tmp_path, "train", full[: len(full) // 2])
    err = _run_cli("train", ["--seed", "0", "--dataset", "mnist", "--model", "lenet",
                             "--dataset-root", str(root), "--save-path", str(tmp_path)], capsys)
    assert "train-images-idx3-ubyte.gz: corrupt or truncated gzip file" in err, err


# ----------------------------------------------------------------------------- TFDS dirs


@pytest.mark.parametrize("how, words", [
    ("truncated_shard", ["split 'train' files of 412000 bytes", "records 824000",
                         "truncated"]),
    ("missing_shard", ["without its files ['mnist1d-train.tfrecord-00000-of-00001']"]),
    ("missing_info", ["no dataset_info.json"]),
    ("unreadable_info", ["files TFDS cannot read"]),
])
def test_corrupted_prepared_tfds_directory(mnist1d_prepared, tmp_path, how, words):
    root, version = _damage(mnist1d_prepared, tmp_path, how)
    with pytest.raises(ValueError, match="Expected a complete prepared TFDS data set") as e:
        data.load("mnist1d", "train", batch_size=100, data_dir=str(root))
    message = str(e.value)
    named = version if how != "unreadable_info" else root / "mnist1d"
    assert f"delete it (rm -r {named})" in message and "rebuild" in message, message
    assert all(word in message for word in words), message


def test_rebuild_after_deleting_the_named_directory(mnist1d_prepared, tmp_path):
    root, version = _damage(mnist1d_prepared, tmp_path, "truncated_shard")
    with pytest.raises(ValueError, match="delete it"):
        data.load("mnist1d", "train", batch_size=1000, data_dir=str(root))
    shutil.rmtree(version)
    assert sum(int(x.shape[0]) for x, _ in data.load("mnist1d", "train", batch_size=1000,
                                                       data_dir=str(root))) == 4000


@pytest.mark.parametrize("how, words", [
    ("truncated_shard", ["Expected a complete prepared TFDS data set", "delete it"]),
    ("overwritten_records", ["corrupt record", "delete the data set's directory",
                             "rebuild"]),
])
def test_corrupted_tfds_directory_on_the_command_line(mnist1d_prepared, tmp_path, capsys,
                                                      how, words):
    root, _ = _damage(mnist1d_prepared, tmp_path, how)
    err = _run_cli("train", ["--seed", "0", "--dataset", "mnist1d", "--model", "logistic",
                             "--dataset-root", str(root), "--save-path", str(tmp_path / "out"),
                             "-e", "1", "--verbose", "0"], capsys)
    assert all(word in err for word in words), err


# ----------------------------------------------------------------------------- GMM


def _features(n_per_class=5, classes=3, dim=4):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n_per_class * classes, dim)),
            np.repeat(np.arange(classes), n_per_class))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_into_the_gmm(bad):
    features, labels = _features()
    features[4, 2] = bad
    with pytest.raises(ValueError, match=r"Expected finite features\. Received 1 NaN/Inf"):
        ClassConditionalGaussians.fit(features, labels, num_classes=3)
    gmm = ClassConditionalGaussians.fit(*_features(), num_classes=3)
    with pytest.raises(ValueError, match="Expected finite features"):
        gmm.log_density(features)


def test_non_finite_inputs_into_fit_ddu():
    """The streamed (strategy) fit checks finiteness in the graph; the error is still a
    plain ValueError, not TensorFlow's InvalidArgumentError."""
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="feat")(inputs)
    classifier = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    x = np.ones((8, 3), np.float32)
    x[5, 1] = np.nan
    batches = tf.data.Dataset.from_tensor_slices((x, np.arange(8) % 2)).batch(4)
    with pytest.raises(ValueError, match=r"Expected finite features\. Received NaN/Inf "
                                         r"features from feature_fn"):
        fit_ddu(classifier, batches, features="feat", num_classes=2)


def test_class_with_fewer_than_two_samples():
    features, labels = _features()
    labels[labels == 1] = 2
    labels[0] = 1  # class 1: one sample
    with pytest.raises(ValueError, match=r"at least 2 samples per class.*counts \[1\] for "
                                         r"classes \[1\]"):
        ClassConditionalGaussians.fit(features, labels, num_classes=3)


def test_wrong_shapes_into_the_gmm():
    features, labels = _features()
    with pytest.raises(ValueError, match=r"Expected features of shape \[batch, dim\].*"
                                         r"flatten or reshape"):
        ClassConditionalGaussians.fit(features[..., None], labels, num_classes=3)
    gmm = ClassConditionalGaussians.fit(features, labels, num_classes=3)
    with pytest.raises(ValueError, match=r"Expected features of shape \[batch, 4\]\. "
                                         r"Received: \(15, 3\)"):
        gmm.log_density(features[:, :3])


# ----------------------------------------------------------------------------- SN layer


def test_wrong_input_rank_into_the_sn_layer():
    layer = SpectralNormalization(keras.layers.Conv2D(4, 3))
    with pytest.raises(ValueError, match="expected ndim=4, found ndim=2"):
        layer(np.zeros((2, 5), np.float32))


def test_wrong_feature_count_after_build_into_the_sn_layer():
    layer = SpectralNormalization(keras.layers.Dense(4))
    layer(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 5"):
        layer(np.zeros((2, 6), np.float32))


def test_unsupported_layer_into_the_sn_layer():
    with pytest.raises(ValueError, match="Expected layer to be a keras.layers.Dense"):
        SpectralNormalization(keras.layers.MaxPooling2D())


# ----------------------------------------------------------------------------- pools


def _loop(pool, **kwargs):
    state = PoolState(labelled=[0, 1], pool=pool, validation=[], test=[])
    return ActiveLearningLoop(state, train_fn=lambda labelled, r: None,
                              evaluate_fn=lambda model, r: {},
                              score_fn=lambda model, c, r: np.zeros(len(c)), **kwargs)


def test_empty_pool():
    with pytest.raises(ValueError, match=r"Expected a pool of at least .* = 2 points to "
                                         r"acquire\. Received: an empty pool"):
        _loop([], acquisition_size=1, num_rounds=2)
    with pytest.raises(ValueError, match="Received: k=1 for an empty pool"):
        select_top_k([], 1)
    assert _loop([], acquisition_size=1, num_rounds=0).run()[0]["acquired"] == []


def test_more_acquisitions_than_pool_points():
    with pytest.raises(ValueError, match=r"2 x 3 = 6 points to acquire\. Received: a pool of "
                                         r"3 points\. Lower num_rounds"):
        _loop([2, 3, 4], acquisition_size=2, num_rounds=3)
    with pytest.raises(ValueError, match=r"Expected pool_subset_size >= acquisition_size"):
        _loop(list(range(2, 50)), acquisition_size=5, num_rounds=1, pool_subset_size=3)
    with pytest.raises(ValueError, match="Received: k=3 for 2 candidates"):
        select_top_k([0.5, 0.1], 3)
    history = _loop([2, 3, 4, 5], acquisition_size=2, num_rounds=2).run()
    assert [len(r["acquired"]) for r in history] == [2, 2, 0]


# ----------------------------------------------------------------------------- wiring


@pytest.mark.parametrize("script", sorted(p.stem for p in (ROOT / "experiments").glob("*.py")))
def test_every_script_runs_main_through_cli_run(script):
    """The ``__main__`` block of every experiment is ``cli.run(main)``."""
    tree = ast.parse((ROOT / "experiments" / f"{script}.py").read_text())
    (block,) = [node for node in tree.body if isinstance(node, ast.If)
                and ast.unparse(node.test) == "__name__ == '__main__'"]
    assert "cli.run(main)" in [ast.unparse(stmt) for stmt in block.body]


def test_command_prints_one_line_without_traceback():
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "ddu_active_learning.py"), "--seed", "0",
         "-mi"], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert ("ddu_active_learning.py: error: -mi needs --al-type ensemble. Received: "
            "--al-type softmax" in result.stderr)
    assert "Traceback" not in result.stderr


def test_traceback_env_var_keeps_the_traceback(monkeypatch, capsys):
    def main(argv):
        data.unregister_source("no-such-source")  # the package's own bad-input ValueError

    monkeypatch.setenv(cli.TRACEBACK_ENV_VAR, "1")
    with pytest.raises(ValueError, match="No source registered"):
        cli.run(main, [])
    monkeypatch.delenv(cli.TRACEBACK_ENV_VAR)
    with pytest.raises(SystemExit):
        cli.run(main, [])
    assert "error: No source registered under name='no-such-source'" in capsys.readouterr().err


def test_value_error_inside_a_library_is_a_bug_with_its_traceback():
    # NumPy's ValueError from our call is not the user's bad input: it keeps its traceback
    def main(argv):
        return np.reshape(np.zeros(3), (2, 2))

    with pytest.raises(ValueError, match="reshape"):
        cli.run(main, [])
    # FileNotFoundError wherever raised (a path the user gave) stays one line
    def missing(argv):
        return np.load("/nonexistent/ddu_tf/file.npy")

    with pytest.raises(SystemExit):
        cli.run(missing, [])


def test_data_loss_message_says_what_to_do():
    error = tf.errors.DataLossError(None, None, "corrupted record at 12")
    message = cli.error_message(error)
    assert "corrupted record at 12" in message and "rebuild" in message
