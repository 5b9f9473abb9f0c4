"""Dirty-MNIST loaders: normalisation, fixed per-sample noise, splits, sources."""
import pathlib
import shutil
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from ddu_tf.data import dirty_mnist as dm
from ddu_tf.io import mnist_idx
from tfds_builders.ambiguous_mnist import ambiguous_mnist_dataset_builder  # noqa: F401 (registers)

DUMMY = (pathlib.Path(__file__).resolve().parent.parent / "tfds_builders" / "ambiguous_mnist"
         / "dummy_data" / "ambiguous_mnist")
DUMMY_FILES = {"samples": ("amnist_samples.pt", "65bda6c04e09a50578026b0023bc9c04"),
               "labels": ("amnist_labels.pt", "563d1a489bfa9b24061298dc77c41bdb")}


def test_normalize_numbers():
    x = np.array([0.0, 0.1307, 1.0], np.float32)
    np.testing.assert_allclose(dm.normalize(x), [-0.1307 / 0.3081, 0.0, 0.8693 / 0.3081],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dm.normalize(tf.constant(x)).numpy(), dm.normalize(x))


def test_fixed_noise_is_a_function_of_seed_and_key():
    keys = np.arange(300, dtype=np.int64) + 2_000_000
    a = dm.fixed_noise(keys, seed=5)
    assert a.shape == (300, 28, 28) and a.dtype == np.float32
    b = dm.fixed_noise(keys[::-1][:50], seed=5)  # subset, other order
    np.testing.assert_array_equal(b, a[::-1][:50])
    assert abs(a.std() - 0.05) < 0.002 and abs(a.mean()) < 0.002
    assert not np.array_equal(dm.fixed_noise(keys[:3], seed=6), a[:3])
    assert not np.array_equal(a[0], a[1])


@pytest.mark.real_data
def test_validation_split_from_mnist_half():
    val = dm.validation_indices()
    assert len(val) == 6000 and len(np.unique(val)) == 6000 and val.max() < 60000
    np.testing.assert_array_equal(val, dm.validation_indices())
    train = dm.load_mnist_arrays("train")
    valid = dm.load_mnist_arrays("validation")
    full = dm.load_mnist_arrays("train_full")
    assert len(train["label"]) == 54000 and len(valid["label"]) == 6000
    assert not set(train["sample_id"]) & set(valid["sample_id"])
    np.testing.assert_array_equal(np.sort(np.concatenate([train["sample_id"],
                                                          valid["sample_id"]])), np.arange(60000))
    raw, labels = mnist_idx.load_idx_arrays("mnist", "train")
    np.testing.assert_array_equal(valid["images"] * 255.0, raw[val])
    np.testing.assert_array_equal(full["label"], labels)
    with pytest.raises(ValueError, match="no validation split"):
        dm.load_mnist_arrays("validation", dataset="fashion_mnist")


def test_flatten_pairs_hand_case():
    images = np.arange(4 * 28 * 28, dtype=np.float32).reshape(4, 28, 28)
    labels = np.array([[0, 0, 1], [2, 2, 2], [3, 4, 5], [9, 9, 8]])
    test = dm.flatten_pairs(images, labels, "test")  # pairs 6..11 = images 2, 3
    np.testing.assert_array_equal(test["pair_id"], [6, 7, 8, 9, 10, 11])
    np.testing.assert_array_equal(test["sample_id"], [2, 2, 2, 3, 3, 3])
    np.testing.assert_array_equal(test["label"], [3, 4, 5, 9, 9, 8])
    np.testing.assert_array_equal(test["images"][3], images[3])
    np.testing.assert_allclose(test["label_distribution"][3, [8, 9]], [1 / 3, 2 / 3])
    train = dm.flatten_pairs(images, labels, "train")
    np.testing.assert_allclose(train["label_distribution"][0, :2], [2 / 3, 1 / 3])


@pytest.fixture
def official_dir(tmp_path):
    (tmp_path / "ambiguous_mnist").mkdir()
    for f in DUMMY.iterdir():
        shutil.copy(f, tmp_path / "ambiguous_mnist" / f.name)
    with mock.patch.dict(dm.AMBIGUOUS_FILES, DUMMY_FILES):
        yield tmp_path


@pytest.mark.real_data
def test_dirty_arrays_official_layout(official_dir):
    d = dm.load_dirty_arrays("test", "official", data_dir=official_dir)
    assert len(d["label"]) == 10000 + 20
    assert d["is_ambiguous"].sum() == 20
    np.testing.assert_array_equal(d["sample_id"][10000:], [2] * 10 + [3] * 10)
    np.testing.assert_array_equal(d["noise_key"][10000:], 2_000_000 + np.arange(20, 40))
    assert len(set(d["noise_key"])) == len(d["noise_key"])
    tr = dm.load_dirty_arrays("train", "official", data_dir=official_dir)
    assert len(tr["label"]) == 54000 + 20 and tr["images"].dtype == np.float32
    assert len(dm.load_dirty_arrays("validation", "official", data_dir=official_dir)["label"]) \
        == 6000


@pytest.mark.real_data
def test_sources_spec_noise_and_normalisation(official_dir):
    ds = dm.dirty_mnist_source("test", data_dir=official_dir)
    assert ds.element_spec[0].shape == (28, 28, 1) and ds.element_spec[0].dtype == tf.float32
    assert ds.element_spec[1].dtype == tf.int64
    x = np.stack([e[0].numpy() for e in ds.take(200)])
    arrays = dm.load_dirty_arrays("test", "official", data_dir=official_dir)
    residual = x[..., 0] - dm.normalize(arrays["images"][:200])
    assert abs(residual.std() - 0.05) < 0.003  # N(0, 0.05^2) on every sample
    x2 = np.stack([e[0].numpy() for e in dm.dirty_mnist_source("test", data_dir=official_dir)
                   .take(200)])
    np.testing.assert_array_equal(x, x2)  # fixed, not re-drawn
    # the ambiguous pairs get the same fixed noise standalone and inside Dirty-MNIST
    amb = dm.ambiguous_mnist_source("test", data_dir=official_dir)
    xa = np.stack([e[0].numpy() for e in amb])
    np.testing.assert_array_equal(xa, np.stack([e[0].numpy() for e in ds.skip(10000)]))
    m = next(iter(dm.mnist_source("test")))[0].numpy()
    raw, _ = mnist_idx.load_idx_arrays("mnist", "test")
    np.testing.assert_allclose(m[..., 0], (raw[0] / 255.0 - 0.1307) / 0.3081, atol=1e-6)
    f = next(iter(dm.fashion_mnist_source("test")))
    assert f[0].shape == (28, 28, 1) and f[1].dtype == tf.int64


def test_missing_official_files_error(tmp_path, monkeypatch):
    monkeypatch.delenv(mnist_idx.ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError) as e:
        dm.load_ambiguous_arrays("train", data_dir=tmp_path)
    msg = str(e.value)
    assert "amnist_samples.pt" in msg and dm.AMBIGUOUS_URL in msg
    assert str(tmp_path / "ambiguous_mnist") in msg and "generated" in msg


@pytest.mark.real_data
def test_generated_tiny_variant_through_tfds(tmp_path):
    tiny = dm.load_ambiguous_arrays("train", "generated_tiny", tfds_data_dir=str(tmp_path))
    n = 20
    assert len(tiny["label"]) == n * 10 // 2
    np.testing.assert_array_equal(tiny["pair_id"], np.arange(n * 10 // 2))
    np.testing.assert_array_equal(tiny["sample_id"], np.arange(n * 10 // 2) // 10)
    d = dm.load_dirty_arrays("test", "generated_tiny", tfds_data_dir=str(tmp_path))
    assert len(d["label"]) == 10000 + n * 10 // 2


@pytest.mark.real_data
def test_mnist_without_a_manual_dir_downloads_into_the_user_cache(tmp_path, monkeypatch):
    """No data_dir and no $DDU_TF_DATA_DIR: the official files are fetched (verified) into
    $XDG_CACHE_HOME/ddu_tf; here the "download" serves the shared reference files."""
    import os
    import urllib.request

    source_dir = os.environ.get("DDU_TF_DATA_DIR")
    assert source_dir, "the test suite's conftest points DDU_TF_DATA_DIR at MNIST"
    requested = []

    class _Response:
        def __init__(self, path):
            self._file = open(path, "rb")

        def read(self, *args):
            return self._file.read(*args)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._file.close()

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        name = url.rsplit("/", 1)[-1]
        return _Response(os.path.join(source_dir, "mnist", name))

    monkeypatch.delenv("DDU_TF_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    arrays = dm.load_mnist_arrays("test")
    assert arrays["images"].shape == (10000, 28, 28)
    assert sorted(u.rsplit("/", 1)[-1] for u in requested) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert all(u.startswith("https://storage.googleapis.com/cvdf-datasets/mnist/") for u in requested)
    cached = sorted(p.name for p in (tmp_path / "ddu_tf" / "mnist").iterdir())
    assert cached == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # Second call: served from the cache, nothing fetched again.
    requested.clear()
    again = dm.load_mnist_arrays("test")
    assert requested == [] and np.array_equal(again["label"], arrays["label"])


# ---- the dirty_mnist TFDS records: load_tfds, tfds_transform, tfds_slice, initial_indices --
@pytest.fixture
def dirty_dummy():
    """The dirty_mnist builder's dummy files (6 + 4 MNIST images, 4 ambiguous images x 10
    labels) with their digests patched in; yields the manual dir."""
    from tfds_builders.dirty_mnist import dirty_mnist_dataset_builder_test as builder_test

    patches = builder_test._patches()
    for p in patches:
        p.start()
    yield builder_test.DUMMY_DIR
    for p in patches:
        p.stop()


@pytest.mark.parametrize("split", dm.TFDS_SPLITS)
def test_load_tfds_equals_the_array_loader(tmp_path, dirty_dummy, split):
    """Same examples, order and values (normalisation + fixed noise) as `prepare` on
    `load_dirty_arrays`; validation only from the MNIST half."""
    ds = dm.load_tfds(split, "official", data_dir=dirty_dummy, tfds_data_dir=str(tmp_path))
    x = np.stack([e[0].numpy() for e in ds])
    y = np.array([e[1].numpy() for e in ds])
    arrays = dm.load_dirty_arrays(split, "official", data_dir=dirty_dummy)
    ox, oy = dm.prepare(arrays, noise_std=dm.NOISE_STD)
    np.testing.assert_array_equal(y, oy)
    np.testing.assert_allclose(x, ox, rtol=0, atol=1e-6)
    val = dm.validation_indices(6)  # round(0.1 * 6) = 1 image of the 6 dummy MNIST images
    n = {"train": 5 + 20, "validation": 1, "train_full": 6 + 20, "test": 4 + 20}[split]
    assert len(y) == n and len(val) == 1
    if split == "validation":
        raw = mnist_idx.load_idx_arrays("mnist", "train", dirty_dummy)[0]
        np.testing.assert_allclose(x[..., 0], dm.normalize(raw[val] / 255.0)
                                   + dm.fixed_noise(val), atol=1e-6)
    plain = dm.load_tfds(split, "official", data_dir=dirty_dummy, tfds_data_dir=str(tmp_path),
                         noise_std=0.0, normalize_inputs=False)
    np.testing.assert_array_equal(np.stack([e[0].numpy() for e in plain])[..., 0],
                                  arrays["images"])
    with pytest.raises(ValueError, match="split in"):
        dm.load_tfds("valid", "official", data_dir=dirty_dummy, tfds_data_dir=str(tmp_path))


def test_tfds_slice_never_cuts_an_image(tmp_path, dirty_dummy):
    import tensorflow_datasets as tfds

    builder = tfds.builder("dirty_mnist/official", data_dir=tmp_path)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(dirty_dummy)))
    md = builder.info.metadata
    assert dm.tfds_slice(md, "train", "mnist") == "train[0:6]"
    assert dm.tfds_slice(md, "test", "ambiguous", 1, 2) == "test[14:24]"
    d = tfds.as_numpy(builder.as_dataset(split=dm.tfds_slice(md, "train", "ambiguous", 1),
                                         batch_size=-1))
    assert d["is_ambiguous"].all() and list(d["sample_id"]) == [1] * 10
    np.testing.assert_array_equal(d["pair_id"], np.arange(10, 20))
    with pytest.raises(ValueError, match="stop <= 2"):
        dm.tfds_slice(md, "train", "ambiguous", 0, 3)
    with pytest.raises(ValueError, match="info.metadata of a prepared dirty_mnist"):
        dm.tfds_slice({}, "train", "mnist")


def test_initial_indices_from_the_mnist_half_outside_validation():
    val = dm.validation_indices()
    a = dm.initial_indices(20, seed=3)
    assert len(a) == len(set(a)) == 20 and a.max() < 60000
    assert not set(a) & set(val)
    np.testing.assert_array_equal(a, dm.initial_indices(20, seed=3))
    assert not np.array_equal(a, dm.initial_indices(20, seed=4))
    with pytest.raises(ValueError, match="num_initial <= 54000"):
        dm.initial_indices(54001)


def test_tfds_transform_keys_and_noise_hand_case():
    records = {"image": np.full((3, 28, 28, 1), 0.5, np.float32), "label": np.array([1, 2, 3]),
               "is_ambiguous": np.array([False, True, False]),
               "sample_id": np.array([7, 4, 9]), "pair_id": np.array([-1, 45, -1])}
    np.testing.assert_array_equal(dm.record_noise_key(records, "test").numpy(),
                                  [1_000_007, 2_000_045, 1_000_009])
    ds = tf.data.Dataset.from_tensor_slices(records).map(dm.tfds_transform("test", noise_seed=2))
    x = np.stack([e[0].numpy() for e in ds])
    np.testing.assert_allclose(x[..., 0], (0.5 - 0.1307) / 0.3081
                               + dm.fixed_noise([1_000_007, 2_000_045, 1_000_009], seed=2),
                               atol=1e-6)
    with pytest.raises(ValueError, match="split in"):
        dm.tfds_transform("validation")
