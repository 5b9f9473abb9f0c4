"""Benchmark: MNIST-1D generation, ddu_tf (vectorised) vs the reference package, same run.

Asserts bit-exact float64 equality at every size timed, prints both times and the speed-up.

    .venv/bin/python bench/mnist1d_generation.py --sizes 5000 20000 100000
"""
import argparse
import os
import sys
import time

import mnist1d.data as reference
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddu_tf.io import mnist1d  # noqa: E402

KEYS = ("x", "x_test", "y", "y_test", "t")


def _time(fn, repeats):
    """Best-of-``repeats`` (wall seconds, process CPU seconds) and the last output.

    CPU time is the fairer figure on a shared machine (other processes inflate wall time).
    """
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - start_wall)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 100000])
    parser.add_argument("--repeats", type=int, default=1, help="best-of-N timing of both")
    parser.add_argument("--shuffle-seq", action="store_true")
    args = parser.parse_args(argv)
    print(f"{'samples':>8} {'ref wall s':>10} {'ours wall s':>11} {'ratio':>6} "
          f"{'ref cpu s':>9} {'ours cpu s':>10} {'ratio':>6}  bit-exact")
    for size in args.sizes:
        ref_args = reference.get_dataset_args()
        ref_args.num_samples = size
        ref_args.shuffle_seq = args.shuffle_seq
        ref_wall, ref_cpu, ref = _time(lambda: reference.make_dataset(ref_args), args.repeats)
        our_wall, our_cpu, ours = _time(
            lambda: mnist1d.make_dataset(num_samples=size, shuffle_seq=args.shuffle_seq),
            args.repeats)
        exact = all(np.array_equal(ours[k], ref[k]) and ours[k].dtype == ref[k].dtype for k in KEYS)
        print(f"{size:>8} {ref_wall:>10.3f} {our_wall:>11.3f} {ref_wall / our_wall:>5.1f}x "
              f"{ref_cpu:>9.3f} {our_cpu:>10.3f} {ref_cpu / our_cpu:>5.1f}x  {exact}", flush=True)
        assert exact, f"ddu_tf output differs from the reference at num_samples={size}"


if __name__ == "__main__":
    main()
