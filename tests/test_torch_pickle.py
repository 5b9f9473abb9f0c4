"""Restricted reader of torch.save files: hand-written files (no torch), a torch-made file,
malicious pickles rejected without executing anything."""
import io
import os
import pathlib
import pickle
import struct
import zipfile

import numpy as np
import pytest

from ddu_tf.io import torch_pickle

DUMMY = (pathlib.Path(__file__).resolve().parent.parent / "tfds_builders" / "ambiguous_mnist"
         / "dummy_data" / "ambiguous_mnist")


# ---- an independent writer: pickle opcodes assembled by hand -------------------------------
def _int(v):
    return b"J" + struct.pack("<i", v)


def _str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _tuple(items):
    return b"(" + b"".join(items) + b"t"


def tensor_pickle(storage_cls, numel, offset, size, stride, key="0", legacy=False):
    """Protocol-2 pickle of ``_rebuild_tensor_v2(storage, offset, size, stride, False, {})``."""
    pid = [_str("storage"), b"ctorch\n" + storage_cls.encode() + b"\n", _str(key), _str("cpu"),
           _int(numel)]
    if legacy:
        pid.append(b"N")
    return (b"\x80\x02" + b"ctorch._utils\n_rebuild_tensor_v2\n"
            + _tuple([_tuple(pid) + b"Q", _int(offset), _tuple([_int(s) for s in size]),
                      _tuple([_int(s) for s in stride]), b"\x89",
                      b"ccollections\nOrderedDict\n)R"])
            + b"R.")


def write_zip_pt(path, pkl, storage_bytes, byteorder="little", prefix="archive"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", pkl)
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        zf.writestr(f"{prefix}/data/0", storage_bytes)
        zf.writestr(f"{prefix}/version", "3\n")


def test_zip_float_tensor_roundtrip_exact(tmp_path):
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    p = tmp_path / "x.pt"
    write_zip_pt(p, tensor_pickle("FloatStorage", x.size, 0, x.shape,
                                  [784, 784, 28, 1]), x.astype("<f4").tobytes())
    out = torch_pickle.load_pt_tensor(p, dtype=np.float32, ndim=4)
    assert out.dtype == np.float32 and out.shape == (3, 1, 28, 28)
    assert out.tobytes() == x.tobytes()


def test_zip_int64_and_strided_view_with_offset(tmp_path):
    base = np.arange(30, dtype=np.int64)
    p = tmp_path / "y.pt"
    # a transposed 3x4 view starting at element 5: out[i, j] = base[5 + i*1 + j*6]
    write_zip_pt(p, tensor_pickle("LongStorage", 30, 5, [3, 4], [1, 6]), base.tobytes())
    out = torch_pickle.load_pt(p)
    expected = np.array([[5 + i + 6 * j for j in range(4)] for i in range(3)])
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int64 and out.flags.c_contiguous


def test_big_endian_byteorder_entry(tmp_path):
    x = np.array([1.5, -2.25, 3e-8], np.float64)
    p = tmp_path / "be.pt"
    write_zip_pt(p, tensor_pickle("DoubleStorage", 3, 0, [3], [1]), x.astype(">f8").tobytes(),
                 byteorder="big")
    np.testing.assert_array_equal(torch_pickle.load_pt(p), x)


def test_legacy_format(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    stream = io.BytesIO()
    for header in (torch_pickle.LEGACY_MAGIC_NUMBER, torch_pickle.LEGACY_PROTOCOL_VERSION,
                   {"protocol_version": 1001, "little_endian": True,
                    "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, stream, protocol=2)
    stream.write(tensor_pickle("FloatStorage", 12, 0, [3, 4], [4, 1], key="94", legacy=True))
    pickle.dump(["94"], stream, protocol=2)
    stream.write(struct.pack("<q", 12) + x.astype("<f4").tobytes())
    p = tmp_path / "legacy.pt"
    p.write_bytes(stream.getvalue())
    np.testing.assert_array_equal(torch_pickle.load_pt(p), x)
    p.write_bytes(stream.getvalue()[:-5])
    with pytest.raises(torch_pickle.TorchFileFormatError, match="truncated"):
        torch_pickle.load_pt(p)


def test_file_written_by_real_torch():
    """Oracle: dummy_data files were written by torch 2.13 ``torch.save`` from
    ``torch.Generator().manual_seed(0)``: rand(4, 1, 28, 28) then randint(0, 10, (4, 10))."""
    samples = torch_pickle.load_pt_tensor(DUMMY / "amnist_samples.pt", np.float32, 4)
    labels = torch_pickle.load_pt_tensor(DUMMY / "amnist_labels.pt", np.int64, 2)
    assert samples.shape == (4, 1, 28, 28)
    assert samples.ravel()[:3].tolist() == [0.49625658988952637, 0.7682217955589294,
                                            0.08847743272781372]
    assert samples[3, 0, 27, 27] == np.float32(0.9770479202270508)
    assert float(samples.astype(np.float64).sum()) == pytest.approx(1562.9811613559723, abs=1e-9)
    np.testing.assert_array_equal(labels, [[6, 7, 7, 4, 9, 5, 3, 5, 7, 4],
                                           [8, 1, 5, 8, 0, 4, 8, 3, 9, 5],
                                           [3, 9, 9, 4, 5, 1, 5, 3, 6, 8],
                                           [6, 2, 7, 5, 2, 6, 8, 2, 7, 7]])


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


@pytest.mark.parametrize("container", ["zip", "raw_pickle"])
def test_malicious_pickle_rejected_without_executing(tmp_path, container):
    sentinel = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(f"touch {sentinel}"), protocol=2)
    assert b"system" in evil
    p = tmp_path / "evil.pt"
    if container == "zip":
        write_zip_pt(p, evil, b"")
    else:
        p.write_bytes(evil)
    with pytest.raises(torch_pickle.UnsafePickleError, match="system"):
        torch_pickle.load_pt(p)
    assert not sentinel.exists()


def test_builtin_eval_global_rejected(tmp_path):
    p = tmp_path / "eval.pt"
    write_zip_pt(p, b"\x80\x02cbuiltins\neval\n" + _tuple([_str("1+1")]) + b"R.", b"")
    with pytest.raises(torch_pickle.UnsafePickleError, match="builtins.eval"):
        torch_pickle.load_pt(p)


def test_truncated_storage_and_foreign_files(tmp_path):
    x = np.arange(10, dtype=np.float32)
    p = tmp_path / "short.pt"
    write_zip_pt(p, tensor_pickle("FloatStorage", 10, 0, [10], [1]), x[:6].tobytes())
    with pytest.raises(torch_pickle.TorchFileFormatError, match="truncated"):
        torch_pickle.load_pt(p)
    good = tmp_path / "good.pt"
    write_zip_pt(good, tensor_pickle("FloatStorage", 10, 0, [10], [1]), x.tobytes())
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(torch_pickle.TorchFileFormatError):
        torch_pickle.load_pt(cut)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(torch_pickle.TorchFileFormatError, match="not a torch.save file"):
        torch_pickle.load_pt(text)
    with pytest.raises(torch_pickle.TorchFileFormatError, match="expected dtype"):
        torch_pickle.load_pt_tensor(good, dtype=np.int64)
