"""Tests of the ambiguous_mnist builder: `official` on dummy .pt files written by torch.save, in
published order; `generated` and builder_kwargs files read without training (small files written
by save_generated); `generated_tiny` end to end; bad input leaving no finished dataset behind."""
import hashlib
import pathlib
from unittest import mock

import numpy as np
import pytest
import scipy.stats
import tensorflow_datasets as tfds

from ddu_tf.data import dirty_mnist
from ddu_tf.generation import ambiguous_mnist as generation
from ddu_tf.io import ambiguous_mnist as amnist_io
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


def test_official_values_are_exact_and_in_published_order(tmp_path):
    with mock.patch.dict(dirty_mnist.AMBIGUOUS_FILES, DUMMY_FILES):
        builder = _build("ambiguous_mnist/official", tmp_path, DUMMY_DIR)
    assert builder.info.disable_shuffling
    sub = DUMMY_DIR / "ambiguous_mnist"
    samples = torch_pickle.load_pt(sub / "amnist_samples.pt")[:, 0]
    labels = torch_pickle.load_pt(sub / "amnist_labels.pt")
    for split, pairs in (("train", np.arange(0, 20)), ("test", np.arange(20, 40))):
        d = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))  # stored order
        np.testing.assert_array_equal(d["pair_id"], pairs)
        img = pairs // 10
        np.testing.assert_array_equal(d["sample_id"], img)  # an image's 10 labels adjacent
        np.testing.assert_array_equal(d["label"], labels[img, pairs % 10])
        assert d["is_ambiguous"].all()
        assert d["image"].dtype == np.float32
        assert d["image"][:, :, :, 0].tobytes() == samples[img].tobytes()  # bit-exact
        dist = d["label_distribution"]
        np.testing.assert_allclose(dist.sum(1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(dist[np.arange(len(img)), d["label"]] * 10,
                                   [(labels[i] == labels[i, p % 10]).sum()
                                    for i, p in zip(img, pairs)], rtol=1e-6)
    # whole-image slices: train[10:20] is exactly image 1
    one = tfds.as_numpy(builder.as_dataset(split="train[10:20]", batch_size=-1))
    assert set(one["sample_id"]) == {1} and len(one["label"]) == 10


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


def _generated_file(path, n=4, seed=0):
    """A small generated file written by save_generated: uint8 images, 10 labels each, probs,
    PE = H[probs] and MI <= 0.05, like the recipe's output. Returns (arrays, sha256)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 10)) * 3
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    arrays = {"images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
              "labels": np.stack([rng.choice(10, 10, p=p / p.sum()) for p in probs]),
              "probs": probs, "predictive_entropy": scipy.stats.entropy(probs, axis=1),
              "mutual_information": rng.uniform(0, 0.05, n),
              "metadata": {"note": "test file"}}
    return arrays, amnist_io.save_generated(path, **arrays)


def _no_training():
    """Fails the test if anything would run the generation recipe."""
    return mock.patch.object(generation, "generate",
                             side_effect=AssertionError("the recipe ran at load time"))


def test_generated_file_via_builder_kwargs_reads_the_file_without_training(tmp_path):
    arrays, sha = _generated_file(tmp_path / "amnist.npz")
    with _no_training():
        d = tfds.as_numpy(tfds.load("ambiguous_mnist", split="test", batch_size=-1,
                                    data_dir=tmp_path / "tfds", builder_kwargs={
                                        "generated_file": str(tmp_path / "amnist.npz"),
                                        "generated_sha256": sha}))
    pairs = np.arange(20, 40)  # 4 images x 10 labels: test = images 2, 3
    np.testing.assert_array_equal(d["pair_id"], pairs)
    np.testing.assert_array_equal(d["sample_id"], pairs // 10)
    np.testing.assert_array_equal(d["label"], arrays["labels"][pairs // 10, pairs % 10])
    np.testing.assert_array_equal(np.round(d["image"][..., 0] * 255),
                                  arrays["images"][pairs // 10])
    assert (pathlib.Path(tmp_path) / "tfds" / "ambiguous_mnist" / f"file_{sha[:16]}").is_dir()
    with pytest.raises(ValueError, match="both generated_file and generated_sha256"):
        tfds.builder("ambiguous_mnist", generated_file=str(tmp_path / "amnist.npz"))
    with pytest.raises(ValueError, match="hex SHA-256"):
        tfds.builder("ambiguous_mnist", generated_file="x.npz", generated_sha256="abc")
    with pytest.raises(ValueError, match="Expected generated_file with config None"):
        tfds.builder("ambiguous_mnist/official", generated_file="x.npz", generated_sha256=sha)


def test_generated_reads_the_shipped_file_and_refuses_a_missing_or_corrupt_one(tmp_path,
                                                                                monkeypatch):
    shipped = tmp_path / "data" / "ambiguous_mnist_generated.npz"
    monkeypatch.setattr(amnist_io, "DEFAULT_PATH", shipped)
    monkeypatch.setattr(amnist_io, "GENERATED_SHA256", "0" * 64)
    with _no_training():
        with pytest.raises(FileNotFoundError) as e:
            _build("ambiguous_mnist/generated", tmp_path / "tfds", tmp_path)
        assert "ambiguous_mnist/generated" in str(e.value) and str(shipped) in str(e.value)
        assert amnist_io.REBUILD_COMMAND in str(e.value)
        _, sha = _generated_file(shipped)
        with pytest.raises(amnist_io.GeneratedFileError, match="SHA-256 mismatch") as e:
            _build("ambiguous_mnist/generated", tmp_path / "tfds", tmp_path)
        assert amnist_io.REBUILD_COMMAND in str(e.value)
        assert _finished_versions(tmp_path / "tfds", "generated") == []
        monkeypatch.setattr(amnist_io, "GENERATED_SHA256", sha)
        builder = _build("ambiguous_mnist/generated", tmp_path / "tfds", tmp_path)
    assert builder.info.splits["train"].num_examples == 20


@pytest.mark.real_data
def test_generated_tiny_builds_offline_from_env_mnist(tmp_path):
    """MNIST comes from $DDU_TF_DATA_DIR (set by the root conftest); no manual dir."""
    builder = tfds.builder("ambiguous_mnist/generated_tiny", data_dir=tmp_path)
    builder.download_and_prepare()
    n = generation.TINY_CONFIG.num_images
    assert builder.info.splits["train"].num_examples == n * 10 // 2
    d = tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1))
    np.testing.assert_array_equal(d["pair_id"], np.arange(n * 5, n * 10))
    np.testing.assert_array_equal(d["sample_id"], np.arange(n * 5, n * 10) // 10)
    assert d["image"].min() >= 0.0 and d["image"].max() <= 1.0
    np.testing.assert_allclose(d["label_distribution"].sum(1), 1.0, rtol=1e-6)


@pytest.mark.real_data
@pytest.mark.slow
def test_shipped_generated_prepares_within_a_minute(tmp_path):
    """The real shipped file (12k images) and Dirty-MNIST on top of it, nothing trained."""
    import time

    assert amnist_io.GENERATED_SHA256 is not None, "the shipped file's SHA-256 must be recorded"
    t0 = time.time()
    with _no_training():
        amb = tfds.builder("ambiguous_mnist/generated", data_dir=tmp_path)
        amb.download_and_prepare()
        assert amb.info.splits["train"].num_examples == 60000
        assert amb.info.splits["test"].num_examples == 60000
        from tfds_builders.dirty_mnist import dirty_mnist_dataset_builder  # noqa: F401

        dirty = tfds.builder("dirty_mnist/generated", data_dir=tmp_path)
        dirty.download_and_prepare()
    assert time.time() - t0 < 600
    assert dirty.info.splits["train"].num_examples == 120000
    assert dirty.info.splits["test"].num_examples == 70000
