"""ddu_tf.io.mnist1d against the reference package `mnist1d` (bit-exact float64)."""
import dataclasses
import importlib
import os
import pickle
import struct
import tracemalloc

import mnist1d.data as reference
import numpy as np
import pytest

from ddu_tf.io import mnist1d, safe_pickle

KEYS = ("x", "x_test", "y", "y_test", "t")


def _reference(**overrides):
    args = reference.get_dataset_args()
    args.__dict__.update(overrides)
    state = np.random.get_state()  # the reference reseeds NumPy's global generator
    try:
        return reference.make_dataset(args)
    finally:
        np.random.set_state(state)


def _assert_exact(ours, ref):
    for key in KEYS:
        assert ours[key].dtype == ref[key].dtype, key
        assert ours[key].shape == ref[key].shape, key
        assert np.array_equal(ours[key], ref[key]), key
    np.testing.assert_array_equal(ours["templates"]["x"], ref["templates"]["x"])
    np.testing.assert_array_equal(ours["templates"]["t"], ref["templates"]["t"])


def test_default_arguments_match_reference():
    ours = dataclasses.asdict(mnist1d.get_dataset_args())
    ref = reference.get_dataset_args(as_dict=True)
    ref = {k: (tuple(v) if isinstance(v, list) else v) for k, v in ref.items() if k != "url"}
    assert ours == ref


def test_default_dataset_bit_exact():
    ours = mnist1d.make_dataset()
    _assert_exact(ours, _reference())
    assert ours["x"].shape == (4000, 40) and ours["x_test"].shape == (1000, 40)
    assert ours["x"].dtype == np.float64 and ours["y"].dtype == np.int64


@pytest.mark.parametrize("overrides", [
    dict(num_samples=1234, shuffle_seq=True),            # 1230 samples, spatial shuffle
    dict(num_samples=300, seed=7, max_translation=1),    # choice(1) draws nothing
    dict(num_samples=200, seed=0, padding=(0, 5), max_translation=17, final_seq_length=30,
         scale_coeff=0.0, shear_scale=2.0, train_split=0.5),
    dict(num_samples=100, corr_noise_scale=0.0, iid_noise_scale=0.0, template_len=20),
])
def test_other_arguments_bit_exact(overrides):
    ref_overrides = {k: (list(v) if isinstance(v, tuple) else v) for k, v in overrides.items()}
    _assert_exact(mnist1d.make_dataset(**overrides), _reference(**ref_overrides))


def test_accepts_reference_args_object_and_mapping():
    args = reference.get_dataset_args()
    args.num_samples = 100
    expected = _reference(num_samples=100)
    _assert_exact(mnist1d.make_dataset(args), expected)
    _assert_exact(mnist1d.make_dataset({"num_samples": 100}), expected)
    _assert_exact(mnist1d.make_dataset(mnist1d.get_dataset_args(num_samples=50), num_samples=100),
                  expected)


def test_global_numpy_state_untouched_and_repeatable():
    np.random.seed(123)
    state = np.random.get_state()
    first = mnist1d.make_dataset(num_samples=100)
    after = np.random.get_state()
    assert all(np.array_equal(a, b) for a, b in zip(state[1:], after[1:]))
    second = mnist1d.make_dataset(num_samples=100)
    np.testing.assert_array_equal(first["x"], second["x"])
    different = mnist1d.make_dataset(num_samples=100, seed=43)
    assert not np.array_equal(first["x"], different["x"])


def test_dataset_is_standardised_and_balanced():
    data = mnist1d.make_dataset(num_samples=500)
    x = np.concatenate([data["x"], data["x_test"]])
    np.testing.assert_allclose([x.mean(), x.std()], [0.0, 1.0], atol=1e-12)
    assert np.bincount(np.concatenate([data["y"], data["y_test"]])).tolist() == [50] * 10


def test_interp_rows_equals_numpy_interp():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(5, 17))
    got = mnist1d._interp_rows(y, 40)
    expected = np.stack([np.interp(np.linspace(0, 1, 40), np.linspace(0, 1, 17), row) for row in y])
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("overrides, name", [
    (dict(num_samples=-3), "num_samples"),
    (dict(num_samples=0), "num_samples"),
    (dict(num_samples=9), "num_samples"),
    (dict(train_split=1.0), "train_split"),
    (dict(train_split=0.0), "train_split"),
    (dict(num_samples=10, train_split=0.05), "train_split"),
    (dict(template_len=0), "template_len"),
    (dict(padding=(5, 2)), "padding"),
    (dict(padding=(-1, 2)), "padding"),
    (dict(max_translation=0), "max_translation"),
    (dict(max_translation=73), "max_translation"),
    (dict(scale_coeff=-0.1), "scale_coeff"),
    (dict(corr_noise_scale=-1.0), "corr_noise_scale"),
    (dict(iid_noise_scale=float("nan")), "iid_noise_scale"),
    (dict(shear_scale=-2), "shear_scale"),
    (dict(final_seq_length=11), "final_seq_length"),
    (dict(shuffle_seq="yes"), "shuffle_seq"),
    (dict(seed=-1), "seed"),
    (dict(seed=2**32), "seed"),
])
def test_invalid_arguments_raise_value_error_naming_them(overrides, name):
    with pytest.raises(ValueError, match=f"{name}="):
        mnist1d.get_dataset_args(**overrides)
    with pytest.raises(ValueError, match=f"{name}="):
        mnist1d.make_dataset(**overrides)


def test_unknown_argument_rejected():
    with pytest.raises(ValueError, match="num_sample"):
        mnist1d.get_dataset_args(num_sample=10)


# ---- transformation steps ----------------------------------------------------------------
@pytest.mark.parametrize("overrides, sample", [({}, 0), ({}, 2),
                                               (dict(num_samples=100, seed=5), 37)])
def test_transformation_steps_equal_reference_step_functions(overrides, sample):
    """Oracle: the reference's own pad / interpolate / translate / corr_noise_like /
    iid_noise_like / shear, called in its order on NumPy's global stream."""
    transform = importlib.import_module("mnist1d.transform")  # mnist1d.transform is shadowed
    args = reference.get_dataset_args()
    args.__dict__.update(overrides)
    steps = mnist1d.transformation_steps(sample=sample, **overrides)
    templates = reference.get_templates()
    per_class = args.num_samples // 10
    state = np.random.get_state()
    try:
        np.random.seed(args.seed)
        for i in range(sample):
            transform.transform(templates["x"][i // per_class], templates["t"], args)
        label = sample // per_class
        x = templates["x"][label] + 1e-8
        expected = {"template": x}
        x = expected["padded"] = transform.pad(x, args.padding)
        x = expected["dilated"] = transform.interpolate(x, args.template_len + args.padding[1])
        x = expected["scaled"] = x * (1 + args.scale_coeff * (np.random.rand() - 0.5))
        x = expected["translated"] = transform.translate(x, args.max_translation)
        mask = x != 0
        x = expected["correlated_noise"] = (
            mask * x + (1 - mask) * transform.corr_noise_like(x, args.corr_noise_scale))
        x = expected["iid_noise"] = x + transform.iid_noise_like(x, args.iid_noise_scale)
        x = expected["sheared"] = transform.shear(x, args.shear_scale)
        expected["final"] = transform.interpolate(x, args.final_seq_length)
    finally:
        np.random.set_state(state)
    assert steps["label"] == label
    assert steps["padding"] == expected["padded"].shape[0] - args.template_len
    assert list(mnist1d.TRANSFORMATION_STEPS) == list(expected)
    for key, value in expected.items():
        assert np.array_equal(steps[key], value), key


def test_transformation_steps_rejects_bad_sample():
    with pytest.raises(ValueError, match="sample="):
        mnist1d.transformation_steps(sample=5000)
    with pytest.raises(ValueError, match="seed="):
        mnist1d.transformation_steps(seed=-1)


# ---- the published pickle ------------------------------------------------------------------
def _reference_pickle(path, num_samples=100):
    """A file in the published layout, written by the reference package's own to_pickle."""
    data = _reference(num_samples=num_samples)
    reference_utils = importlib.import_module("mnist1d.utils")
    reference_utils.to_pickle(data, str(path))
    return data


def test_load_published_reads_reference_written_file(tmp_path):
    path = tmp_path / "mnist1d_data.pkl"
    data = _reference_pickle(path)
    loaded = mnist1d.load_published(path)
    for key in KEYS:
        assert loaded[key].dtype == data[key].dtype and np.array_equal(loaded[key], data[key])
    for key in ("x", "t", "y"):
        np.testing.assert_array_equal(loaded["templates"][key], data["templates"][key])


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_load_published_plain_pickle_protocols(tmp_path, protocol):
    data = mnist1d.make_dataset(num_samples=50)
    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = mnist1d.load_published(path)
    for key in KEYS:
        assert np.array_equal(loaded[key], data[key])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_pickle",))


def test_load_published_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = mnist1d.make_dataset(num_samples=50)
    data["extra"] = _Evil()
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(safe_pickle.UnsafePickleError, match="system"):
        mnist1d.load_published(path)
    assert not (tmp_path / "pwned_by_pickle").exists()
    # An object array would carry arbitrary objects: refused as well.
    path.write_bytes(pickle.dumps({"x": np.array([None, 1], dtype=object)}))
    with pytest.raises((safe_pickle.UnsafePickleError, mnist1d.Mnist1dFileError)):
        mnist1d.load_published(path)


def _peak(fn):
    tracemalloc.start()
    try:
        with pytest.raises(mnist1d.Mnist1dFileError) as error:
            fn()
        return error.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_load_published_refuses_huge_declarations_without_allocating(tmp_path):
    path = tmp_path / "huge.pkl"
    # A BINBYTES8 field declaring 1 TiB of array data in a 60-byte file.
    path.write_bytes(b"\x80\x04}\x8c\x01x\x8e" + struct.pack("<Q", 2**40) + b"\x00" * 40)
    error, peak = _peak(lambda: mnist1d.load_published(path))
    assert "declares" in str(error) and peak < 1 << 20
    # An array whose state declares 10**12 float64 for 80 bytes of data.
    data = pickle.dumps({"x": np.zeros(10)}, protocol=4)
    assert data.count(b"K\n\x85") == 1
    path.write_bytes(data.replace(b"K\n\x85", b"\x8a\x06" + (10**12).to_bytes(6, "little")
                                  + b"\x85"))
    error, peak = _peak(lambda: mnist1d.load_published(path))
    assert "needs" in str(error) and peak < 1 << 20


def test_load_published_truncated_and_wrong_layout(tmp_path):
    path = tmp_path / "d.pkl"
    _reference_pickle(path, num_samples=50)
    good = path.read_bytes()
    for cut in (len(good) // 3, len(good) - 1):
        path.write_bytes(good[:cut])
        with pytest.raises(mnist1d.Mnist1dFileError):
            mnist1d.load_published(path)
    data = mnist1d.make_dataset(num_samples=50)
    for broken, match in ((dict(data, y=data["y"][:-1]), "inconsistent"),
                          (dict(data, x=data["x"].astype(np.int64)), "'x'"),
                          (dict(data, templates=[1]), "templates"),
                          ({k: v for k, v in data.items() if k != "t"}, "'t'"),
                          (dict(data, y=data["y"] + 10), "labels")):
        path.write_bytes(pickle.dumps(broken))
        with pytest.raises(mnist1d.Mnist1dFileError, match=match):
            mnist1d.load_published(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(mnist1d.Mnist1dFileError, match="dict"):
        mnist1d.load_published(path)
    with pytest.raises(FileNotFoundError):
        mnist1d.load_published(tmp_path / "absent.pkl")


def test_published_path_env_and_manual_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(mnist1d.PUBLISHED_ENV, raising=False)
    monkeypatch.setenv("DDU_TF_DATA_DIR", str(tmp_path))
    assert mnist1d.published_path() is None
    (tmp_path / "mnist1d").mkdir()
    (tmp_path / "mnist1d" / "mnist1d_data.pkl").write_bytes(b"")
    assert mnist1d.published_path() == tmp_path / "mnist1d" / "mnist1d_data.pkl"
    monkeypatch.setenv(mnist1d.PUBLISHED_ENV, "/elsewhere/file.pkl")
    assert str(mnist1d.published_path()) == "/elsewhere/file.pkl"


def test_tfds_default_equals_published_file(tmp_path):
    """``tfds.load('mnist1d')`` against the repository's mnist1d_data.pkl (float32 cast;
    float64 differs across platforms in the last bit, REFERENCE.md section 4)."""
    path = mnist1d.published_path()
    if path is None or not path.is_file():
        pytest.skip(f"the published mnist1d_data.pkl is absent: set {mnist1d.PUBLISHED_ENV}=<file> "
                    "or put it at $DDU_TF_DATA_DIR/mnist1d/mnist1d_data.pkl")
    import tensorflow_datasets as tfds

    from tfds_builders.mnist1d import mnist1d_dataset_builder

    published = mnist1d.load_published(path)
    splits, info = tfds.load("mnist1d", split=["train", "test"], data_dir=tmp_path,
                             batch_size=-1, as_supervised=True, with_info=True)
    for (x, y), xk, yk in zip(tfds.as_numpy(splits), ("x", "x_test"), ("y", "y_test")):
        np.testing.assert_array_equal(x, published[xk].astype(np.float32))
        np.testing.assert_array_equal(y, published[yk])
    arrays = mnist1d_dataset_builder.metadata_arrays(info)
    np.testing.assert_array_equal(arrays["t"].astype(np.float32),
                                  published["t"].astype(np.float32))
    for key in ("x", "t"):
        np.testing.assert_array_equal(arrays["templates"][key].astype(np.float32),
                                      published["templates"][key].astype(np.float32))
