"""Tests of the MNIST-1D TFDS builder: TFDS' generic checks plus equality with the reference."""
import pathlib

import mnist1d.data as reference
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders.mnist1d import mnist1d_dataset_builder


class Mnist1dBuilderTest(tfds.testing.DatasetBuilderTestCase):
    """TFDS' generic builder test (registration, info, generation, split sizes)."""

    DATASET_CLASS = mnist1d_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["default", "shuffled"]  # `large` takes ~20 s to write
    SPLITS = {"train": 4000, "test": 1000}
    # The builder downloads nothing, so there is no dummy data: point TFDS' mock download
    # directory at this folder (it must exist but is never read).
    EXAMPLE_DIR = str(pathlib.Path(__file__).resolve().parent)


def _reference(shuffle_seq):
    args = reference.get_dataset_args()
    args.shuffle_seq = shuffle_seq
    return reference.make_dataset(args)


def _as_numpy(builder, split):
    x, y = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
    return x, y


def test_tfds_output_equals_reference_float32(tmp_path):
    """Default and shuffled configs equal the reference package's float64 arrays cast to float32."""
    for config, shuffle_seq in (("default", False), ("shuffled", True)):
        builder = tfds.builder(f"mnist1d/{config}", data_dir=tmp_path)
        builder.download_and_prepare()
        expected = _reference(shuffle_seq)
        for split, xk, yk in (("train", "x", "y"), ("test", "x_test", "y_test")):
            x, y = _as_numpy(builder, split)
            assert x.dtype == np.float32 and x.shape == expected[xk].shape
            np.testing.assert_array_equal(x, expected[xk].astype(np.float32))
            np.testing.assert_array_equal(y, expected[yk])


def test_shuffled_config_is_one_fixed_column_permutation(tmp_path):
    """`shuffled` holds the default samples with one permutation of the 40 positions."""
    x = {}
    for config in ("default", "shuffled"):
        builder = tfds.builder(f"mnist1d/{config}", data_dir=tmp_path)
        builder.download_and_prepare()
        x[config], _ = _as_numpy(builder, "test")
    # Recover the permutation from the first sample (values are distinct), then check all.
    perm = np.array([np.flatnonzero(x["default"][0] == v)[0] for v in x["shuffled"][0]])
    assert sorted(perm) == list(range(40)) and not np.array_equal(perm, np.arange(40))
    np.testing.assert_array_equal(x["default"][:, perm], x["shuffled"])


def test_load_by_name_after_importing_package(tmp_path):
    import ddu_tf  # noqa: F401  (the package import registers the builder)

    assert "mnist1d" in tfds.list_builders()
    ds = tfds.load("mnist1d", split="test[:10]", data_dir=tmp_path, as_supervised=True)
    x, y = next(iter(ds.batch(10)))
    assert x.shape == (10, 40) and x.dtype.name == "float32" and y.shape == (10,)


@pytest.mark.slow
def test_large_config_sizes_and_values(tmp_path):
    """`large`: 100k samples split 80k/20k, equal to ddu_tf's generator cast to float32
    (which bench/mnist1d_generation.py checks bit-exact against the reference at 100k)."""
    from ddu_tf.io import mnist1d

    builder = tfds.builder("mnist1d/large", data_dir=tmp_path)
    builder.download_and_prepare()
    assert builder.info.splits["train"].num_examples == 80_000
    assert builder.info.splits["test"].num_examples == 20_000
    expected = mnist1d.make_dataset(num_samples=100_000)
    x, y = _as_numpy(builder, "test")
    np.testing.assert_array_equal(x, expected["x_test"].astype(np.float32))
    np.testing.assert_array_equal(y, expected["y_test"])
