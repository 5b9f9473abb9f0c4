"""Tests of ddu_tf.data.load: TFDS names, registered sources, the mock_data fallback."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import ddu_tf  # noqa: F401  (registers the TFDS builders)
from ddu_tf import data
from ddu_tf.io import mnist1d


@pytest.fixture(scope="module")
def mnist1d_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    tfds.builder("mnist1d", data_dir=path).download_and_prepare()
    return path


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_mnist1d_through_tfds_keeps_reference_order(mnist1d_dir):
    ds = data.load("mnist1d", "test", batch_size=300, data_dir=mnist1d_dir)
    batches = [x.shape[0] for x, _ in ds]
    assert batches == [300, 300, 300, 100]
    x, y = _collect(ds)
    expected = mnist1d.make_dataset()
    np.testing.assert_array_equal(x, expected["x_test"].astype(np.float32))
    np.testing.assert_array_equal(y, expected["y_test"])


def test_shuffle_is_seeded_permutation_and_drop_remainder(mnist1d_dir):
    kwargs = dict(batch_size=300, data_dir=mnist1d_dir, shuffle=True, drop_remainder=True)
    x1, y1 = _collect(data.load("mnist1d", "test", seed=3, **kwargs))
    x2, _ = _collect(data.load("mnist1d", "test", seed=3, **kwargs))
    x3, _ = _collect(data.load("mnist1d", "test", seed=4, **kwargs))
    assert x1.shape == (900, 40)
    np.testing.assert_array_equal(x1, x2)
    assert not np.array_equal(x1, x3)
    # Every shuffled row is a row of the ordered split, with its own label.
    xo, yo = _collect(data.load("mnist1d", "test", batch_size=1000, data_dir=mnist1d_dir))
    index = {row.tobytes(): label for row, label in zip(xo, yo)}
    assert len({row.tobytes() for row in x1}) == 900
    assert all(index[row.tobytes()] == label for row, label in zip(x1, y1))


def test_registered_source_with_arrays_and_preprocess():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    data.register_source("toy_arrays",
                         lambda split, data_dir=None: (x, y) if split == "train" else None)
    try:
        assert "toy_arrays" in data.registered_sources()
        ds = data.load("toy_arrays", "train", batch_size=4, preprocess=lambda a, b: (2 * a, b + 1))
        got_x, got_y = _collect(ds)
        np.testing.assert_array_equal(got_x, 2 * x)
        np.testing.assert_array_equal(got_y, y + 1)
        with pytest.raises(ValueError, match="tf.data.Dataset or a pair"):
            data.load("toy_arrays", "test", batch_size=4)
        with pytest.raises(ValueError, match="already registered"):
            data.register_source("toy_arrays", lambda split, data_dir=None: (x, y))
    finally:
        data.unregister_source("toy_arrays")
    assert "toy_arrays" not in data.registered_sources()


def test_registered_source_returning_dataset_gets_data_dir():
    seen = {}

    def source(split, data_dir=None):
        seen["args"] = (split, data_dir)
        return tf.data.Dataset.from_tensor_slices((tf.ones([5, 3]), tf.range(5)))

    data.register_source("toy_ds", source)
    try:
        (bx, by), = list(data.load("toy_ds", "test", batch_size=8, data_dir="/somewhere"))
        assert seen["args"] == ("test", "/somewhere")
        assert bx.shape == (5, 3) and list(by.numpy()) == [0, 1, 2, 3, 4]
    finally:
        data.unregister_source("toy_ds")


def test_unknown_name_falls_back_to_tfds_load_with_mock_data():
    with tfds.testing.mock_data(num_examples=7):
        x, y = next(iter(data.load("cifar10", "train", batch_size=7)))
    assert x.shape == (7, 32, 32, 3) and x.dtype == tf.uint8
    assert y.shape == (7,) and int(tf.reduce_max(y)) < 10


@pytest.mark.parametrize("kwargs, name", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(batch_size=4, shuffle_buffer_size=0), "shuffle_buffer_size"),
    (dict(batch_size=4, seed="a"), "seed"),
    (dict(batch_size=4, preprocess=3), "preprocess"),
])
def test_invalid_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=f"{name}="):
        data.load("mnist1d", "train", **kwargs)


def test_register_source_validates():
    with pytest.raises(ValueError, match="fn="):
        data.register_source("x", 3)
    with pytest.raises(ValueError, match="name="):
        data.register_source("", lambda split, data_dir=None: None)
    with pytest.raises(ValueError, match="name='never'"):
        data.unregister_source("never")
