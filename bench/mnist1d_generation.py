"""Benchmark: MNIST-1D generation, ddu_tf vs the reference ``mnist1d`` package, same run.

At every size, both generators are timed interleaved (ours, reference, ours, ...) and their
outputs are asserted bit-exact (float64 ``x``, ``x_test``, labels and ``t``). No FLOP bound:
the work is random-stream replay, interpolation and per-sample transforms, not matrix
products (the matmul peaks are still recorded with the run).

    .venv/bin/python bench/mnist1d_generation.py [--sizes 5000 20000 100000 --repeats 3
        --reference-repeats 2]

Writes ``results/bench/mnist1d_generation.json``.
"""
import argparse

import common  # bench/common.py: puts this checkout first on sys.path

import mnist1d.data as reference  # noqa: E402
import numpy as np  # noqa: E402

from ddu_tf.io import mnist1d  # noqa: E402

KEYS = ("x", "x_test", "y", "y_test", "t")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 100000])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of ours")
    parser.add_argument("--reference-repeats", type=int, default=2,
                        help="timed calls of the reference package")
    parser.add_argument("--shuffle-seq", action="store_true")
    args = parser.parse_args(argv)
    machine = common.machine_info()
    peaks = common.matmul_peaks()
    rows, sizes = [], {}
    for size in args.sizes:
        ref_args = reference.get_dataset_args()
        ref_args.num_samples = size
        ref_args.shuffle_seq = args.shuffle_seq
        out = {}

        def ours():
            out["ours"] = mnist1d.make_dataset(num_samples=size, shuffle_seq=args.shuffle_seq)

        def ref():
            out["reference"] = reference.make_dataset(ref_args)

        timings = common.time_interleaved(
            {"ours": ours, "reference": ref},
            {"ours": args.repeats, "reference": args.reference_repeats})
        exact = all(np.array_equal(out["ours"][k], out["reference"][k])
                    and out["ours"][k].dtype == out["reference"][k].dtype for k in KEYS)
        assert exact, f"ddu_tf output differs from the reference at num_samples={size}"
        sizes[str(size)] = {"bit_exact": exact, "timings": timings}
        cpu_ratio = timings["reference"]["cpu_s"]["min"] / timings["ours"]["cpu_s"]["min"]
        rows.append(common.row(
            f"MNIST-1D generation, {size:,} samples (bit-exact)", "ddu_tf",
            timings["ours"], "`mnist1d` package", timings["reference"],
            note=f"CPU-time speed-up {cpu_ratio:.1f}x; not FLOP-bound"))
        print(common.format_row(rows[-1]), flush=True)
    common.write_result("mnist1d_generation", {"config": vars(args), "sizes": sizes,
                                               "rows": rows}, machine, peaks, argv)


if __name__ == "__main__":
    main()
