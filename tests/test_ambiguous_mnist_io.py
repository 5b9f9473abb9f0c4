"""Reader/writer of the shipped generated Ambiguous-MNIST file: round trip, identical bytes,
and one clear error for each kind of bad file (never a pickle execution)."""
import hashlib
import io
import json
import zipfile

import numpy as np
import pytest

from ddu_tf.io import ambiguous_mnist as amio


def _arrays(n=6, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 10)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pe = -(probs * np.log(probs)).sum(1)
    return {"images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            "labels": rng.integers(0, 10, (n, 10)),
            "probs": probs.astype(np.float32), "predictive_entropy": pe.astype(np.float32),
            "mutual_information": rng.uniform(0, 0.05, n).astype(np.float32),
            "metadata": {"config": {"seed": 0}, "note": "test"}}


def _write_raw(path, arrays, allow_pickle=False):
    """An .npz written with numpy's own savez (not our writer), for malformed variants."""
    with open(path, "wb") as f:
        np.savez(f, **arrays) if allow_pickle else np.savez_compressed(f, **arrays)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _valid_raw(n=6):
    a = _arrays(n)
    meta = a.pop("metadata")
    a["labels"] = a["labels"].astype(np.uint8)
    a["metadata"] = np.array(json.dumps(meta))
    return a


def test_round_trip_and_identical_bytes(tmp_path):
    a = _arrays()
    sha = amio.save_generated(tmp_path / "a.npz", **a)
    sha2 = amio.save_generated(tmp_path / "b.npz", **a)
    assert sha == sha2 == hashlib.sha256((tmp_path / "a.npz").read_bytes()).hexdigest()
    d = amio.load_generated(tmp_path / "a.npz", sha256=sha)
    assert d.images.dtype == np.float32 and d.images.shape == (6, 28, 28)
    np.testing.assert_array_equal(d.images * 255, a["images"].astype(np.float32))
    assert d.images.min() >= 0 and d.images.max() <= 1
    assert d.labels.dtype == np.int64
    np.testing.assert_array_equal(d.labels, a["labels"])
    np.testing.assert_array_equal(d.probs, a["probs"])
    np.testing.assert_array_equal(d.predictive_entropy, a["predictive_entropy"])
    np.testing.assert_array_equal(d.mutual_information, a["mutual_information"])
    assert d.metadata == a["metadata"]
    # numpy's own reader agrees, without pickle
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert sorted(z.files) == sorted(amio.KEYS)
        assert z["metadata"].shape == () and json.loads(str(z["metadata"])) == a["metadata"]
        assert z["images"].dtype == np.uint8 and z["labels"].dtype == np.uint8


def test_wrong_digest_names_path_both_digests_and_command(tmp_path):
    path = tmp_path / "a.npz"
    sha = amio.save_generated(path, **_arrays())
    wrong = "0" * 64
    with pytest.raises(amio.GeneratedFileError) as e:
        amio.load_generated(path, sha256=wrong)
    msg = str(e.value)
    assert str(path) in msg and wrong in msg and sha in msg
    assert "build_ambiguous_mnist.py" in msg


def test_missing_file_and_missing_digest(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="build_ambiguous_mnist.py") as e:
        amio.load_generated(tmp_path / "nope.npz", sha256="0" * 64)
    assert str(tmp_path / "nope.npz") in str(e.value)
    with pytest.raises(amio.GeneratedFileError, match="sha256"):
        amio.load_generated(tmp_path / "nope.npz")  # not the shipped file: digest required
    # The shipped path: absent -> the rebuild command; present without a recorded digest -> no
    # unchecked read.
    shipped = tmp_path / "data" / "ambiguous_mnist_generated.npz"
    monkeypatch.setattr(amio, "DEFAULT_PATH", shipped)
    monkeypatch.setattr(amio, "GENERATED_SHA256", None)
    with pytest.raises(FileNotFoundError, match="build_ambiguous_mnist.py"):
        amio.load_generated()
    sha = amio.save_generated(shipped, **_arrays())
    with pytest.raises(amio.GeneratedFileError, match="No SHA-256 is recorded"):
        amio.load_generated()
    monkeypatch.setattr(amio, "GENERATED_SHA256", sha)
    assert amio.load_generated().images.shape == (6, 28, 28)


@pytest.mark.parametrize("change, match", [
    (lambda a: a.pop("mutual_information"), r"missing \['mutual_information'\]"),
    (lambda a: a.update(extra=np.zeros(3)), r"unexpected \['extra'\]"),
    (lambda a: a.update(labels=a["labels"].astype(np.int64)), "`labels` of dtype uint8"),
    (lambda a: a.update(images=a["images"].astype(np.float32)), "`images` of dtype uint8"),
    (lambda a: a.update(images=a["images"][:, :, :27]), r"`images` of shape \[N, 28, 28\]"),
    (lambda a: a.update(probs=a["probs"][:4]), "N=6 rows"),
    (lambda a: a["labels"].__setitem__((2, 3), 10), "labels in 0..9"),
    (lambda a: a["probs"].__setitem__((0, 0), np.nan), "finite probs"),
    (lambda a: a["predictive_entropy"].__setitem__(1, 5.0), "predictive_entropy"),
    (lambda a: a.update(metadata=np.array(["{}", "{}"])), "0-d unicode"),
    (lambda a: a.update(metadata=np.array("not json")), "not valid JSON"),
])
def test_malformed_files_are_refused(tmp_path, change, match):
    a = _valid_raw()
    change(a)
    path = tmp_path / "bad.npz"
    sha = _write_raw(path, a)
    with pytest.raises(amio.GeneratedFileError, match=match) as e:
        amio.load_generated(path, sha256=sha)
    assert str(path) in str(e.value)


def test_odd_number_of_images_is_refused(tmp_path):
    a = _valid_raw(n=5)
    path = tmp_path / "odd.npz"
    with pytest.raises(amio.GeneratedFileError, match="even"):
        amio.load_generated(path, sha256=_write_raw(path, a))


class _Hostile:
    """Unpickling this object would create ``marker`` (a harmless stand-in for any code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("key", ["images", "metadata"])
def test_pickled_object_array_is_refused_without_running_it(tmp_path, key):
    marker = tmp_path / "pwned"
    a = _valid_raw()
    a[key] = np.array([_Hostile(marker)], dtype=object)
    path = tmp_path / "hostile.npz"
    sha = _write_raw(path, a, allow_pickle=True)
    with pytest.raises(amio.GeneratedFileError, match="pickled objects, which are refused"):
        amio.load_generated(path, sha256=sha)
    assert not marker.exists()


def test_non_zip_files_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    raw = tmp_path / "plain.npy"  # a bare .npy / pickle stream instead of an .npz
    buf = io.BytesIO()
    np.save(buf, np.array([_Hostile(marker)], dtype=object), allow_pickle=True)
    raw.write_bytes(buf.getvalue())
    with pytest.raises(amio.GeneratedFileError, match="not a zip archive"):
        amio.load_generated(raw, sha256=hashlib.sha256(buf.getvalue()).hexdigest())
    assert not marker.exists()
    trunc = tmp_path / "trunc.npz"
    full = tmp_path / "full.npz"
    amio.save_generated(full, **_arrays())
    with zipfile.ZipFile(full) as z:  # a zip whose member is cut short
        data = z.read("images.npy")[:200]
    with zipfile.ZipFile(trunc, "w") as z:
        for name in amio.KEYS:
            z.writestr(name + ".npy", data)
    with pytest.raises(amio.GeneratedFileError, match="could not be read"):
        amio.load_generated(trunc, sha256=hashlib.sha256(trunc.read_bytes()).hexdigest())


def test_writer_refuses_bad_arrays(tmp_path):
    a = _arrays()
    with pytest.raises(amio.GeneratedFileError, match="uint8 images"):
        amio.save_generated(tmp_path / "x.npz", **{**a, "images": a["images"] / 255.0})
    with pytest.raises(amio.GeneratedFileError, match="labels in 0..9"):
        amio.save_generated(tmp_path / "x.npz", **{**a, "labels": a["labels"] + 1})
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_file_digest_reads_across_blocks_like_hashlib_on_the_bytes(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (1 << 20) + 7, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert amio.file_digest(path) == hashlib.sha256(data).hexdigest()
    assert amio.file_digest(path, "md5") == hashlib.md5(data).hexdigest()
