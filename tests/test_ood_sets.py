"""ddu_tf.data.ood_sets: the OoD images against independent constructions, and one transform
(normalisation + fixed noise) for every set of the Dirty-MNIST protocol."""
import numpy as np
import pytest

from ddu_tf.data import dirty_mnist, ood_sets


def test_sklearn_digits_in_mnist_layout():
    from sklearn.datasets import load_digits

    d = ood_sets.sklearn_digits()
    digits = load_digits()
    assert d["images"].shape == (1797, 28, 28) and d["images"].dtype == np.float32
    np.testing.assert_array_equal(d["label"], digits.target)
    assert d["images"].min() >= 0.0 and d["images"].max() <= 1.0
    # 4-pixel zero border around a 20x20 box, as MNIST's digit box.
    border = np.ones((28, 28), bool)
    border[4:24, 4:24] = False
    assert np.all(d["images"][:, border] == 0.0)
    # Bilinear upsampling keeps the mean intensity of the 8x8 image (x / 16) up to edge effects.
    np.testing.assert_allclose(d["images"][:, 4:24, 4:24].mean(axis=(1, 2)),
                               digits.images.mean(axis=(1, 2)) / 16.0, atol=0.03)


def test_uniform_noise_is_seeded_and_in_range():
    a, b = ood_sets.uniform_noise(50, seed=3), ood_sets.uniform_noise(50, seed=3)
    np.testing.assert_array_equal(a["images"], b["images"])
    assert not np.array_equal(a["images"], ood_sets.uniform_noise(50, seed=4)["images"])
    assert a["images"].shape == (50, 28, 28) and 0.0 <= a["images"].min() < a["images"].max() < 1.0
    with pytest.raises(ValueError, match="num_images"):
        ood_sets.uniform_noise(0)


@pytest.mark.real_data
def test_rotated_mnist_is_a_quarter_turn(mnist_data_dir):
    m = dirty_mnist.load_mnist_arrays("test", "mnist", mnist_data_dir)
    r = ood_sets.mnist_rot90(mnist_data_dir)
    # Counter-clockwise quarter turn: out[row, col] = in[col, W - 1 - row].
    i = 17
    expected = np.array([[m["images"][i][c, 27 - row] for c in range(28)] for row in range(28)])
    np.testing.assert_array_equal(r["images"][i], expected)
    np.testing.assert_array_equal(r["label"], m["label"])


@pytest.mark.real_data
def test_every_set_gets_the_same_transform(mnist_data_dir):
    sets = ood_sets.evaluation_sets("generated_tiny", ("fashion_mnist", "uniform_noise"),
                                    data_dir=mnist_data_dir, max_per_set=40)
    assert list(sets) == ["mnist", "ambiguous", "fashion_mnist", "uniform_noise"]
    f = dirty_mnist.load_mnist_arrays("test", "fashion_mnist", mnist_data_dir)
    x, y = sets["fashion_mnist"]
    keys = ood_sets.NOISE_KEY_OFFSETS["fashion_mnist"] + np.arange(40)
    expected = (f["images"][:40] - 0.1307) / 0.3081 + dirty_mnist.fixed_noise(keys)
    np.testing.assert_allclose(x[..., 0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y, f["label"][:40])
    # MNIST test gets the same fixed noise as in Dirty-MNIST test (same keys).
    m = dirty_mnist.load_mnist_arrays("test", "mnist", mnist_data_dir)
    mx, _ = dirty_mnist.prepare({k: v[:40] for k, v in m.items()}, noise_std=0.05)
    np.testing.assert_array_equal(sets["mnist"][0], mx)
    # No noise anywhere when noise_std=0.
    clean = ood_sets.evaluation_sets("generated_tiny", ("uniform_noise",),
                                     data_dir=mnist_data_dir, noise_std=0.0, max_per_set=5)
    u = ood_sets.uniform_noise()["images"][:5]
    np.testing.assert_allclose(clean["uniform_noise"][0][..., 0], (u - 0.1307) / 0.3081,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="OoD set names"):
        ood_sets.evaluation_sets("generated_tiny", ("svhn",), data_dir=mnist_data_dir)


def test_noise_keys_are_disjoint_from_dirty_mnist():
    starts = sorted([*ood_sets.NOISE_KEY_OFFSETS.values(),
                     *dirty_mnist.NOISE_KEY_OFFSETS.values()])
    # Every set has fewer than 10^6 images (Ambiguous-MNIST pairs: 120k).
    assert all(b - a >= 1_000_000 for a, b in zip(starts, starts[1:]))
