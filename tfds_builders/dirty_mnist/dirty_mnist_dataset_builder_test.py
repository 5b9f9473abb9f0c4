"""Tests of the dirty_mnist builder on dummy MNIST IDX files and dummy .pt files: published
order equal to the official concatenation, generated files read without training."""
import gzip
import pathlib
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ddu_tf.data import dirty_mnist
from ddu_tf.io import mnist_idx
from tfds_builders.ambiguous_mnist import (
    ambiguous_mnist_dataset_builder_test as amnist_builder_test)
from tfds_builders.dirty_mnist import dirty_mnist_dataset_builder

DUMMY_DIR = pathlib.Path(__file__).resolve().parent / "dummy_data"
# SHA-256 of the decompressed dummy IDX files (6 train, 4 test random images) and MD5 of the
# dummy .pt files (4 images x 10 labels, written by torch 2.13 torch.save).
DUMMY_SHA256 = {
    ("mnist", "train-images-idx3-ubyte"):
        "5c94822fdecf849fd759989797dea76fc6c0973bf34adfc264fa75f492301b3e",
    ("mnist", "train-labels-idx1-ubyte"):
        "c00348bd1e64fa9611d8fdb225b8e16b94c1e77044038e74a1249f1b52491b40",
    ("mnist", "t10k-images-idx3-ubyte"):
        "aace4176ac366048a6407eb68c2d94b72310616c38621d4f8bdaaf9e6a909450",
    ("mnist", "t10k-labels-idx1-ubyte"):
        "ed5f5da6ab95ed444fc873226450222fdd215ed8615513a2e2f3a4587572cfb7",
}
DUMMY_COUNTS = {"train": 6, "test": 4}
DUMMY_FILES = {"samples": ("amnist_samples.pt", "65bda6c04e09a50578026b0023bc9c04"),
               "labels": ("amnist_labels.pt", "563d1a489bfa9b24061298dc77c41bdb")}


def _patches():
    return [mock.patch.dict(mnist_idx.IDX_SHA256, DUMMY_SHA256),
            mock.patch.dict(mnist_idx.NUM_EXAMPLES, DUMMY_COUNTS),
            mock.patch.dict(dirty_mnist.AMBIGUOUS_FILES, DUMMY_FILES)]


class DirtyMnistOfficialTest(tfds.testing.DatasetBuilderTestCase):
    """6 + 20 train and 4 + 20 test examples."""

    DATASET_CLASS = dirty_mnist_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["official"]
    SPLITS = {"train": 26, "test": 24}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._patches = _patches()
        for p in cls._patches:
            p.start()

    @classmethod
    def tearDownClass(cls):
        for p in cls._patches:
            p.stop()
        super().tearDownClass()


@pytest.fixture
def dummy_patches():
    patches = _patches()
    for p in patches:
        p.start()
    yield
    for p in patches:
        p.stop()


def _prepare(tmp_path, name="dirty_mnist/official", **kwargs):
    builder = tfds.builder(name, data_dir=tmp_path, **kwargs)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(DUMMY_DIR)))
    return builder


def test_official_contents_against_raw_idx_bytes(tmp_path, dummy_patches):
    builder = _prepare(tmp_path)
    d = tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1))
    raw = gzip.decompress((DUMMY_DIR / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    oracle = np.frombuffer(raw, np.uint8, offset=16).reshape(4, 28, 28)
    mnist = ~d["is_ambiguous"]
    assert mnist.sum() == 4 and d["is_ambiguous"].sum() == 20
    np.testing.assert_array_equal(d["image"][mnist][:, :, :, 0] * 255.0, oracle)
    assert d["image"].dtype == np.float32
    assert set(d["sample_id"][d["is_ambiguous"]]) == {2, 3}  # test pairs 20..39 = images 2, 3


@pytest.mark.parametrize("split, n_mnist", [("train", 6), ("test", 4)])
def test_published_order_is_the_official_concatenation(tmp_path, dummy_patches, split,
                                                       n_mnist):
    """Stored order = MNIST (IDX order) then the pairs image by image, as
    `load_dirty_arrays` concatenates the raw files; `split[:n_mnist]` is exactly MNIST."""
    builder = _prepare(tmp_path)
    assert builder.info.disable_shuffling
    assert dict(builder.info.metadata) == {"mnist_examples": {"train": 6, "test": 4},
                                           "ambiguous_images": {"train": 2, "test": 2},
                                           "labels_per_image": 10}
    d = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    oracle = dirty_mnist.load_dirty_arrays("train_full" if split == "train" else split,
                                           "official", data_dir=DUMMY_DIR)
    np.testing.assert_array_equal(d["image"][..., 0], oracle["images"])
    np.testing.assert_array_equal(d["label"], oracle["label"])
    np.testing.assert_array_equal(d["is_ambiguous"], oracle["is_ambiguous"])
    np.testing.assert_array_equal(d["sample_id"], oracle["sample_id"])
    amb = d["is_ambiguous"]
    np.testing.assert_array_equal(
        np.where(amb, d["pair_id"] + dirty_mnist.NOISE_KEY_OFFSETS["ambiguous"], -1),
        np.where(amb, oracle["noise_key"], -1))
    assert (d["pair_id"][~amb] == -1).all()
    first_image = 0 if split == "train" else 2
    np.testing.assert_array_equal(d["sample_id"][amb],  # an image's 10 labels adjacent
                                  np.repeat(np.arange(first_image, first_image + 2), 10))
    head = tfds.as_numpy(builder.as_dataset(split=f"{split}[:{n_mnist}]", batch_size=-1))
    raw = mnist_idx.load_idx_arrays("mnist", split, DUMMY_DIR)
    np.testing.assert_array_equal(head["image"][..., 0] * 255.0, raw[0])
    np.testing.assert_array_equal(head["label"], raw[1])
    assert not head["is_ambiguous"].any()


def test_generated_file_via_builder_kwargs_without_training(tmp_path, dummy_patches):
    from ddu_tf.io import ambiguous_mnist as amnist_io

    arrays, sha = amnist_builder_test._generated_file(tmp_path / "amnist.npz")
    with amnist_builder_test._no_training():
        builder = _prepare(tmp_path / "tfds", "dirty_mnist", generated_file=str(
            tmp_path / "amnist.npz"), generated_sha256=sha)
    assert builder.builder_config.name == f"file_{sha[:16]}"
    d = tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1))
    assert len(d["label"]) == 6 + 20 and not d["is_ambiguous"][:6].any()
    np.testing.assert_array_equal(d["sample_id"][6:], np.repeat([0, 1], 10))
    np.testing.assert_array_equal(d["label"][6:], arrays["labels"][:2].ravel())
    np.testing.assert_array_equal(np.round(d["image"][6:, :, :, 0] * 255),
                                  np.repeat(arrays["images"][:2], 10, axis=0))
    assert amnist_io.load_generated(tmp_path / "amnist.npz", sha).labels.shape == (4, 10)


def test_corrupt_idx_leaves_no_finished_dataset(tmp_path):
    manual = tmp_path / "manual"
    (manual / "mnist").mkdir(parents=True)
    for f in (DUMMY_DIR / "mnist").iterdir():
        (manual / "mnist" / f.name).write_bytes(f.read_bytes())
    path = manual / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10
    path.write_bytes(gzip.compress(bytes(raw)))
    patches = _patches()
    for p in patches:
        p.start()
    try:
        with pytest.raises(mnist_idx.IdxChecksumError, match="t10k-labels-idx1-ubyte"):
            builder = tfds.builder("dirty_mnist/official", data_dir=tmp_path / "tfds")
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    finally:
        for p in patches:
            p.stop()
    root = tmp_path / "tfds" / "dirty_mnist" / "official"
    assert not any((p / "dataset_info.json").exists() for p in root.glob("*"))
