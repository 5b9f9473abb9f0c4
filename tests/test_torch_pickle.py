"""Restricted, size-bounded reader of torch.save files: hand-written files (no torch), files
written by real torch (when installed), malicious pickles rejected without executing anything,
and crafted files whose declared sizes do not match their tensors or their length refused
before anything large is allocated."""
import io
import os
import pathlib
import pickle
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from ddu_tf.io import torch_pickle

DUMMY = (pathlib.Path(__file__).resolve().parent.parent / "tfds_builders" / "ambiguous_mnist"
         / "dummy_data" / "ambiguous_mnist")
OWN_ERRORS = (torch_pickle.TorchFileFormatError, torch_pickle.UnsafePickleError)


# ---- an independent writer: pickle opcodes assembled by hand -------------------------------
def _int(v):
    """BININT for 32-bit values, LONG1 (8 bytes) beyond."""
    if -2**31 <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    return b"\x8a\x08" + struct.pack("<q", v)


def _str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _tuple(items):
    return b"(" + b"".join(items) + b"t"


def tensor_call(storage_cls, numel, offset, size, stride, key="0", legacy=False):
    """Opcodes pushing ``_rebuild_tensor_v2(storage, offset, size, stride, False, {})``."""
    pid = [_str("storage"), b"ctorch\n" + storage_cls.encode() + b"\n", _str(key), _str("cpu"),
           _int(numel)]
    if legacy:
        pid.append(b"N")
    return (b"ctorch._utils\n_rebuild_tensor_v2\n"
            + _tuple([_tuple(pid) + b"Q", _int(offset), _tuple([_int(s) for s in size]),
                      _tuple([_int(s) for s in stride]), b"\x89",
                      b"ccollections\nOrderedDict\n)R"])
            + b"R")


def tensor_pickle(storage_cls, numel, offset, size, stride, key="0", legacy=False):
    """Protocol-2 pickle of one tensor."""
    return b"\x80\x02" + tensor_call(storage_cls, numel, offset, size, stride, key, legacy) + b"."


def write_zip_pt(path, pkl, storage_bytes, byteorder="little", prefix="archive",
                 compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", pkl)
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        zf.writestr(f"{prefix}/data/0", storage_bytes, compress_type=compression)
        zf.writestr(f"{prefix}/version", "3\n")


def legacy_bytes(pkl, keys, storages, little=True):
    """Legacy torch.save layout: magic, protocol, sys_info, ``pkl``, keys, (count, bytes)*."""
    stream = io.BytesIO()
    for header in (torch_pickle.LEGACY_MAGIC_NUMBER, torch_pickle.LEGACY_PROTOCOL_VERSION,
                   {"protocol_version": 1001, "little_endian": little,
                    "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, stream, protocol=2)
    stream.write(pkl)
    pickle.dump(keys, stream, protocol=2)
    for count, raw in storages:
        stream.write(struct.pack("<q" if little else ">q", count) + raw)
    return stream.getvalue()


def peak_bytes(fn):
    """(result or raised exception, peak traced allocation in bytes) of ``fn()``."""
    tracemalloc.start()
    try:
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 -- returned to the caller to assert on
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


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
    data = legacy_bytes(tensor_pickle("FloatStorage", 12, 0, [3, 4], [4, 1], key="94",
                                      legacy=True), ["94"], [(12, x.astype("<f4").tobytes())])
    p = tmp_path / "legacy.pt"
    p.write_bytes(data)
    np.testing.assert_array_equal(torch_pickle.load_pt(p), x)
    p.write_bytes(data[:-5])
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


# ---- declared sizes checked before reading ---------------------------------------------------
def _deflated_zeros_zip(path, nbytes, numel, tensor_numel):
    """A zip whose storage entry is ``nbytes`` zeros, deflated (~1/1000 of that on disk)."""
    chunk = bytes(1 << 20)
    info = zipfile.ZipInfo("archive/data/0")
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", tensor_pickle("FloatStorage", numel, 0, [tensor_numel],
                                                      [1]))
        zf.writestr("archive/byteorder", "little")
        with zf.open(info, "w", force_zip64=True) as out:  # streamed: never 64 MB in memory
            for _ in range(nbytes >> 20):
                out.write(chunk)
    return path


@pytest.mark.parametrize("declared_numel", [10, 16 << 20])
def test_small_zip_inflating_far_beyond_its_tensor_refused_without_allocating(
        tmp_path, declared_numel):
    """A 64 MiB entry of deflated zeros (~65 KB on disk) backing a 10-element tensor: refused
    whether the pickle declares 10 elements (entry size mismatch) or 16M (storage far larger
    than its tensor), with a peak allocation far below the entry's size."""
    p = _deflated_zeros_zip(tmp_path / "bomb.pt", 64 << 20, declared_numel, 10)
    assert p.stat().st_size < 1 << 20
    error, peak = peak_bytes(lambda: torch_pickle.load_pt(p))
    assert isinstance(error, torch_pickle.TorchFileFormatError), error
    assert peak < 4 << 20, peak


def test_compressed_storage_entry_refused(tmp_path):
    x = np.arange(10, dtype=np.float32)
    p = tmp_path / "deflated.pt"
    write_zip_pt(p, tensor_pickle("FloatStorage", 10, 0, [10], [1]), x.tobytes(),
                 compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(torch_pickle.TorchFileFormatError, match="compressed"):
        torch_pickle.load_pt(p)


def test_zip_declaring_huge_tensor_with_small_entry_refused(tmp_path):
    """Pickle and tensor agree on 2**40 floats (4 TiB); the entry holds 40 bytes."""
    p = tmp_path / "huge.pt"
    write_zip_pt(p, tensor_pickle("FloatStorage", 2**40, 0, [2**40], [1]), bytes(40))
    error, peak = peak_bytes(lambda: torch_pickle.load_pt(p))
    assert isinstance(error, torch_pickle.TorchFileFormatError) and "bytes" in str(error)
    assert peak < 1 << 20


@pytest.mark.parametrize("numel, count, match", [
    (2**40, 2**40, "declare"),       # pickle, count and tensor all claim 4 TiB
    (10, 2**60, "holds"),            # the count field alone is huge
    (10, 11, "holds"),               # a count that disagrees with the pickle
])
def test_legacy_huge_or_mismatched_element_count_refused(tmp_path, numel, count, match):
    x = np.arange(10, dtype=np.float32)
    data = legacy_bytes(tensor_pickle("FloatStorage", numel, 0, [numel], [1], key="1",
                                      legacy=True), ["1"], [(count, x.tobytes())])
    p = tmp_path / "legacy.pt"
    p.write_bytes(data)
    error, peak = peak_bytes(lambda: torch_pickle.load_pt(p))
    assert isinstance(error, torch_pickle.TorchFileFormatError), error
    assert match in str(error) and peak < 1 << 20


def test_legacy_trailing_bytes_refused(tmp_path):
    x = np.arange(4, dtype=np.float32)
    data = legacy_bytes(tensor_pickle("FloatStorage", 4, 0, [4], [1], key="1", legacy=True),
                        ["1"], [(4, x.tobytes())])
    p = tmp_path / "legacy.pt"
    p.write_bytes(data + b"junk")
    with pytest.raises(torch_pickle.TorchFileFormatError, match="follow the pickles"):
        torch_pickle.load_pt(p)


@pytest.mark.parametrize("numel, offset, size, stride, match", [
    (10, 0, [11], [1], "too small"),            # reads past the storage
    (10, 8, [3], [1], "too small"),             # offset pushes the view out
    (10, 0, [4, 4], [1, 3], "too small"),       # stride out of range
    (10, 0, [5], [-1], "shape"),                # negative stride
    (10, -1, [5], [1], "geometry"),             # negative offset
    (10, 0, [5, 2], [1], "geometry"),           # size / stride rank mismatch
    (10, 0, [1] * 33, [1] * 33, "shape"),       # rank beyond MAX_NDIM
    (10**6, 0, [10], [1], "more than"),         # storage far larger than its tensor
    (1, 0, [10**9], [0], "expanded"),           # a stride-0 expansion to 4 GB
])
def test_storage_not_matching_its_tensor_refused(tmp_path, numel, offset, size, stride, match):
    p = tmp_path / "bad.pt"
    write_zip_pt(p, tensor_pickle("FloatStorage", numel, offset, size, stride),
                 bytes(4 * numel))
    error, peak = peak_bytes(lambda: torch_pickle.load_pt(p))
    assert isinstance(error, torch_pickle.TorchFileFormatError), error
    assert match in str(error), error
    assert peak < 8 * 4 * numel + (1 << 20)


def test_entry_size_not_a_whole_number_of_elements_refused(tmp_path):
    p = tmp_path / "partial.pt"
    write_zip_pt(p, tensor_pickle("DoubleStorage", 3, 0, [3], [1]), bytes(20))  # needs 24
    with pytest.raises(torch_pickle.TorchFileFormatError, match="wrong size or dtype"):
        torch_pickle.load_pt(p)


def _shared_storage_pickle(second_cls="FloatStorage", second_numel=12):
    """``{"a": t [3, 4], "b": t.T [4, 3] starting at element 1}``, one storage key."""
    return (b"\x80\x02}(" + _str("a") + tensor_call("FloatStorage", 12, 0, [3, 4], [4, 1])
            + _str("b") + tensor_call(second_cls, second_numel, 1, [4, 2], [1, 4]) + b"u.")


def test_storage_shared_by_two_tensors(tmp_path):
    base = np.arange(12, dtype=np.float32)
    p = tmp_path / "shared.pt"
    write_zip_pt(p, _shared_storage_pickle(), base.tobytes())
    out = torch_pickle.load_pt(p)
    np.testing.assert_array_equal(out["a"], base.reshape(3, 4))
    np.testing.assert_array_equal(out["b"], [[base[1 + i + 4 * j] for j in range(2)]
                                             for i in range(4)])
    out["a"][0, 0] = -1  # independent copies
    assert out["b"][0, 0] == 1


@pytest.mark.parametrize("second_cls, second_numel", [("DoubleStorage", 12),
                                                      ("FloatStorage", 13)])
def test_storage_declared_twice_differently_refused(tmp_path, second_cls, second_numel):
    p = tmp_path / "twice.pt"
    write_zip_pt(p, _shared_storage_pickle(second_cls, second_numel), bytes(48))
    with pytest.raises(torch_pickle.TorchFileFormatError, match="declared twice"):
        torch_pickle.load_pt(p)


@pytest.mark.parametrize("pkl, match", [
    (b"\x80\x02N\x8e" + struct.pack("<Q", 2**50) + b".", "declares"),      # BINBYTES8 4 PiB
    (b"\x80\x05\x96" + struct.pack("<Q", 2**50) + b".", "declares"),      # BYTEARRAY8
    (b"\x80\x02(" * 3 + b"]" * 200000 + b"a" * 199999 + b".", "nested"),   # 200k-deep lists
    (bytes(range(256)) * 4, "corrupt"),                                     # garbage
    (b"\x80\x02ccollections\nOrderedDict\n}b.", "BUILD"),                  # mutate a global
], ids=["binbytes8", "bytearray8", "deep_nesting", "garbage", "build_on_global"])
def test_hostile_pickle_streams_give_own_errors_and_small_peaks(tmp_path, pkl, match):
    p = tmp_path / "hostile.pt"
    write_zip_pt(p, pkl, b"")
    error, peak = peak_bytes(lambda: torch_pickle.load_pt(p))
    assert isinstance(error, OWN_ERRORS), repr(error)
    assert match in str(error), error
    assert peak < 64 << 20


def test_huge_memo_index_does_not_allocate(tmp_path):
    """LONG_BINPUT 2**31 - 1: the C unpickler would size its memo array to it."""
    p = tmp_path / "memo.pt"
    write_zip_pt(p, b"\x80\x02Nr\xff\xff\xff\x7f.", b"")
    out, peak = peak_bytes(lambda: torch_pickle.load_pt(p))
    assert out is None and peak < 1 << 20
    with pytest.raises(torch_pickle.TorchFileFormatError, match="single tensor"):
        torch_pickle.load_pt_tensor(p)


def _fuzz_cases():
    x = np.arange(24, dtype=np.float32)
    good_zip = io.BytesIO()
    with zipfile.ZipFile(good_zip, "w") as zf:
        zf.writestr("archive/data.pkl", _shared_storage_pickle())
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/data/0", x[:12].tobytes())
    good_legacy = legacy_bytes(tensor_pickle("FloatStorage", 24, 0, [4, 6], [6, 1], key="7",
                                             legacy=True), ["7"], [(24, x.tobytes())])
    return {"zip": good_zip.getvalue(), "legacy": good_legacy}


@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_every_truncation_and_random_corruption_gives_own_error(tmp_path, kind):
    """Every prefix of a valid file and 300 copies with 1-8 random bytes changed: the reader
    returns or raises its own errors only (never MemoryError, KeyError, zipfile, pickle,
    struct or numpy internals)."""
    good = _fuzz_cases()[kind]
    p = tmp_path / "fuzz.pt"
    p.write_bytes(good)
    assert torch_pickle.load_pt(p) is not None
    rng = np.random.default_rng(0)
    variants = [good[:n] for n in range(len(good))]
    for _ in range(300):
        data = bytearray(good)
        for pos in rng.integers(0, len(data), rng.integers(1, 9)):
            data[pos] = rng.integers(0, 256)
        variants.append(bytes(data))
    for data in variants:
        p.write_bytes(data)
        try:
            torch_pickle.load_pt(p)
        except OWN_ERRORS:
            pass


# ---- real torch as an independent writer (skipped without torch) ------------------------------
@pytest.mark.parametrize("legacy", [False, True])
def test_files_written_by_torch_save(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=gen)
    objects = {
        "float32": x, "int64": torch.arange(10), "bool": torch.tensor([True, False]),
        "float16": torch.randn(5, generator=gen).half(), "uint8": torch.arange(7).byte(),
        "shared": {"a": x, "b": x.t(), "c": [torch.zeros(0, 3), 1.5, "s"]},
        "small_view": torch.arange(1000.0)[10:20],
        "expanded": torch.tensor([1.0]).expand(1000),
    }

    def same(saved, loaded):
        if isinstance(saved, torch.Tensor):
            return (loaded.dtype == saved.numpy().dtype
                    and np.array_equal(loaded, saved.numpy()))
        if isinstance(saved, dict):
            return saved.keys() == loaded.keys() and all(same(saved[k], loaded[k]) for k in saved)
        if isinstance(saved, list):
            return len(saved) == len(loaded) and all(map(same, saved, loaded))
        return saved == loaded

    for name, obj in objects.items():
        p = tmp_path / f"{name}.pt"
        torch.save(obj, p, _use_new_zipfile_serialization=not legacy)
        assert same(obj, torch_pickle.load_pt(p)), name
    # A 10-element view of a 100k-element tensor saves the whole storage: refused.
    p = tmp_path / "big_view.pt"
    torch.save(torch.arange(100_000.0)[10:20], p, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(torch_pickle.TorchFileFormatError, match="clone"):
        torch_pickle.load_pt(p)
