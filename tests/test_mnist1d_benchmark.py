"""MNIST-1D reference models (against NumPy forward passes) and the benchmark script."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from ddu_tf.models import features_and_logits, get_model
from ddu_tf.models import mnist1d_models

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _relu(a):
    return np.maximum(a, 0.0)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _torch_conv1d(x, kernel, bias):
    """PyTorch Conv1d(stride=2, padding=1) in NumPy: x [B, L, Cin], kernel [k, Cin, Cout]."""
    k = kernel.shape[0]
    xp = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    length = (x.shape[1] + 2 - k) // 2 + 1
    out = np.stack([np.einsum("bkc,kcd->bd", xp[:, 2 * t:2 * t + k], kernel)
                    for t in range(length)], 1)
    return out + bias


def _torch_gru(x, kernel, recurrent, bias):
    """PyTorch GRU cell equations over x [B, T, 1] (Keras gate order z, r, n)."""
    units = recurrent.shape[0]
    h = np.zeros((x.shape[0], units))
    outputs = []
    for t in range(x.shape[1]):
        gx = x[:, t] @ kernel + bias[0]
        gh = h @ recurrent + bias[1]
        z = _sigmoid(gx[:, :units] + gh[:, :units])
        r = _sigmoid(gx[:, units:2 * units] + gh[:, units:2 * units])
        n = np.tanh(gx[:, 2 * units:] + r * gh[:, 2 * units:])
        h = (1 - z) * n + z * h
        outputs.append(h)
    return np.stack(outputs, 1)


@pytest.fixture(scope="module")
def signals():
    return np.random.default_rng(0).normal(size=(6, 40)).astype(np.float32)


@pytest.mark.parametrize("name, features, params", [
    ("logistic", 40, 410), ("mlp", 100, 15210), ("cnn1d", 125, 5210), ("gru", 480, 5134)])
def test_shapes_and_parameter_counts_match_pytorch_reference(name, features, params, signals):
    # Parameter counts of the reference's PyTorch LinearBase/MLPBase/ConvBase/GRUBase.
    model = get_model(name, num_classes=10, input_shape=(40,))
    feats, logits = features_and_logits(model)(signals)
    assert feats.shape == (6, features) and logits.shape == (6, 10)
    assert model.count_params() == params


def test_mlp_matches_numpy_residual_forward(signals):
    model = mnist1d_models.mlp()
    w1, b1, w2, b2, w3, b3 = [w.numpy().astype(np.float64) for w in model.weights]
    h1 = _relu(signals @ w1 + b1)
    h2 = h1 + _relu(h1 @ w2 + b2)
    np.testing.assert_allclose(model(signals).numpy(), h2 @ w3 + b3, rtol=1e-4, atol=1e-5)


def test_cnn_matches_pytorch_padding_stride_semantics(signals):
    model = mnist1d_models.cnn1d()
    weights = [w.numpy().astype(np.float64) for w in model.weights]
    h = signals[..., None].astype(np.float64)
    lengths = []
    for i in range(3):
        h = _relu(_torch_conv1d(h, weights[2 * i], weights[2 * i + 1]))
        lengths.append(h.shape[1])
    assert lengths == [19, 10, 5]
    expected = h.reshape(6, -1) @ weights[6] + weights[7]
    np.testing.assert_allclose(model(signals).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_bidirectional_gru_matches_pytorch_equations(signals):
    model = mnist1d_models.gru()
    fk, fr, fb, bk, br, bb, wd, bd = [w.numpy().astype(np.float64) for w in model.weights]
    x = signals[..., None].astype(np.float64)
    forward = _torch_gru(x, fk, fr, fb)
    backward = _torch_gru(x[:, ::-1], bk, br, bb)[:, ::-1]
    features = np.concatenate([forward, backward], -1).reshape(6, -1)
    np.testing.assert_allclose(model(signals).numpy(), features @ wd + bd, rtol=1e-4, atol=1e-5)


def test_torch_init_bounds_and_keras_init_option():
    model = mnist1d_models.cnn1d()
    bounds = [1 / np.sqrt(5), 1 / np.sqrt(5), 1 / np.sqrt(75), 1 / np.sqrt(75),
              1 / np.sqrt(75), 1 / np.sqrt(75), 1 / np.sqrt(125), 1 / np.sqrt(125)]
    for weight, bound in zip(model.weights, bounds):
        values = np.abs(weight.numpy())
        assert values.max() <= bound and values.max() > 0.5 * bound
    keras_default = mnist1d_models.cnn1d(torch_init=False)
    assert np.all(keras_default.get_layer("conv1").bias.numpy() == 0)


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_classes=0), "num_classes"), (dict(input_shape=(40, 1)), "input_shape"),
    (dict(hidden_size=0), "hidden_size")])
def test_invalid_model_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"{name}="):
        mnist1d_models.mlp(**kwargs)


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "mnist1d_benchmark", ROOT / "experiments" / "mnist1d_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_script_tiny_run(tmp_path):
    script = _load_script()
    out = tmp_path / "out"
    results = script.main(["--models", "logistic", "--configs", "regular", "shuffled",
                           "--seeds", "0", "1", "--steps", "4", "--eval-every", "2",
                           "--steps-per-execution", "2", "--no-jit-compile",
                           "--data-dir", str(tmp_path / "tfds"), "--output-dir", str(out)])
    saved = json.loads((out / "results.json").read_text())
    assert (out / "benchmark.png").stat().st_size > 0
    keys = {"regular/logistic", "shuffled/logistic"}
    for field in ("mean", "std", "values", "best", "seconds", "published", "notebooks", "recipe"):
        assert set(saved[field]) == keys
    for key in keys:
        values = saved["values"][key]
        assert len(values) == 2 and all(0 <= v <= 100 for v in values)
        assert saved["mean"][key] == pytest.approx(np.mean(values))
        assert saved["std"][key] == pytest.approx(np.std(values, ddof=1))
        assert all(b >= v for b, v in zip(saved["best"][key], values))
    assert saved["published"]["regular/logistic"] == 32
    assert saved["recipe"]["regular/logistic"]["steps"] == 4
    assert results["mean"] == saved["mean"]


def test_benchmark_script_keeps_finished_keys_and_reruns_changed_recipe(tmp_path, capsys):
    """Resume: keys already in results.json with the same recipe are kept, not rerun; a
    different recipe reruns them; keys of other configs (an old-format file with a global
    ``info``) stay in the table."""
    script = _load_script()
    out = tmp_path / "out"
    out.mkdir()
    old = {"mean": {"shuffled/mlp": 66.0}, "std": {"shuffled/mlp": 1.5},
           "values": {"shuffled/mlp": [67.5, 65.9, 64.6]}, "best": {"shuffled/mlp": [1, 2, 3]},
           "seconds": {"shuffled/mlp": [1.0, 1.0, 1.0]}, "published": {"shuffled/mlp": 68},
           "notebooks": {"shuffled/mlp": 66.0},
           "info": {"seeds": [0, 1, 2], "steps": 6000, "batch_size": 100, "lr": 0.01,
                    "eval_every": 500}}
    (out / "results.json").write_text(json.dumps(old))
    argv = ["--models", "logistic", "--configs", "regular", "--seeds", "0", "--steps", "2",
            "--eval-every", "2", "--steps-per-execution", "2", "--no-jit-compile",
            "--data-dir", str(tmp_path / "tfds"), "--output-dir", str(out)]
    first = script.main(argv)
    assert first["recipe"]["shuffled/mlp"]["steps"] == 6000  # migrated, kept
    assert first["values"]["shuffled/mlp"] == [67.5, 65.9, 64.6]
    seconds = first["seconds"]["regular/logistic"]
    capsys.readouterr()
    second = script.main(argv)
    assert "already in" in capsys.readouterr().out
    assert second["seconds"]["regular/logistic"] == seconds
    third = script.main([("4" if i == argv.index("--steps") + 1 else a)
                         for i, a in enumerate(argv)])
    assert third["recipe"]["regular/logistic"]["steps"] == 4
    saved = json.loads((out / "results.json").read_text())
    assert "info" not in saved and set(saved["mean"]) == {"shuffled/mlp", "regular/logistic"}


@pytest.mark.real_data
def test_benchmark_script_tiny_mnist_run(tmp_path, mnist_data_dir):
    """The MNIST row at tiny scale: flattened 784-point sequences into the same models (the
    other three models take input_shape=(784,) the same way: test_models_on_784_point_sequences)."""
    script = _load_script()
    out = tmp_path / "out"
    results = script.main(["--models", "logistic", "--configs", "mnist",
                           "--seeds", "0", "--steps", "4", "--eval-every", "2",
                           "--steps-per-execution", "2", "--no-jit-compile",
                           "--mnist-dir", str(mnist_data_dir), "--output-dir", str(out)])
    assert set(results["mean"]) == {"mnist/logistic"}
    assert results["published"]["mnist/logistic"] == 94
    assert results["notebooks"]["mnist/logistic"] is None
    # 4 steps of Adam 1e-2 on 400 images already beat chance (10%) by far on MNIST.
    assert results["values"]["mnist/logistic"][0] > 40
    assert (out / "benchmark.png").stat().st_size > 0
    train, test, length = script.load_splits("mnist", script.parse_args(
        ["--mnist-dir", str(mnist_data_dir)]))
    x, y = next(iter(train))
    assert length == 784 and x.shape == (100, 784) and y.shape == (100,)
    assert test.reduce(0, lambda n, batch: n + tf.shape(batch[1])[0]).numpy() == 10_000


@pytest.mark.parametrize("argv", [["--steps", "10", "--eval-every", "3"], ["--steps", "0"],
                                  ["--lr", "0"]])
def test_benchmark_script_rejects_bad_flags(argv):
    with pytest.raises(SystemExit):
        _load_script().parse_args(argv)


@pytest.mark.parametrize("name, features", [("mlp", 100), ("cnn1d", 98 * 25),
                                            ("gru", 784 * 12)])
def test_models_on_784_point_sequences(name, features):
    """The MNIST row's models: same builders, input length 784 (CNN 784->391->196->98);
    symbolic shapes only (an eager GRU pass over 784 steps takes ~40 s here)."""
    model = get_model(name, num_classes=10, input_shape=(784,))
    assert tuple(model.get_layer("features").output.shape) == (None, features)
    assert tuple(model.output.shape) == (None, 10)


def _load_plot_script():
    spec = importlib.util.spec_from_file_location(
        "plot_mnist1d", ROOT / "experiments" / "plot_mnist1d.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plot_script_templates_and_transformations(tmp_path):
    written = _load_plot_script().main(["--figures", "templates", "transformations",
                                        "--sample", "1234", "--output-dir", str(tmp_path)])
    assert [pathlib.Path(p).name for p in written] == ["templates.png", "transformations.png"]
    assert all(pathlib.Path(p).stat().st_size > 10_000 for p in written)
    with pytest.raises(ValueError, match="sample="):
        _load_plot_script().main(["--figures", "transformations", "--sample", "5000",
                                  "--output-dir", str(tmp_path)])


@pytest.mark.real_data
def test_plot_script_tsne_tiny(tmp_path, mnist_data_dir):
    script = _load_plot_script()
    embeddings = script.tsne_embeddings(60, 0, mnist_data_dir)
    assert set(embeddings) == {"MNIST", "MNIST-1D"}
    for z, y in embeddings.values():
        assert z.shape == (60, 2) and y.shape == (60,) and np.isfinite(z).all()
    script.plot_tsne(tmp_path / "tsne.png", embeddings)
    assert (tmp_path / "tsne.png").stat().st_size > 10_000
