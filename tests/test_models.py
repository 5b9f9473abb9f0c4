"""Tests for ddu_tf.models: parameter counts against the PyTorch originals, shapes, SN and
-mod wiring, PyTorch padding alignment, the -mod shortcut, registry and serialisation."""
import numpy as np
import pytest

import keras

from ddu_tf.layers import SpectralNormalization
from ddu_tf.models import MODELS, features_and_logits, get_model
from ddu_tf.models.blocks import AvgPoolShortcut, conv


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# ----- independent oracle: parameter arithmetic of the PyTorch definitions (omegafragger/DDU) --

def _conv(i, o, k):
    return i * o * k * k  # bias=False everywhere in net/resnet.py, vgg.py, wide_resnet.py


def _bn(c):
    return 2 * c  # nn.BatchNorm2d weight + bias (running stats are buffers in PyTorch)


def torch_resnet_params(bottleneck, num_blocks, in_ch, classes, mod):
    total = _conv(in_ch, 64, 3) + _bn(64)
    in_planes = 64
    for planes, stride, n in zip((64, 128, 256, 512), (1, 2, 2, 2), num_blocks):
        for s in [stride] + [1] * (n - 1):
            if bottleneck:
                out = 4 * planes
                total += (_conv(in_planes, planes, 1) + _bn(planes) + _conv(planes, planes, 3)
                          + _bn(planes) + _conv(planes, out, 1) + _bn(out))
            else:
                out = planes
                total += _conv(in_planes, planes, 3) + _bn(planes) + _conv(planes, planes, 3) + _bn(planes)
            if (s != 1 or in_planes != out) and not mod:
                total += _conv(in_planes, out, 1) + _bn(out)
            in_planes = out
    return total + in_planes * classes + classes


def torch_wrn_params(depth, k, classes, mod):
    n = (depth - 4) // 6
    total = _conv(3, 16, 3)
    in_c = 16
    for out_c, stride in zip((16 * k, 32 * k, 64 * k), (1, 2, 2)):
        for s in [stride] + [1] * (n - 1):
            total += _bn(in_c) + _conv(in_c, out_c, 3) + _bn(out_c) + _conv(out_c, out_c, 3)
            if (s != 1 or in_c != out_c) and not mod:
                total += _conv(in_c, out_c, 1)  # no BN on the WRN shortcut
            in_c = out_c
    return total + _bn(in_c) + in_c * classes + classes


def torch_vgg16_params(in_ch, classes):
    cfg_cifar = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    cfg_mnist = [64, 64, 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    total, c = 0, in_ch
    for x in (cfg_mnist if in_ch == 1 else cfg_cifar):
        if x != "M":
            total += _conv(c, x, 3) + _bn(x)
            c = x
    return total + 512 * classes + classes


MNIST, CIFAR = (28, 28, 1), (32, 32, 3)


def test_oracle_matches_published_counts():
    # Widely quoted PyTorch counts for the CIFAR-10 variants.
    assert torch_resnet_params(False, [2, 2, 2, 2], 3, 10, mod=False) == 11_173_962
    assert torch_resnet_params(True, [3, 4, 6, 3], 3, 10, mod=False) == 23_520_842
    assert torch_wrn_params(28, 10, 10, mod=False) == 36_479_194


@pytest.mark.parametrize("shape", [MNIST, CIFAR])
@pytest.mark.parametrize("mod", [False, True])
def test_resnet18_param_count(shape, mod):
    model = get_model("resnet18", input_shape=shape, mod=mod)
    assert trainable_count(model) == torch_resnet_params(False, [2, 2, 2, 2], shape[-1], 10, mod)
    assert model.get_layer("features").output.shape == (None, 512)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    # nn.BatchNorm2d defaults: momentum 0.1 (Keras 0.9), eps 1e-5.
    assert all(bn.momentum == pytest.approx(0.9) and bn.epsilon == 1e-5 for bn in bns)


@pytest.mark.parametrize("shape", [MNIST, CIFAR])
@pytest.mark.parametrize("mod", [False, True])
def test_resnet50_param_count(shape, mod):
    model = get_model("resnet50", input_shape=shape, mod=mod, num_classes=100)
    assert trainable_count(model) == torch_resnet_params(True, [3, 4, 6, 3], shape[-1], 100, mod)
    assert model.get_layer("features").output.shape == (None, 2048)


@pytest.mark.parametrize("shape", [MNIST, CIFAR])
def test_vgg16_param_count(shape):
    model = get_model("vgg16", input_shape=shape)
    assert trainable_count(model) == torch_vgg16_params(shape[-1], 10)
    assert model.get_layer("features").output.shape == (None, 512)


@pytest.mark.parametrize("mod", [False, True])
def test_wide_resnet_28_10_param_count(mod):
    model = get_model("wide_resnet", input_shape=CIFAR, mod=mod)
    assert trainable_count(model) == torch_wrn_params(28, 10, 10, mod)
    assert model.get_layer("features").output.shape == (None, 640)
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert len(dropouts) == 12 and all(layer.rate == 0.3 for layer in dropouts)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(bn.momentum == pytest.approx(0.99) and bn.epsilon == 1e-5 for bn in bns)


def test_lenet_param_count_and_no_sn():
    model = get_model("lenet", input_shape=MNIST)
    assert trainable_count(model) == 44_426  # 6*25+6 + 16*150+16 + 256*120+120 + 120*84+84 + 850
    assert model.get_layer("features").output.shape == (None, 84)
    with pytest.raises(ValueError, match="spectral_normalization"):
        get_model("lenet", spectral_normalization=True)


def test_wrn_init_is_kaiming_normal_fan_out():
    model = get_model("wide_resnet", depth=10, widen_factor=4, input_shape=CIFAR)
    kernel = model.get_layer("group3_block1_conv2").kernel.numpy()  # 3x3x256x256
    fan_out = 9 * 256
    assert kernel.std() == pytest.approx(np.sqrt(2.0 / fan_out), rel=0.02)
    assert np.all(model.get_layer("logits").bias.numpy() == 0)


@pytest.mark.parametrize("mod", [False, True])
def test_small_wide_resnet_sn_forward(mod):
    model = get_model("wide_resnet", input_shape=CIFAR, depth=10, widen_factor=2, dropout_rate=0.1,
                      spectral_normalization=True, mod=mod, num_classes=4)
    assert trainable_count(model) == torch_wrn_params(10, 2, 4, mod)
    wrappers = _sn_wrappers(model)
    # stem + 2 convs per block x 3 blocks (+ 3 shortcut 1x1 convs without mod)
    assert len(wrappers) == (7 if mod else 10)
    assert all(isinstance(layer, keras.layers.Dropout) and layer.rate == 0.1
               for layer in model.layers if "dropout" in layer.name)
    x = np.random.default_rng(5).normal(size=(2, *CIFAR)).astype("float32")
    feats, logits = features_and_logits(model)(x, training=True)
    assert feats.shape == (2, 128) and logits.shape == (2, 4)


def _sn_wrappers(model):
    return [layer for layer in model.layers if isinstance(layer, SpectralNormalization)]


@pytest.mark.parametrize("mod", [False, True])
def test_resnet18_sn_wiring(mod):
    plain = get_model("resnet18", input_shape=CIFAR, mod=mod)
    model = get_model("resnet18", input_shape=CIFAR, mod=mod, spectral_normalization=True,
                      coeff=2.0)
    # SN adds no trainable parameters; its u, v, sigma are non-trainable.
    assert trainable_count(model) == trainable_count(plain)
    wrappers = _sn_wrappers(model)
    convs = [layer for layer in plain.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(wrappers) == len(convs) == (17 if mod else 20)
    assert all(w.coeff == 2.0 and w.power_iterations == 1 for w in wrappers)
    for w in wrappers:
        assert w.uses_operator_norm == (w.layer.kernel_size == (3, 3))
        assert not any(v.trainable for v in (w.u, w.v, w.sigma))
    # Neither BatchNorm nor the classifier is normalised.
    assert isinstance(model.get_layer("logits"), keras.layers.Dense)
    assert sum(1 for w in wrappers if not w.uses_operator_norm) == (0 if mod else 3)
    x = np.random.default_rng(0).normal(size=(2, *CIFAR)).astype("float32")
    assert model(x, training=True).shape == (2, 10)
    assert all(float(w.sigma.numpy()) > 0 for w in wrappers)


def test_mod_uses_leaky_relu_and_avgpool_shortcuts():
    model = get_model("resnet18", input_shape=MNIST, mod=True)
    kinds = {type(layer) for layer in model.layers}
    assert keras.layers.LeakyReLU in kinds and keras.layers.ReLU not in kinds
    assert all(layer.negative_slope == pytest.approx(0.01)
               for layer in model.layers if isinstance(layer, keras.layers.LeakyReLU))
    shortcuts = [layer for layer in model.layers if isinstance(layer, AvgPoolShortcut)]
    assert len(shortcuts) == 3
    # MNIST: 28 -> 14 -> 7 -> 4; the 7x7 map takes the odd branch avg_pool(1, 2).
    assert [s.output.shape[1] for s in shortcuts] == [14, 7, 4]
    assert [s._pool_size for s in shortcuts] == [2, 2, 1]


def test_avgpool_shortcut_against_numpy():
    rng = np.random.default_rng(1)
    even = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(AvgPoolShortcut(2, 5)(even))
    expected = even.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(out[..., :3], expected, rtol=1e-6, atol=1e-6)
    assert np.all(out[..., 3:] == 0)
    odd = rng.normal(size=(2, 7, 7, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(AvgPoolShortcut(2, 4)(odd))
    np.testing.assert_array_equal(out[..., :3], odd[:, ::2, ::2])
    assert out.shape == (2, 4, 4, 4) and np.all(out[..., 3] == 0)
    layer = AvgPoolShortcut.from_config(AvgPoolShortcut(2, 4).get_config())
    assert (layer.stride, layer.out_channels) == (2, 4)


def _torch_conv_reference(x, kernel, stride, pad):
    """Cross-correlation with symmetric zero padding, PyTorch's Conv2d semantics."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = kernel.shape[0]
    h = (x.shape[1] - k) // stride + 1
    w = (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], h, w, kernel.shape[-1]))
    for i in range(h):
        for j in range(w):
            patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
            out[:, i, j] = np.einsum("bhwc,hwco->bo", patch, kernel)
    return out


@pytest.mark.parametrize("size,stride,sn", [(8, 2, False), (7, 2, False), (6, 1, False), (8, 2, True)])
def test_conv_matches_pytorch_padding(size, stride, sn):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, size, size, 2)).astype("float32")
    inputs = keras.Input((size, size, 2))
    # coeff large: SN leaves the kernel unchanged, so the alignment is what is tested.
    model = keras.Model(inputs, conv(inputs, 3, 3, stride, spectral_normalization=sn,
                                     coeff=1e6, name="c"))
    kernel = model.get_layer("c").kernel.numpy() if not sn else model.get_layer("c_sn").layer.kernel.numpy()
    out = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(out, _torch_conv_reference(x, kernel, stride, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,stride,kernel_size", [(8, 2, 3), (7, 2, 3), (6, 1, 3), (8, 2, 1)])
def test_sn_conv_with_pytorch_padding_is_bounded_by_coeff(size, stride, kernel_size):
    """Exact operator norm (SVD of the assembled matrix) of the padded, strided SN conv."""
    coeff = 0.5
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 2))
    model = keras.Model(inputs, conv(inputs, 3, kernel_size, stride, spectral_normalization=True,
                                     coeff=coeff, name="c"))
    x = np.zeros((1, size, size, 2), "float32")
    for _ in range(100):  # converge the power iteration
        model(x, training=True)
    basis = np.eye(size * size * 2, dtype="float32").reshape(-1, size, size, 2)
    matrix = keras.ops.convert_to_numpy(model(basis, training=False)).reshape(len(basis), -1)
    sigma = np.linalg.svd(matrix, compute_uv=False)[0]
    assert sigma <= coeff * (1 + 1e-3)  # up to power-iteration convergence
    assert sigma >= 0.8 * coeff  # the raw kernels exceed coeff, so SN is active and near-tight


@pytest.mark.parametrize("name,shape,features", [
    ("lenet", MNIST, 84), ("resnet18", MNIST, 512), ("vgg16", CIFAR, 512), ("resnet1d", (40,), 64)])
def test_features_and_logits_one_pass(name, shape, features):
    model = get_model(name, input_shape=shape, num_classes=7)
    x = np.random.default_rng(3).normal(size=(2, *shape)).astype("float32")
    feats, logits = features_and_logits(model)(x, training=False)
    assert feats.shape == (2, features) and logits.shape == (2, 7)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(logits),
                               keras.ops.convert_to_numpy(model(x, training=False)), rtol=1e-5, atol=1e-5)
    head = model.get_layer("logits")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(head(feats)),
                               keras.ops.convert_to_numpy(logits), rtol=1e-5, atol=1e-5)


def test_features_and_logits_requires_features_layer():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="features"):
        features_and_logits(model)


@pytest.mark.parametrize("mod", [False, True])
def test_resnet1d_sn_forward_and_save(tmp_path, mod):
    model = get_model("resnet1d", spectral_normalization=True, mod=mod, input_shape=(40,))
    assert trainable_count(model) == (50_602 if mod else 57_002)
    convs = [w for w in _sn_wrappers(model) if isinstance(w.layer, keras.layers.Conv1D)]
    assert len(convs) == (7 if mod else 9)
    x = np.random.default_rng(4).normal(size=(2, 40)).astype("float32")
    model(x, training=True)
    path = tmp_path / "resnet1d.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x, training=False)),
                               keras.ops.convert_to_numpy(model(x, training=False)), rtol=1e-5, atol=1e-5)


def test_get_model_errors_and_lazy_registry(monkeypatch):
    with pytest.raises(ValueError, match="name='nope'"):
        get_model("nope")
    with pytest.raises(ValueError, match="coeff"):
        get_model("resnet1d", spectral_normalization=True, coeff=-1.0)
    # A builder without SN/mod switches (as written by other modules) gets only what it
    # accepts, and asking it for SN is an error rather than silently ignored.
    monkeypatch.setitem(MODELS, "tiny", (__name__, "_tiny_builder"))
    model = get_model("tiny", num_classes=3, input_shape=(5,))
    assert model.output_shape == (None, 3)
    with pytest.raises(ValueError, match="spectral_normalization"):
        get_model("tiny", spectral_normalization=True)


def _tiny_builder(num_classes=10, input_shape=(4,)):
    inputs = keras.Input(input_shape)
    features = keras.layers.Dense(4, name="features")(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(features))


def test_registry_lists_the_contract_names():
    assert {"lenet", "vgg16", "resnet18", "resnet50", "wide_resnet", "resnet1d", "bayesian_cnn",
            "logistic", "mlp", "cnn1d", "gru"} <= set(MODELS)


@pytest.mark.parametrize("name,shape", [("bayesian_cnn", MNIST), ("logistic", (40,)),
                                        ("mlp", (40,)), ("cnn1d", (40,)), ("gru", (40,))])
def test_lazily_registered_models_plug_in(name, shape):
    model = get_model(name, num_classes=10, input_shape=shape)
    x = np.zeros((2, *shape), "float32")
    feats, logits = features_and_logits(model)(x, training=False)
    assert logits.shape == (2, 10) and feats.shape[0] == 2
    with pytest.raises(ValueError, match="spectral_normalization"):
        get_model(name, input_shape=shape, spectral_normalization=True)


def test_saved_mod_sn_model_loads_in_a_fresh_process_after_import_ddu_tf(tmp_path):
    """`import ddu_tf` alone registers every custom object a saved model needs (the -mod
    shortcut, the SN wrapper, the torch-style optimiser in the compile config)."""
    import subprocess
    import sys

    from ddu_tf import training
    from ddu_tf.models import get_model

    model = get_model("resnet1d", spectral_normalization=True, mod=True)
    training.compile_model(model, training.make_optimizer("adam", lr=1e-3))
    x = np.random.default_rng(0).normal(size=(4, 40)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(model(x, training=False)))
    code = (
        "import numpy as np, keras, ddu_tf, sys\n"
        f"m = keras.models.load_model(r'{path}')\n"
        f"x = np.load(r'{tmp_path / 'x.npy'}'); y = np.load(r'{tmp_path / 'y.npy'}')\n"
        "assert np.allclose(np.asarray(m(x, training=False)), y, atol=1e-5)\n"
        "assert type(m.optimizer).__name__ == 'TorchAdam'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("sn,mod", [(False, False), (True, True)])
def test_small_resnet_in_the_registry(sn, mod):
    """The CPU-scale ResNet of the DDU active-learning runs: 3 one-block stages (16/32/64
    channels), 64-d features, SN on every conv and avg-pool shortcuts with the switches."""
    model = get_model("small_resnet", spectral_normalization=sn, mod=mod)
    assert model.output_shape == (None, 10)
    assert model.get_layer("features").output.shape == (None, 64)
    kinds = [type(layer).__name__ for layer in model.layers]
    convs = [layer for layer in model.layers
             if isinstance(layer, (keras.layers.Conv2D, SpectralNormalization))]
    # stem + 2 per block; the non-mod stride-2 shortcuts add 1x1 convs (2 of them)
    assert len(convs) == (7 if mod else 9)
    assert all(isinstance(c, SpectralNormalization) for c in convs) == sn
    assert ("AvgPoolShortcut" in kinds) == mod
    wide = get_model("small_resnet", width=4)
    assert wide.get_layer("features").output.shape == (None, 16)
    with pytest.raises(ValueError, match="width"):
        get_model("small_resnet", width=0)


@pytest.mark.parametrize("name", ["lenet", "vgg16", "resnet18", "resnet50", "small_resnet",
                                  "wide_resnet", "resnet1d", "bayesian_cnn"])
def test_builders_reject_bad_common_arguments_before_building(name):
    sn = name not in ("lenet", "bayesian_cnn")
    with pytest.raises(ValueError, match=r"Expected num_classes >= 1\. Received: num_classes=0"):
        get_model(name, num_classes=0)
    if name != "resnet1d":
        with pytest.raises(ValueError, match=r"Expected input_shape=\(height, width, channels\)\. "
                                             r"Received: input_shape=\(28, 28\)"):
            get_model(name, input_shape=(28, 28))
    if sn:
        with pytest.raises(ValueError, match=r"Expected coeff > 0\. Received: coeff=0"):
            get_model(name, spectral_normalization=True, coeff=0.0)
        with pytest.raises(ValueError, match=r"Expected power_iterations >= 1\. Received"):
            get_model(name, spectral_normalization=True, power_iterations=0)
