"""ddu_tf.io.mnist1d against the reference package `mnist1d` (bit-exact float64)."""
import dataclasses

import mnist1d.data as reference
import numpy as np
import pytest

from ddu_tf.io import mnist1d

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
