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
