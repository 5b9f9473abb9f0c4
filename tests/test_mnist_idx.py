"""IDX reading: real MNIST / Fashion-MNIST from $DDU_TF_DATA_DIR, formats, digests, errors."""
import gzip
import struct

import numpy as np
import pytest

from ddu_tf.io import mnist_idx

# Published class counts (independent of this code): MNIST train / test.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _fixed_offset_read(path, offset):
    """Oracle: what TFDS' own mnist builder does (skip a fixed header)."""
    return np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8, offset=offset)


def test_mnist_both_splits_match_oracle_and_published_counts(mnist_data_dir):
    for split, counts in (("train", MNIST_TRAIN_COUNTS), ("test", MNIST_TEST_COUNTS)):
        images, labels = mnist_idx.load_idx_arrays("mnist", split)
        n = sum(counts)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(labels, minlength=10), counts)
        img_file, lbl_file = mnist_idx.FILES[split]
        root = mnist_data_dir / "mnist"
        np.testing.assert_array_equal(images.reshape(-1),
                                      _fixed_offset_read(root / f"{img_file}.gz", 16))
        np.testing.assert_array_equal(labels, _fixed_offset_read(root / f"{lbl_file}.gz", 8))


def test_fashion_mnist_balanced(mnist_data_dir):
    images, labels = mnist_idx.load_idx_arrays("fashion_mnist", "test")
    assert images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)


def _copy_split(root, tmp_path, split="test", dataset="mnist", compress=True):
    out = tmp_path / dataset
    out.mkdir(parents=True, exist_ok=True)
    for name in mnist_idx.FILES[split]:
        raw = gzip.decompress((root / dataset / f"{name}.gz").read_bytes())
        if compress:
            (out / f"{name}.gz").write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
        else:
            (out / name).write_bytes(raw)
    return out


def test_uncompressed_and_regzipped_files_pass(mnist_data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(mnist_idx.ENV_VAR, raising=False)
    ref_images, ref_labels = None, None
    for compress in (False, True):
        d = tmp_path / str(compress)
        _copy_split(mnist_data_dir, d, compress=compress)
        images, labels = mnist_idx.load_idx_arrays("mnist", "test", data_dir=d)
        if ref_images is None:
            ref_images, ref_labels = images, labels
        np.testing.assert_array_equal(images, ref_images)
        np.testing.assert_array_equal(labels, ref_labels)
    # a directory holding the files directly is accepted too
    images, _ = mnist_idx.load_idx_arrays("mnist", "test", data_dir=tmp_path / "True" / "mnist")
    np.testing.assert_array_equal(images, ref_images)


def test_one_changed_byte_fails_checksum(mnist_data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(mnist_idx.ENV_VAR, raising=False)
    d = _copy_split(mnist_data_dir, tmp_path, compress=False)
    path = d / "t10k-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[100] = (raw[100] + 1) % 10
    path.write_bytes(bytes(raw))
    with pytest.raises(mnist_idx.IdxChecksumError, match="t10k-labels-idx1-ubyte") as e:
        mnist_idx.load_idx_arrays("mnist", "test", data_dir=tmp_path)
    assert mnist_idx.URLS["mnist"] in str(e.value)


def test_truncated_gzip_fails(mnist_data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(mnist_idx.ENV_VAR, raising=False)
    d = _copy_split(mnist_data_dir, tmp_path)
    path = d / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50000])
    with pytest.raises(mnist_idx.IdxFormatError, match="truncated"):
        mnist_idx.load_idx_arrays("mnist", "test", data_dir=tmp_path)


def _idx(dtype_code, dims, payload):
    return struct.pack(">HBB", 0, dtype_code, len(dims)) + struct.pack(f">{len(dims)}I",
                                                                       *dims) + payload


def test_parse_idx_header_validation():
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(mnist_idx.parse_idx(_idx(0x08, (2, 3), arr.tobytes())), arr)
    ints = np.array([-1, 70000], ">i4")
    np.testing.assert_array_equal(mnist_idx.parse_idx(_idx(0x0C, (2,), ints.tobytes())),
                                  [-1, 70000])
    with pytest.raises(mnist_idx.IdxFormatError, match="magic"):
        mnist_idx.parse_idx(b"\x01\x00\x08\x02" + b"\x00" * 20)
    with pytest.raises(mnist_idx.IdxFormatError, match="magic"):
        mnist_idx.parse_idx(_idx(0x07, (2, 3), arr.tobytes()))
    with pytest.raises(mnist_idx.IdxFormatError, match="expected shape"):
        mnist_idx.parse_idx(_idx(0x08, (2, 3), arr.tobytes()), expected_shape=(3, 2))
    with pytest.raises(mnist_idx.IdxFormatError, match="truncated"):
        mnist_idx.parse_idx(_idx(0x08, (2, 3), arr.tobytes()[:-1]))
    with pytest.raises(mnist_idx.IdxFormatError, match="too short"):
        mnist_idx.parse_idx(b"\x00\x00")


def test_missing_files_error_names_files_urls_and_dirs(tmp_path, monkeypatch):
    monkeypatch.delenv(mnist_idx.ENV_VAR, raising=False)
    with pytest.raises(mnist_idx.DataNotFoundError) as e:
        mnist_idx.load_idx_arrays("fashion_mnist", "train", data_dir=tmp_path)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    assert str(tmp_path / "fashion_mnist") in msg
    assert mnist_idx.URLS["fashion_mnist"] + "train-images-idx3-ubyte.gz" in msg
    with pytest.raises(ValueError, match="split"):
        mnist_idx.load_idx_arrays("mnist", "validation")


def test_download_verifies_and_leaves_no_partial_file(mnist_data_dir, tmp_path, monkeypatch):
    src = _copy_split(mnist_data_dir, tmp_path / "mirror")
    monkeypatch.setitem(mnist_idx.URLS, "mnist", src.as_uri() + "/")
    monkeypatch.delenv(mnist_idx.ENV_VAR, raising=False)
    dest = tmp_path / "dest"
    images, labels = mnist_idx.load_idx_arrays("mnist", "test", data_dir=dest, download=True)
    assert images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(labels), MNIST_TEST_COUNTS)
    # a corrupt mirror: the download fails and nothing that looks finished is left behind
    bad = tmp_path / "bad" / "mnist"
    bad.mkdir(parents=True)
    for name in mnist_idx.FILES["test"]:
        (bad / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 8))
    monkeypatch.setitem(mnist_idx.URLS, "mnist", bad.as_uri() + "/")
    dest2 = tmp_path / "dest2"
    with pytest.raises(mnist_idx.IdxChecksumError):
        mnist_idx.download_idx_files("mnist", dest2, "test")
    assert list((dest2 / "mnist").iterdir()) == []


def test_fetch_fallback_used_only_when_missing_and_errors_are_clear(mnist_data_dir, tmp_path, monkeypatch):
    calls = []

    def fetch(urls):
        calls.append(dict(urls))
        raise ConnectionError("offline")

    images, _ = mnist_idx.load_idx_arrays_or_fetch("mnist", "test", None, fetch)
    assert images.shape == (10000, 28, 28) and calls == []  # found via $DDU_TF_DATA_DIR
    monkeypatch.delenv(mnist_idx.ENV_VAR, raising=False)
    with pytest.raises(mnist_idx.DataNotFoundError, match="t10k-images-idx3-ubyte"):
        mnist_idx.load_idx_arrays_or_fetch("mnist", "test", tmp_path, fetch)
    assert calls == [{name: mnist_idx.URLS["mnist"] + name + ".gz"
                      for name in mnist_idx.FILES["test"]}]
