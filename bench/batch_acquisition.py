"""Benchmark: one batch acquisition (b = 10) of BatchBALD and of PowerBALD, ours vs baal.

Same input for both: ``K = 100`` MC log-probabilities of a ``--pool``-point pool with
``C = 10`` classes (random logits, fixed seed), float64 as the original BatchBALD and baal.

* BatchBALD: ours ``batchbald(log_probs, 10, num_configurations=M)`` (exact joint entropy
  while ``10^(n-1) <= M``, then M sampled configurations; one GEMM per greedy step,
  compiled) vs ``baal.active.heuristics.BatchBALD(10, num_draw=M)`` (always M sampled
  configurations, NumPy/torch). FLOP bound: the GEMMs ours does, ``sum_n 2 N K J_n C``, at
  the float64 matmul peak measured in the same run.
* PowerBALD: ours ``get_batch_acquisition("powerbald")`` (BALD + Gumbel-top-k) vs
  ``baal.active.heuristics.PowerBALD(10)``; elementwise work (~6 FLOP per K x N x C entry:
  exp, products, sums), so its "bound" is that count at the float64 peak, a loose floor.

baal is optional (``bench`` extra): without it only our rows are written, with a note.
Usage: ``python bench/batch_acquisition.py [--pool 2000 --configurations 1000 --repeats 3]``.
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=2000)
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
    logits = np.random.default_rng(0).normal(scale=2.0, size=(args.samples, args.pool, classes))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))       # [K, N, C]
    probs_nck = np.ascontiguousarray(np.exp(log_probs).transpose(1, 2, 0))  # baal's layout
    powerbald = get_batch_acquisition("powerbald")
    ours = {"batchbald": lambda: batchbald(log_probs, args.batch,
                                           num_configurations=args.configurations),
            "powerbald": lambda: powerbald(log_probs, args.batch, seed=0)}
    reference = baal_callables(probs_nck, args.batch, args.configurations)
    fns = {f"ours_{k}": v for k, v in ours.items()}
    repeats = {label: args.repeats for label in fns}
    if reference is not None:
        fns.update({f"baal_{k}": v for k, v in reference.items()})
        repeats.update({f"baal_{k}": args.reference_repeats for k in reference})
    timings = common.time_interleaved(fns, repeats, warmup=1)

    configurations = [classes ** n if classes ** n <= args.configurations
                      else args.configurations for n in range(args.batch)]
    flop_batchbald = sum(joint_entropy_flops(args.pool, args.samples, j, classes)
                         for j in configurations)
    flop_power = 6 * args.pool * args.samples * classes
    size = f"{args.pool} points x K = {args.samples} x C = {classes}, b = {args.batch}"
    baal_name = (f"baal {machine['versions']['baal']}" if reference is not None else None)
    # (the load of the machine during the run is in "machine": load average at start and end)
    note = None if reference is not None else "baal not installed: no reference row"
    rows = [
        common.row(f"BatchBALD, {size}, M = {args.configurations}", "ddu_tf",
                   timings["ours_batchbald"], baal_name,
                   timings.get("baal_batchbald"), flop_batchbald, peaks["float64"],
                   precision="float64", note=note),
        common.row(f"PowerBALD, {size}", "ddu_tf", timings["ours_powerbald"], baal_name,
                   timings.get("baal_powerbald"), flop_power, peaks["float64"],
                   precision="float64", note="; ".join(filter(None, [note, "elementwise, bound is a loose floor"]))),
    ]
    common.write_result("batch_acquisition", {
        "config": vars(args), "configurations_per_step": configurations,
        "flop": {"batchbald": flop_batchbald, "powerbald": flop_power},
        "baal_available": reference is not None, "timings": timings, "rows": rows,
        "readme_notes": [
            "Batch acquisition: ours computes BatchBALD's joint entropies exactly while the "
            "chosen points have <= M class configurations and from M samples beyond, one GEMM "
            "per greedy step; baal always samples M configurations."]},
        machine, peaks, argv)


if __name__ == "__main__":
    main()
