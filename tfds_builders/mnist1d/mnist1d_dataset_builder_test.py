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


def _reference(shuffle_seq=False, **overrides):
    args = reference.get_dataset_args()
    args.shuffle_seq = shuffle_seq
    args.__dict__.update({k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in overrides.items()})
    state = np.random.get_state()  # the reference reseeds NumPy's global generator
    try:
        return reference.make_dataset(args)
    finally:
        np.random.set_state(state)


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


# Two non-default variants touching every kind of argument (ints, floats, the padding pair,
# the split, the output length, the seed, the spatial shuffle).
VARIANTS = [
    dict(num_samples=600, max_translation=20, shear_scale=0.0, corr_noise_scale=0.5, seed=7),
    dict(num_samples=410, train_split=0.5, template_len=15, padding=(10, 30), scale_coeff=0.8,
         max_translation=40,
         iid_noise_scale=0.1, final_seq_length=64, shuffle_seq=True, seed=123),
]


@pytest.mark.parametrize("overrides", VARIANTS)
def test_custom_variant_through_builder_kwargs_equals_reference(tmp_path, overrides):
    """``tfds.load('mnist1d', builder_kwargs=...)`` builds the variant; float32 cast of the
    reference package's arrays for the same arguments, and t / templates in the metadata."""
    expected = _reference(**overrides)
    splits, info = tfds.load("mnist1d", split=["train", "test"], data_dir=tmp_path,
                             batch_size=-1, as_supervised=True, with_info=True,
                             builder_kwargs=dict(overrides))
    for (x, y), xk, yk in zip(tfds.as_numpy(splits), ("x", "x_test"), ("y", "y_test")):
        assert x.dtype == np.float32 and x.shape == expected[xk].shape
        np.testing.assert_array_equal(x, expected[xk].astype(np.float32))
        np.testing.assert_array_equal(y, expected[yk])
    assert info.features["x"].shape == (overrides.get("final_seq_length", 40),)
    arrays = mnist1d_dataset_builder.metadata_arrays(info)
    assert np.array_equal(arrays["t"], expected["t"])
    for key in ("x", "t"):
        assert np.array_equal(arrays["templates"][key], expected["templates"][key])
    assert info.metadata["args"]["seed"] == overrides["seed"]
    # The config object spelling gives the same variant (same name, same directory).
    config = mnist1d_dataset_builder.Mnist1dConfig.variant(**overrides)
    assert info.config_name == config.name
    assert tfds.builder("mnist1d", data_dir=tmp_path, config=config).is_prepared()


def test_metadata_of_default_config_equals_reference(tmp_path):
    builder = tfds.builder("mnist1d", data_dir=tmp_path)
    builder.download_and_prepare()
    # Reopened from disk: the metadata is read back from the prepared directory.
    arrays = mnist1d_dataset_builder.metadata_arrays(
        tfds.builder("mnist1d", data_dir=tmp_path).info)
    expected = _reference()
    assert np.array_equal(arrays["t"], expected["t"])
    assert np.array_equal(arrays["templates"]["x"], expected["templates"]["x"])
    np.testing.assert_array_equal(arrays["templates"]["y"], np.arange(10))


def test_variant_names_and_predefined_configs():
    variant = mnist1d_dataset_builder.Mnist1dConfig.variant
    assert variant(num_samples=100_000) is mnist1d_dataset_builder.Builder.builder_configs["large"]
    assert variant() is mnist1d_dataset_builder.Builder.builder_configs["default"]
    assert (variant(seed=3, padding=[30, 40]).name == "padding-30-40__seed-3")
    assert variant(seed=3).name != variant(seed=4).name
    # Arguments on top of a named config.
    builder = mnist1d_dataset_builder.Builder(config="shuffled", seed=3)
    assert builder.builder_config.name == "shuffle_seq-True__seed-3"


@pytest.mark.parametrize("overrides, name", [
    (dict(seed=-1), "seed"), (dict(max_translation=0), "max_translation"),
    (dict(padding=(5, 2)), "padding"), (dict(final_seq_length=3), "final_seq_length"),
    (dict(train_split=1.5), "train_split")])
def test_invalid_arguments_rejected_like_make_dataset(overrides, name):
    """The config validates through ddu_tf.io.mnist1d.get_dataset_args: same message."""
    from ddu_tf.io import mnist1d

    with pytest.raises(ValueError) as expected:
        mnist1d.make_dataset(**overrides)
    with pytest.raises(ValueError, match=f"{name}=") as got:
        mnist1d_dataset_builder.Mnist1dConfig(name="bad", **overrides)
    assert str(got.value) == str(expected.value)
    with pytest.raises(ValueError, match=f"{name}="):
        mnist1d_dataset_builder.Builder(**overrides)
    with pytest.raises(ValueError, match="Unknown MNIST-1D config"):
        mnist1d_dataset_builder.Builder(config="nope", seed=1)
