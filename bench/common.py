"""Shared machinery of the bench scripts: machine info, matmul peaks, repeated timing, JSON.

Every bench script measures the float32 and float64 matmul peaks of this machine in the
same run as its timings (TensorFlow ``tf.matmul`` of two ``n x n`` matrices, ``2 n^3`` FLOP
per product, best of the repeats), times ours and the reference interleaved (ours, ref,
ours, ref, ... so that load from other processes hits both alike) and writes
``results/bench/<name>.json``::

    {"benchmark": name, "command": ..., "machine": {...}, "peaks": {...},
     "timings": {label: {"wall_s": {"min", "median", "runs"}, "cpu_s": {...}}},
     "rows": [{"benchmark", "ours", "reference", "ours_s", "reference_s", "flop",
               "bound_s", "speedup", "bound_ratio"}, ...], ...}

``speedup`` is reference / ours (min wall time of each); ``bound_ratio`` is ours / bound,
where ``bound = flop / peak`` (1.0 would run at the matmul peak). ``bench/report.py`` turns
the rows into README's Benchmarks table.
"""
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "results", "bench")
if ROOT not in sys.path:  # run from anywhere: import this checkout's ddu_tf
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_PACKAGES = ("numpy", "scipy", "tensorflow", "keras", "tensorflow-probability", "torch",
             "baal", "mnist1d")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Date (UTC), CPU model, core count, load average and the library versions."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "simd": simd,
        "cores": os.cpu_count(),
        "load_average_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "versions": versions,
    }


def matmul_peaks(n: int = 2048, repeats: int = 5) -> dict:
    """Best float32 and float64 ``tf.matmul`` FLOP/s of two ``n x n`` matrices.

    Returns ``{"float32": flop_per_s, "float64": flop_per_s, "n": n, "repeats": repeats}``.
    """
    import tensorflow as tf

    peaks = {"n": n, "repeats": repeats}
    for dtype in (tf.float32, tf.float64):
        a = tf.random.normal([n, n], dtype=dtype, seed=1)
        b = tf.random.normal([n, n], dtype=dtype, seed=2)
        product = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
        product(a, b).numpy()
        best = min(timed(lambda: product(a, b).numpy()) for _ in range(repeats))
        peaks[dtype.name] = 2.0 * n ** 3 / best
    return peaks


def timed(fn) -> float:
    """Wall seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summary(values) -> dict:
    values = [float(v) for v in values]
    return {"min": min(values), "median": statistics.median(values), "runs": values}


def time_interleaved(fns: dict, repeats, warmup: int = 0) -> dict:
    """Time several callables in turn (a, b, a, b, ...), ``repeats`` timed calls each.

    Args:
      fns: ``{label: callable}``.
      repeats: timed calls per callable: an int, or ``{label: int}`` for fewer calls of a slow
        reference (a label with fewer repeats drops out of the later rounds).
      warmup: untimed calls of each before timing (tracing, compilation, caches).

    Returns:
      ``{label: {"wall_s": summary, "cpu_s": summary}}`` where summary is ``{"min",
      "median", "runs"}`` and ``cpu_s`` is this process's CPU time (all threads).
    """
    counts = repeats if isinstance(repeats, dict) else {label: repeats for label in fns}
    for label, fn in fns.items():
        for _ in range(warmup):
            fn()
    walls = {label: [] for label in fns}
    cpus = {label: [] for label in fns}
    for i in range(max(counts.values())):
        for label, fn in fns.items():
            if i >= counts[label]:
                continue
            start_cpu, start = time.process_time(), time.perf_counter()
            fn()
            walls[label].append(time.perf_counter() - start)
            cpus[label].append(time.process_time() - start_cpu)
    return {label: {"wall_s": summary(walls[label]), "cpu_s": summary(cpus[label])}
            for label in fns}


def row(benchmark, ours, ours_timing, reference=None, reference_timing=None, flop=None,
        peak=None, precision="float32", note=None) -> dict:
    """One table row: ours vs the reference (min wall times) and vs the FLOP bound.

    Args:
      benchmark: what is measured (size included), e.g. "GMM fit + score, 50k x 512".
      ours, reference: names of the two implementations.
      ours_timing, reference_timing: entries of :func:`time_interleaved`'s result.
      flop: FLOPs of the work (the bound's numerator), or None when not FLOP-bound.
      peak: the matmul peak (FLOP/s) of ``precision`` measured in the same run.
    """
    ours_s = ours_timing["wall_s"]["min"]
    out = {"benchmark": benchmark, "ours": ours, "ours_s": ours_s,
           "ours_median_s": ours_timing["wall_s"]["median"], "reference": reference,
           "reference_s": None, "reference_median_s": None, "speedup": None,
           "flop": flop, "precision": precision, "bound_s": None, "bound_ratio": None,
           "note": note}
    if reference_timing is not None:
        out["reference_s"] = reference_timing["wall_s"]["min"]
        out["reference_median_s"] = reference_timing["wall_s"]["median"]
        out["speedup"] = out["reference_s"] / ours_s
    if flop is not None and peak:
        out["bound_s"] = flop / peak
        out["bound_ratio"] = ours_s / out["bound_s"]
    return out


def format_row(r: dict) -> str:
    """One printed line of a row."""
    text = f"{r['benchmark']}: {r['ours']} {r['ours_s']:.3f} s (median {r['ours_median_s']:.3f})"
    if r["reference_s"] is not None:
        text += (f" | {r['reference']} {r['reference_s']:.3f} s (median "
                 f"{r['reference_median_s']:.3f}) -> {r['speedup']:.2f}x")
    if r["bound_s"] is not None:
        text += (f" | {r['flop'] / 1e9:.1f} GFLOP, {r['precision']} bound {r['bound_s']:.3f} s,"
                 f" ours at {r['bound_ratio']:.2f}x the bound")
    if r.get("note"):
        text += f" [{r['note']}]"
    return text


def write_result(name: str, payload: dict, machine: dict, peaks: dict, argv=None) -> str:
    """Write ``results/bench/<name>.json`` (machine info, peaks, load at the end) and print
    its rows. Returns the path written."""
    machine = dict(machine, load_average_end=list(os.getloadavg()))
    command = " ".join([".venv/bin/python", f"bench/{name}.py"] + list(
        sys.argv[1:] if argv is None else argv))
    data = {"benchmark": name, "command": command, "machine": machine,
            "peaks_flop_per_s": peaks, **payload}
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load average "
          f"{machine['load_average_start'][0]:.2f} -> {machine['load_average_end'][0]:.2f}; "
          f"matmul peak float32 {peaks['float32'] / 1e9:.1f} GFLOP/s, "
          f"float64 {peaks['float64'] / 1e9:.1f} GFLOP/s")
    for r in payload.get("rows", []):
        print("  " + format_row(r))
    print(f"wrote {os.path.relpath(path, ROOT)}")
    return path
