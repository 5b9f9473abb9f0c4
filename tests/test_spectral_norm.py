"""Tests of ddu_tf.layers.SpectralNormalization against independent oracles.

Oracle: the explicit matrix of each wrapped layer's linear map, built in NumPy (float64)
straight from the kernel entries and TF's padding rules (no TF convolution involved), and its
exact largest singular value from ``numpy.linalg.svd``.
"""
import itertools
import json
import math
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddu_tf.layers import SpectralNormalization

# (id, layer factory, input shape without batch)
CASES = [
    ("dense", lambda: keras.layers.Dense(5), (7,)),
    ("conv1d_k3_s1_same", lambda: keras.layers.Conv1D(3, 3, padding="same"), (9, 2)),
    ("conv1d_k3_s2_valid", lambda: keras.layers.Conv1D(3, 3, strides=2, padding="valid"), (9, 2)),
    ("conv1d_1x1", lambda: keras.layers.Conv1D(4, 1), (6, 3)),
    ("conv2d_k3_s1_same", lambda: keras.layers.Conv2D(3, 3, padding="same"), (6, 6, 2)),
    ("conv2d_k3_s2_same", lambda: keras.layers.Conv2D(3, 3, strides=2, padding="same"), (6, 6, 2)),
    ("conv2d_k3_s1_valid", lambda: keras.layers.Conv2D(3, 3, padding="valid"), (6, 6, 2)),
    ("conv2d_k3_s2_valid", lambda: keras.layers.Conv2D(3, 3, strides=2, padding="valid"),
     (7, 7, 2)),
    ("conv2d_k3_dilation2_same",
     lambda: keras.layers.Conv2D(3, 3, dilation_rate=2, padding="same"), (7, 7, 2)),
    ("conv2d_k2x3_s2_same", lambda: keras.layers.Conv2D(3, (2, 3), strides=2, padding="same"),
     (5, 6, 2)),
    ("conv2d_1x1_s1", lambda: keras.layers.Conv2D(4, 1), (5, 5, 3)),
    ("conv2d_1x1_s2", lambda: keras.layers.Conv2D(4, 1, strides=2), (5, 5, 3)),
]
CASE_IDS = [c[0] for c in CASES]


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


def operator_matrix(layer, kernel, input_shape):
    """Exact matrix ``M`` of the wrapped layer's linear part: ``vec(A_W x) = M vec(x)``.

    Built entry by entry from ``kernel`` (float64) with TF's 'same'/'valid' rules:
    out = ceil(n / s) (same) or floor((n - e) / s) + 1 (valid), e = (k - 1) d + 1,
    pad_before = max((out - 1) s + e - n, 0) // 2 (same) or 0 (valid).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if isinstance(layer, keras.layers.Dense):
        return kernel.T
    spatial, cin = input_shape[:-1], input_shape[-1]
    ksize, cout = kernel.shape[:-2], kernel.shape[-1]
    strides, dil = layer.strides, layer.dilation_rate
    out_sizes, pads = [], []
    for n, k, s, d in zip(spatial, ksize, strides, dil):
        e = (k - 1) * d + 1
        if layer.padding == "same":
            out = math.ceil(n / s)
            pads.append(max((out - 1) * s + e - n, 0) // 2)
        else:
            out = (n - e) // s + 1
            pads.append(0)
        out_sizes.append(out)
    m = np.zeros(tuple(out_sizes) + (cout,) + tuple(spatial) + (cin,))
    for o in itertools.product(*[range(n) for n in out_sizes]):
        for j in itertools.product(*[range(k) for k in ksize]):
            i = tuple(oo * s - p + jj * d for oo, s, p, jj, d in zip(o, strides, pads, j, dil))
            if all(0 <= ii < n for ii, n in zip(i, spatial)):
                m[o + (slice(None),) + i + (slice(None),)] += kernel[j].T
    return m.reshape(int(np.prod(out_sizes)) * cout, int(np.prod(spatial)) * cin)


def spectral_norm(m):
    return np.linalg.svd(m, compute_uv=False)[0]


def built(factory, input_shape, **kwargs):
    sn = SpectralNormalization(factory(), **kwargs)
    sn.build((None,) + tuple(input_shape))
    return sn


def train_calls(sn, input_shape, n):
    """``n`` training-mode calls (one compiled loop, to keep the tests fast)."""
    x = tf.zeros((1,) + tuple(input_shape))

    @tf.function
    def loop():
        for _ in tf.range(n):
            sn(x, training=True)

    loop()


@pytest.mark.parametrize("name,factory,input_shape", CASES, ids=CASE_IDS)
def test_converged_layer_matches_exact_operator_norm_and_is_lipschitz(name, factory,
                                                                      input_shape):
    coeff = 0.5
    sn = built(factory, input_shape, coeff=coeff, power_iterations=1)
    sn.layer.bias.assign(np.random.default_rng(0).normal(size=sn.layer.bias.shape))
    train_calls(sn, input_shape, 150)
    # sigma estimate vs the exact operator norm of the raw kernel.
    true = spectral_norm(operator_matrix(sn.layer, sn.layer.kernel.numpy(), input_shape))
    assert true > 1.5 * coeff  # the case exercises the normalisation
    np.testing.assert_allclose(float(sn.sigma.numpy()), true, rtol=1e-2)
    # The effective kernel's exact operator norm is coeff (bounded by it up to the estimate).
    m_eff = operator_matrix(sn.layer, sn.normalized_kernel().numpy(), input_shape)
    effective = spectral_norm(m_eff)
    assert effective <= coeff * (1 + 1e-2)
    np.testing.assert_allclose(effective, coeff, rtol=1e-2)
    # The layer's forward pass is exactly that map plus the bias.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16,) + tuple(input_shape)).astype("float32")
    y = sn(x).numpy().reshape(16, -1)
    bias = np.broadcast_to(sn.layer.bias.numpy(), sn.compute_output_shape(x.shape)[1:])
    np.testing.assert_allclose(y, x.reshape(16, -1) @ m_eff.T + bias.reshape(-1),
                               rtol=1e-4, atol=1e-4)
    # Lipschitz bound on random pairs, plus the worst-case pair along the top right-singular
    # vector, where it is attained.
    _, _, vt = np.linalg.svd(m_eff)
    x2 = rng.normal(size=x.shape).astype("float32")
    x2[0] = x[0] + vt[0].reshape(input_shape).astype("float32")
    diff_out = np.linalg.norm((sn(x).numpy() - sn(x2).numpy()).reshape(16, -1), axis=1)
    diff_in = np.linalg.norm((x - x2).reshape(16, -1), axis=1)
    assert np.all(diff_out <= coeff * (1 + 1e-2) * diff_in)
    assert diff_out[0] >= coeff * (1 - 1e-2) * diff_in[0]


@pytest.mark.parametrize("name,factory,input_shape", CASES, ids=CASE_IDS)
def test_layer_below_coeff_is_unchanged(name, factory, input_shape):
    sn = built(factory, input_shape, coeff=100.0)
    x = np.random.default_rng(2).normal(size=(4,) + tuple(input_shape)).astype("float32")
    expected = sn.layer(x).numpy()
    np.testing.assert_allclose(sn(x, training=True).numpy(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sn(x).numpy(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(sn.normalized_kernel().numpy(), sn.layer.kernel.numpy())


def test_reshaped_kernel_norm_does_not_bound_the_conv_operator():
    input_shape, coeff = (8, 8, 1), 1.0
    rng = np.random.default_rng(3)
    kernel = (1.0 + 0.05 * rng.normal(size=(3, 3, 1, 1))).astype("float32")
    layer = keras.layers.Conv2D(1, 3, padding="same", use_bias=False)
    layer.build((None,) + input_shape)
    layer.kernel.assign(kernel)
    op = spectral_norm(operator_matrix(layer, kernel, input_shape))
    reshaped = spectral_norm(kernel.reshape(9, 1))
    assert op > 2.5 * reshaped  # ~8.4 vs ~3.0
    # Normalising by the reshape norm (as keras.layers.SpectralNormalization does) leaves an
    # operator norm far above the target ...
    assert spectral_norm(operator_matrix(layer, kernel / (reshaped / coeff), input_shape)) \
        > 2.5 * coeff
    keras_sn = keras.layers.SpectralNormalization(
        keras.layers.Conv2D(1, 3, padding="same", use_bias=False), power_iterations=100)
    keras_sn.build((None,) + input_shape)
    keras_sn.layer.kernel.assign(kernel)
    keras_sn(np.zeros((1,) + input_shape, "float32"), training=True)
    assert spectral_norm(
        operator_matrix(layer, keras_sn.layer.kernel.numpy(), input_shape)) > 2.5
    # ... while operator normalisation bounds it.
    sn = SpectralNormalization(keras.layers.Conv2D(1, 3, padding="same", use_bias=False),
                               coeff=coeff, power_iterations=200)
    sn.build((None,) + input_shape)
    sn.layer.kernel.assign(kernel)
    sn(np.zeros((1,) + input_shape, "float32"), training=True)
    np.testing.assert_allclose(float(sn.sigma.numpy()), op, rtol=1e-3)
    effective = spectral_norm(operator_matrix(layer, sn.normalized_kernel().numpy(), input_shape))
    assert effective <= coeff * (1 + 1e-3)


def test_gradient_flows_through_sigma_dense_matches_exact_svd():
    coeff = 1.0
    sn = built(lambda: keras.layers.Dense(4), (6,), coeff=coeff)
    rng = np.random.default_rng(4)
    w0 = rng.normal(size=(6, 4)).astype("float32")
    sn.layer.kernel.assign(w0)
    x = tf.constant(rng.normal(size=(3, 6)).astype("float32"))
    r = tf.constant(rng.normal(size=(3, 4)).astype("float32"))
    train_calls(sn, (6,), 500)  # converge u, v
    grads = {}
    for training in (False, True):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(r * sn(x, training=training))
        grads[training] = tape.gradient(loss, sn.layer.kernel.value).numpy()

    w = tf.Variable(w0)

    def exact_grad(stop_sigma):
        with tf.GradientTape() as tape:
            sigma = tf.linalg.svd(w, compute_uv=False)[0]
            if stop_sigma:
                sigma = tf.stop_gradient(sigma)
            w_sn = w / tf.maximum(1.0, sigma / coeff)
            loss = tf.reduce_sum(r * (x @ w_sn + sn.layer.bias))
        return tape.gradient(loss, w).numpy()

    expected, without_sigma = exact_grad(False), exact_grad(True)
    assert spectral_norm(w0) > 2 * coeff
    np.testing.assert_allclose(grads[False], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads[True], expected, rtol=1e-4, atol=1e-5)
    assert np.linalg.norm(expected - without_sigma) > 0.1 * np.linalg.norm(expected)


def test_gradient_flows_through_operator_sigma_conv_matches_finite_differences():
    """d loss / dW of a strided conv vs central differences of the exact-SVD loss (float64)."""
    input_shape, coeff = (6, 6, 2), 0.5
    sn = built(lambda: keras.layers.Conv2D(3, 3, strides=2, padding="same", use_bias=False),
               input_shape, coeff=coeff)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2,) + input_shape).astype("float32")
    out_dim = 3 * 3 * 3
    r = rng.normal(size=(2, out_dim)).astype("float32")
    train_calls(sn, input_shape, 500)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(r * tf.reshape(sn(x), (2, -1)))
    grad = tape.gradient(loss, sn.layer.kernel.value).numpy()

    w0 = sn.layer.kernel.numpy().astype(np.float64)
    xf = x.reshape(2, -1).astype(np.float64)

    def exact_loss(w):
        m = operator_matrix(sn.layer, w, input_shape)
        m = m / max(1.0, spectral_norm(m) / coeff)
        return float(np.sum(r * (xf @ m.T)))

    h = 1e-4
    for _ in range(3):
        d = rng.normal(size=w0.shape)
        fd = (exact_loss(w0 + h * d) - exact_loss(w0 - h * d)) / (2 * h)
        np.testing.assert_allclose(np.sum(grad * d), fd, rtol=2e-3, atol=1e-3)


def test_inference_does_not_change_state_training_does():
    input_shape = (6, 6, 2)
    sn = built(lambda: keras.layers.Conv2D(3, 3, padding="same"), input_shape, coeff=0.5)
    x = np.ones((2,) + input_shape, "float32")
    before = [w.numpy().copy() for w in (sn.u, sn.v, sn.sigma)]
    sn(x)
    sn(x, training=False)
    tf.function(lambda t: sn(t, training=False))(x)
    for b, w in zip(before, (sn.u, sn.v, sn.sigma)):
        np.testing.assert_array_equal(b, w.numpy())
    sn(x, training=True)
    assert not np.allclose(before[0], sn.u.numpy())
    sigma = float(sn.sigma.numpy())
    assert sigma > 0.5
    np.testing.assert_allclose(np.linalg.norm(sn.u.numpy()), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(sn.v.numpy()), 1.0, rtol=1e-5)
    # With the kernel unchanged since the training call, inference's <u, A_W v> is the
    # stored sigma.
    np.testing.assert_allclose(sn.normalized_kernel().numpy(),
                               sn.layer.kernel.numpy() / (sigma / 0.5), rtol=1e-5, atol=1e-7)


def _small_model():
    inputs = keras.Input((8, 8, 1))
    h = SpectralNormalization(keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                              coeff=0.7)(inputs)
    h = SpectralNormalization(keras.layers.Conv2D(4, 1, strides=2), coeff=0.7)(h)
    h = keras.layers.Flatten()(h)
    outputs = SpectralNormalization(keras.layers.Dense(3), coeff=0.7, power_iterations=2)(h)
    return keras.Model(inputs, outputs)


def test_save_load_round_trip(tmp_path):
    model = _small_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(8, 8, 8, 1)).astype("float32")
    y = rng.normal(size=(8, 3)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "sn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [w.name for w in loaded.weights] == [w.name for w in model.weights]
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(w.name == "sigma" and float(w.numpy()) > 0 for w in loaded.weights)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    sn_layers = [l for l in loaded.layers if isinstance(l, SpectralNormalization)]
    assert [l.coeff for l in sn_layers] == [0.7, 0.7, 0.7]
    assert [l.power_iterations for l in sn_layers] == [1, 1, 2]


def test_config_round_trip():
    sn = SpectralNormalization(keras.layers.Conv2D(5, 3, strides=2, name="c"), coeff=2.5,
                               power_iterations=3, eps=1e-10, name="sn")
    clone = SpectralNormalization.from_config(sn.get_config())
    assert (clone.coeff, clone.power_iterations, clone.eps, clone.name) == (2.5, 3, 1e-10, "sn")
    assert clone.layer.get_config() == sn.layer.get_config()
    assert keras.saving.get_registered_name(SpectralNormalization) == \
        "ddu_tf>SpectralNormalization"


def test_jit_compiled_train_step_matches_eager():
    input_shape = (6, 6, 2)
    x = tf.constant(np.random.default_rng(7).normal(size=(4,) + input_shape), tf.float32)
    results = []
    for jit in (None, True):
        keras.utils.set_random_seed(8)
        sn = built(lambda: keras.layers.Conv2D(3, 3, strides=2, padding="same"), input_shape,
                   coeff=0.5)
        opt = keras.optimizers.SGD(0.1)
        opt.build(sn.trainable_variables)

        def step(t):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(sn(t, training=True)))
            opt.apply_gradients(zip(tape.gradient(loss, sn.trainable_variables),
                                    sn.trainable_variables))
            return loss

        fn = step if jit is None else tf.function(step, jit_compile=True)
        losses = [float(fn(x)) for _ in range(3)]
        results.append((losses, sn.u.numpy(), sn.sigma.numpy(), sn.layer.kernel.numpy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_mixed_precision_power_iteration_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((6, 6, 2))
        sn = SpectralNormalization(keras.layers.Conv2D(3, 3, padding="same"), coeff=0.5)
        outputs = keras.layers.Flatten()(sn(inputs))
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
        x = np.random.default_rng(9).normal(size=(4, 6, 6, 2)).astype("float32")
        train_calls(sn, (6, 6, 2), 300)
        loss = model.train_on_batch(x, np.zeros((4, 108), "float32"))
        assert np.isfinite(loss)
        assert model(x).dtype == "float16"
        assert {sn.u.dtype, sn.v.dtype, sn.sigma.dtype, sn.layer.kernel.dtype} == {"float32"}
    finally:
        keras.mixed_precision.set_global_policy("float32")
    true = spectral_norm(operator_matrix(sn.layer, sn.layer.kernel.numpy(), (6, 6, 2)))
    # float16 power iteration would be off by ~1e-3; float32 gets ~1e-6 once converged.
    # (SGD(0.0): the kernel did not move during the training step.)
    np.testing.assert_allclose(float(sn.sigma.numpy()), true, rtol=1e-4)


@pytest.mark.parametrize("kwargs,match", [
    ({"layer": keras.layers.Dropout(0.1)}, "Expected layer to be a"),
    ({"layer": keras.layers.DepthwiseConv2D(3)}, "Expected layer to be a"),
    ({"layer": keras.layers.Conv2D(4, 3, data_format="channels_first")}, "channels_last"),
    ({"layer": keras.layers.Conv2D(4, 3, groups=2)}, "groups=1"),
    ({"layer": keras.layers.Conv1D(4, 3, padding="causal")}, "padding='causal'"),
    ({"coeff": -1}, r"Expected coeff > 0. Received: coeff=-1"),
    ({"coeff": 0.0}, r"Expected coeff > 0. Received: coeff=0.0"),
    ({"power_iterations": 0}, "Received: power_iterations=0"),
    ({"power_iterations": 1.5}, "Received: power_iterations=1.5"),
    ({"eps": 0.0}, r"Expected eps > 0. Received: eps=0.0"),
])
def test_invalid_arguments_raise(kwargs, match):
    kwargs = {"layer": keras.layers.Dense(3), **kwargs}
    with pytest.raises(ValueError, match=match):
        SpectralNormalization(**kwargs)


def test_unknown_spatial_size_raises_for_operator_norm():
    with pytest.raises(ValueError, match="fully known input shape"):
        SpectralNormalization(keras.layers.Conv2D(4, 3))(keras.Input((None, None, 1)))
    # 1x1 convolutions use the matrix norm and need no spatial size.
    out = SpectralNormalization(keras.layers.Conv2D(4, 1))(keras.Input((None, None, 1)))
    assert out.shape == (None, None, None, 4)


def test_other_input_size_than_the_normalised_operator_raises():
    # sigma is the norm of the convolution operator on the build-time input size: another
    # size is another operator, so the layer refuses it instead of using a wrong bound
    layer = SpectralNormalization(keras.layers.Conv2D(4, 3, padding="same"))
    assert layer(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 8, 8, 4)
    with pytest.raises(ValueError, match=r"Expected inputs of shape \[batch, 8, 8, 1\].*"
                                         r"Received: inputs.shape=\(2, 9, 8, 1\)"):
        layer(np.zeros((2, 9, 8, 1), np.float32))
    with pytest.raises(ValueError, match="Expected inputs of shape"):
        layer(keras.Input((10, 10, 1)))


_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from ddu_tf.layers import SpectralNormalization
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((6, 6, 2))
        sn = SpectralNormalization(keras.layers.Conv2D(3, 3, strides=2, padding="same"),
                                   coeff=0.5, power_iterations=60)
        model = keras.Model(inputs, keras.layers.Flatten()(sn(inputs)))
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 6, 6, 2)).astype("float32")
    model.fit(x, np.zeros((8, 27), "float32"), batch_size=4, epochs=1, verbose=0)
    per_replica = {name: [np.asarray(t).tolist() for t in strategy.experimental_local_results(
        getattr(sn, name).value)] for name in ("u", "v", "sigma")}
    kernel = sn.layer.kernel.numpy()
    basis = np.eye(72, dtype="float32").reshape(72, 6, 6, 2)
    m = tf.nn.conv2d(basis, kernel, strides=2, padding="SAME").numpy().reshape(72, -1)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "per_replica": per_replica,
                      "true": float(np.linalg.svd(m, compute_uv=False)[0])}))
""")


def test_mirrored_strategy_two_logical_cpus(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    for name, values in result["per_replica"].items():
        assert len(values) == 2
        np.testing.assert_array_equal(values[0], values[1], err_msg=name)
    sigma = result["per_replica"]["sigma"][0]
    np.testing.assert_allclose(sigma, result["true"], rtol=1e-3)


@pytest.mark.slow
def test_one_power_iteration_per_step_tracks_the_norm_while_training():
    """With the kernel moving under Adam, 1 iteration per step keeps sigma within ~1e-2."""
    input_shape, coeff = (12, 12, 4), 1.0
    inputs = keras.Input(input_shape)
    first = SpectralNormalization(keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                                  coeff=coeff)
    second = SpectralNormalization(keras.layers.Conv2D(8, 3, strides=2, padding="same"),
                                   coeff=coeff)
    h = second(first(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    rng = np.random.default_rng(10)
    x = rng.normal(size=(64,) + input_shape).astype("float32")
    y = rng.normal(size=(64, 3)).astype("float32")
    model.fit(x, y, batch_size=16, epochs=100, verbose=0)  # 400 steps
    for sn, shape in ((first, input_shape), (second, (12, 12, 8))):
        true = spectral_norm(operator_matrix(sn.layer, sn.layer.kernel.numpy(), shape))
        np.testing.assert_allclose(float(sn.sigma.numpy()), true, rtol=2e-2)
        effective = spectral_norm(
            operator_matrix(sn.layer, sn.normalized_kernel().numpy(), shape))
        assert effective <= coeff * (1 + 2e-2)
