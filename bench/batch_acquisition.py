"""Benchmark: one batch acquisition (b = 10) of BatchBALD and of PowerBALD, ours vs baal.

Same input for both: ``K = 100`` MC log-probabilities of a ``--pool``-point pool with
``C = 10`` classes (random logits, fixed seed), float64 as the original BatchBALD and baal.

* BatchBALD: ours ``batchbald(log_probs, 10, num_configurations=M)`` (exact joint entropy
  while ``10^(n-1) <= M``, then M sampled configurations; one GEMM per greedy step,
  compiled) vs ``baal.active.heuristics.BatchBALD(10, num_draw=M)`` (always M sampled
  configurations, NumPy/torch). baal holds the sampled configurations of the whole pool at
  once (~28 MB per point at K = 100, M = 1000: out of memory at 2000 points on 24 GB), so
  the comparison runs at ``--reference-pool`` points; ours is also timed at ``--pool``.
  FLOP bound: the GEMMs ours does, ``sum_n 2 N K J_n C``, at the float64 matmul peak
  measured in the same run.
* PowerBALD: ours ``get_batch_acquisition("powerbald")`` (BALD + Gumbel-top-k) vs
  ``baal.active.heuristics.PowerBALD(10)``; elementwise work (~6 FLOP per K x N x C entry:
  exp, products, sums), so its "bound" is that count at the float64 peak, a loose floor.

baal is optional (``bench`` extra): without it only our rows are written, with a note.
Usage: ``python bench/batch_acquisition.py [--pool 2000 --reference-pool 100]``.
Writes ``results/bench/batch_acquisition.json``.
"""
import argparse

import common  # bench/common.py: puts this checkout first on sys.path

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ddu_tf.active_learning import batchbald, get_batch_acquisition  # noqa: E402
from ddu_tf.active_learning.batch_acquisition import joint_entropy_flops  # noqa: E402


def baal_callables(probs_nck, batch_size, num_draw):
    """baal's BatchBALD and PowerBALD on ``[N, C, K]`` probabilities, or None without baal."""
    try:
        from baal.active.heuristics import BatchBALD
        from baal.active.heuristics.aliases import PowerBALD
    except ImportError:
        return None
    batch = BatchBALD(batch_size, num_draw=num_draw)
    power = PowerBALD(batch_size)
    return {"batchbald": lambda: batch.get_ranks(probs_nck),
            "powerbald": lambda: power.get_ranks(probs_nck)}


def _problem(pool, samples, classes):
    """``[K, N, C]`` log-probabilities (seeded random logits) and baal's ``[N, C, K]`` probs."""
    logits = np.random.default_rng(0).normal(scale=2.0, size=(samples, pool, classes))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return log_probs, np.ascontiguousarray(np.exp(log_probs).transpose(1, 2, 0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--reference-pool", type=int, default=100,
                        help="pool size of the BatchBALD comparison with baal (baal needs "
                             "~28 MB and ~1 s per point at M = 1000: it runs out of 24 GB of "
                             "memory at 2000 points)")
    parser.add_argument("--samples", type=int, default=100, help="K, MC samples")
    parser.add_argument("--batch", type=int, default=10, help="b, points acquired")
    parser.add_argument("--configurations", type=int, default=1000,
                        help="M: ours' sampled configurations = baal's num_draw")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-repeats", type=int, default=1)
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    machine = common.machine_info()
    peaks = common.matmul_peaks()
    classes = 10
    log_probs, probs_nck = _problem(args.pool, args.samples, classes)
    powerbald = get_batch_acquisition("powerbald")
    fns = {"ours_batchbald": lambda: batchbald(log_probs, args.batch,
                                               num_configurations=args.configurations),
           "ours_powerbald": lambda: powerbald(log_probs, args.batch, seed=0)}
    repeats = {label: args.repeats for label in fns}
    reference = baal_callables(probs_nck, args.batch, args.configurations)
    if reference is not None:
        fns["baal_powerbald"] = reference["powerbald"]
        repeats["baal_powerbald"] = args.reference_repeats
    timings = common.time_interleaved(fns, repeats, warmup=1)
    if reference is not None:  # BatchBALD against baal at the pool size baal fits in memory
        small_log_probs, small_probs = _problem(args.reference_pool, args.samples, classes)
        small = {"ours_batchbald_reference_pool": lambda: batchbald(
                     small_log_probs, args.batch, num_configurations=args.configurations),
                 "baal_batchbald_reference_pool": baal_callables(
                     small_probs, args.batch, args.configurations)["batchbald"]}
        small["ours_batchbald_reference_pool"]()  # tracing, not timed
        timings.update(common.time_interleaved(
            small, {"ours_batchbald_reference_pool": args.repeats,
                    "baal_batchbald_reference_pool": args.reference_repeats}))

    configurations = [classes ** n if classes ** n <= args.configurations
                      else args.configurations for n in range(args.batch)]

    def flop_batchbald(pool):
        return sum(joint_entropy_flops(pool, args.samples, j, classes) for j in configurations)

    flop_power = 6 * args.pool * args.samples * classes

    def size(pool):
        return f"{pool} points x K = {args.samples} x C = {classes}, b = {args.batch}"

    baal_name = (f"baal {machine['versions']['baal']}" if reference is not None else None)
    # (the load of the machine during the run is in "machine": load average at start and end)
    note = None if reference is not None else "baal not installed: no reference row"
    rows = [
        common.row(f"BatchBALD, {size(args.pool)}, M = {args.configurations}", "ddu_tf",
                   timings["ours_batchbald"], None, None, flop_batchbald(args.pool),
                   peaks["float64"], precision="float64",
                   note=note or f"baal compared at {args.reference_pool} points (next row): "
                                "it runs out of memory at this size"),
        common.row(f"PowerBALD, {size(args.pool)}", "ddu_tf", timings["ours_powerbald"],
                   baal_name, timings.get("baal_powerbald"), flop_power, peaks["float64"],
                   precision="float64",
                   note="; ".join(filter(None, [note, "elementwise, bound is a loose floor"]))),
    ]
    if reference is not None:
        rows.insert(1, common.row(
            f"BatchBALD, {size(args.reference_pool)}, M = {args.configurations}", "ddu_tf",
            timings["ours_batchbald_reference_pool"], baal_name,
            timings["baal_batchbald_reference_pool"], flop_batchbald(args.reference_pool),
            peaks["float64"], precision="float64"))
    common.write_result("batch_acquisition", {
        "config": vars(args), "configurations_per_step": configurations,
        "flop": {"batchbald": flop_batchbald(args.pool), "powerbald": flop_power,
                 "batchbald_reference_pool": flop_batchbald(args.reference_pool)},
        "baal_available": reference is not None, "timings": timings, "rows": rows,
        "readme_notes": [
            "Batch acquisition: ours computes BatchBALD's joint entropies exactly while the "
            "chosen points have <= M class configurations and from M samples beyond, one GEMM "
            "per greedy step; baal always samples M configurations and holds them for the "
            "whole pool at once (memory ~ N x M x K), so it is compared at a smaller pool."]},
        machine, peaks, argv)


if __name__ == "__main__":
    main()
