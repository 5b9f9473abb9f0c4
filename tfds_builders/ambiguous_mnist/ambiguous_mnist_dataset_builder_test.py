"""Tests of the ambiguous_mnist builder: `official` on dummy .pt files written by torch.save,
`generated_tiny` end to end, and bad input leaving no finished dataset behind."""
import hashlib
import pathlib
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ddu_tf.data import dirty_mnist
from ddu_tf.io import torch_pickle
from tfds_builders.ambiguous_mnist import ambiguous_mnist_dataset_builder

DUMMY_DIR = pathlib.Path(__file__).resolve().parent / "dummy_data"
# MD5 of the dummy files (4 images x 10 labels, torch 2.13 torch.save of seeded tensors).
DUMMY_FILES = {"samples": ("amnist_samples.pt", "65bda6c04e09a50578026b0023bc9c04"),
               "labels": ("amnist_labels.pt", "563d1a489bfa9b24061298dc77c41bdb")}


class AmbiguousMnistOfficialTest(tfds.testing.DatasetBuilderTestCase):
    """4 dummy images x 10 labels -> 40 pairs: 20 train, 20 test."""

    DATASET_CLASS = ambiguous_mnist_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["official"]
    SPLITS = {"train": 20, "test": 20}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._md5_patch = mock.patch.dict(dirty_mnist.AMBIGUOUS_FILES, DUMMY_FILES)
        cls._md5_patch.start()

    @classmethod
    def tearDownClass(cls):
        cls._md5_patch.stop()
        super().tearDownClass()


def _build(name, data_dir, manual_dir):
    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def _finished_versions(data_dir, config):
    root = pathlib.Path(data_dir) / "ambiguous_mnist" / config
    return [p for p in root.glob("*") if (p / "dataset_info.json").exists()] if root.exists() \
        else []


def test_official_values_are_exact_and_pairs_flattened(tmp_path):
    with mock.patch.dict(dirty_mnist.AMBIGUOUS_FILES, DUMMY_FILES):
        builder = _build("ambiguous_mnist/official", tmp_path, DUMMY_DIR)
    sub = DUMMY_DIR / "ambiguous_mnist"
    samples = torch_pickle.load_pt(sub / "amnist_samples.pt")[:, 0]
    labels = torch_pickle.load_pt(sub / "amnist_labels.pt")
    for split, pairs in (("train", range(0, 20)), ("test", range(20, 40))):
        d = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        order = np.argsort(d["pair_id"])
        np.testing.assert_array_equal(d["pair_id"][order], list(pairs))
        img = np.array(pairs) // 10
        np.testing.assert_array_equal(d["sample_id"][order], img)
        np.testing.assert_array_equal(d["label"][order], labels[img, np.array(pairs) % 10])
        assert d["image"].dtype == np.float32
        assert d["image"][order, :, :, 0].tobytes() == samples[img].tobytes()  # bit-exact
        dist = d["label_distribution"][order]
        np.testing.assert_allclose(dist.sum(1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(dist[np.arange(len(img)), d["label"][order]] * 10,
                                   [(labels[i] == labels[i, p % 10]).sum()
                                    for i, p in zip(img, pairs)], rtol=1e-6)


def test_bad_md5_leaves_no_finished_dataset(tmp_path):
    with pytest.raises(dirty_mnist.AmbiguousChecksumError, match="amnist_samples.pt"):
        _build("ambiguous_mnist/official", tmp_path, DUMMY_DIR)  # real MD5s: dummy files fail
    assert _finished_versions(tmp_path, "official") == []


def test_truncated_pt_leaves_no_finished_dataset(tmp_path):
    manual = tmp_path / "manual" / "ambiguous_mnist"
    manual.mkdir(parents=True)
    src = DUMMY_DIR / "ambiguous_mnist"
    (manual / "amnist_labels.pt").write_bytes((src / "amnist_labels.pt").read_bytes())
    cut = (src / "amnist_samples.pt").read_bytes()[:-3000]
    (manual / "amnist_samples.pt").write_bytes(cut)
    files = {"samples": ("amnist_samples.pt", hashlib.md5(cut).hexdigest()),
             "labels": DUMMY_FILES["labels"]}
    with mock.patch.dict(dirty_mnist.AMBIGUOUS_FILES, files), \
            pytest.raises(torch_pickle.TorchFileFormatError):
        _build("ambiguous_mnist/official", tmp_path / "tfds", manual.parent)
    assert _finished_versions(tmp_path / "tfds", "official") == []


def test_missing_files_error_names_files_urls_and_dirs(tmp_path, monkeypatch):
    monkeypatch.delenv("DDU_TF_DATA_DIR", raising=False)
    manual = tmp_path / "manual"
    (manual / "unrelated").mkdir(parents=True)

    def offline(self, url_or_urls):
        raise OSError("no network")

    monkeypatch.setattr(tfds.download.DownloadManager, "download", offline)
    with pytest.raises(FileNotFoundError) as e:
        _build("ambiguous_mnist/official", tmp_path / "tfds", manual)
    msg = str(e.value)
    assert "amnist_samples.pt" in msg and "amnist_labels.pt" in msg
    assert dirty_mnist.AMBIGUOUS_URL + "amnist_samples.pt" in msg
    assert str(manual / "ambiguous_mnist") in msg
    assert _finished_versions(tmp_path / "tfds", "official") == []


@pytest.mark.real_data
def test_generated_tiny_builds_offline_from_env_mnist(tmp_path):
    """MNIST comes from $DDU_TF_DATA_DIR (set by the root conftest); no manual dir."""
    builder = tfds.builder("ambiguous_mnist/generated_tiny", data_dir=tmp_path)
    builder.download_and_prepare()
    n = ambiguous_mnist_dataset_builder.ambiguous_generation.TINY_CONFIG.num_images
    assert builder.info.splits["train"].num_examples == n * 10 // 2
    d = tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1))
    assert set(d["sample_id"]) == set(range(n // 2, n))
    assert d["image"].min() >= 0.0 and d["image"].max() <= 1.0
    np.testing.assert_allclose(d["label_distribution"].sum(1), 1.0, rtol=1e-6)


@pytest.mark.real_data
@pytest.mark.slow
def test_default_generated_builds_within_30_minutes(tmp_path):
    """The real default-size build (12k images) and Dirty-MNIST on top of it."""
    import time

    t0 = time.time()
    amb = tfds.builder("ambiguous_mnist/generated", data_dir=tmp_path)
    amb.download_and_prepare()
    assert time.time() - t0 < 1800
    assert amb.info.splits["train"].num_examples == 60000
    assert amb.info.splits["test"].num_examples == 60000
    from tfds_builders.dirty_mnist import dirty_mnist_dataset_builder  # noqa: F401

    dirty = tfds.builder("dirty_mnist/generated", data_dir=tmp_path)
    dirty.download_and_prepare()
    assert dirty.info.splits["train"].num_examples == 120000
    assert dirty.info.splits["test"].num_examples == 70000
