"""Benchmark: MC-dropout BALD scoring of a 2000-point pool with T = 100, in the same run.

Implementations on the Bayesian CNN (Gal et al. 2017), same inputs, all measured at the
full size (no scaling):

* ours: ``MCDropoutPredictor`` -- conv trunk once per point, dropout suffix T times on
  the tiled trunk output, chunked ``tf.map_fn`` in one ``tf.function``; then ``bald``.
* ours, consistent masks (BatchBALD's: the same T masks for every point):
  ``MCDropoutPredictor(consistent_masks=True)``, where the first dropout is folded into the
  Dense kernel (one ``[features, T * units]`` GEMM, no masked activations).
* naive TF: a Python loop of T full passes ``model(x, training=True)``, then ``bald``.
* baal (torch CPU): an equivalent torch CNN, ``baal.bayesian.dropout.patch_module``
  (``baal.bayesian.consistent_dropout.patch_module`` for the consistent row),
  ``ModelWrapper.predict_on_batch(batch, iterations=T)`` (input replicated T times in
  memory) and ``baal.active.heuristics.BALD``.

FLOP bound: analytic Conv/Dense FLOPs (2 x MACs per layer, ``model_flops``) of the work
ours does (trunk once, suffix T times: ``MCDropoutPredictor.flops``) at the float32 matmul
peak measured in the same run. The T full passes of naive TF and baal are also recorded.

Usage: ``python bench/mc_dropout_scoring.py [--pool 2000 --T 100 --repeats 3
--reference-repeats 1]``. Writes ``results/bench/mc_dropout_scoring.json``.
Library names used: ``ddu_tf.active_learning.{MCDropoutPredictor, bald, model_flops}`` and
``ddu_tf.models.bayesian_cnn.bayesian_cnn``.
"""
import argparse
import os

import common  # bench/common.py: puts this checkout first on sys.path

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ddu_tf.active_learning import MCDropoutPredictor, bald, model_flops  # noqa: E402
from ddu_tf.models.bayesian_cnn import bayesian_cnn  # noqa: E402


def naive_tf(model, x, num_samples, batch=500):
    """T full training-mode passes in a Python loop (what most code does)."""
    passes = []
    for _ in range(num_samples):
        logits = tf.concat([model(x[i:i + batch], training=True)
                            for i in range(0, len(x), batch)], axis=0)
        passes.append(tf.nn.log_softmax(logits))
    return bald(tf.stack(passes)).numpy()


def torch_cnn(num_classes=10):
    """The Bayesian CNN's layout in torch (conv 32@4x4, conv 32@4x4, pool, dropout .25,
    dense 128, dropout .5, dense)."""
    import torch.nn as nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 4), nn.ReLU(), nn.Conv2d(32, 32, 4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(), nn.Linear(3872, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, num_classes))


def baal_bald(x_nhwc, num_samples, batch, consistent=False):
    """A callable running baal's MC-dropout BALD on ``x_nhwc`` (``consistent``: baal's
    consistent dropout, one mask set reused for every batch)."""
    import torch
    from baal.active.heuristics import BALD
    from baal.bayesian import consistent_dropout, dropout
    from baal.modelwrapper import ModelWrapper, TrainingArgs

    torch.manual_seed(0)
    patch = consistent_dropout.patch_module if consistent else dropout.patch_module
    model = patch(torch_cnn()).eval()
    wrapper = ModelWrapper(model, TrainingArgs(batch_size=batch, use_cuda=False,
                                               replicate_in_memory=True))
    data = torch.from_numpy(np.transpose(x_nhwc, (0, 3, 1, 2)).copy())

    def run():
        probs = []
        with torch.no_grad():
            for i in range(0, len(data), batch):
                logits = wrapper.predict_on_batch(data[i:i + batch], iterations=num_samples)
                probs.append(torch.softmax(logits, dim=1).numpy())  # [b, C, T]
        return BALD().compute_score(np.concatenate(probs))
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--baal-batch", type=int, default=20)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of ours")
    parser.add_argument("--reference-repeats", type=int, default=1,
                        help="timed calls of naive TF and of baal")
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    import torch
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    machine = common.machine_info()
    peaks = common.matmul_peaks()

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.pool, 28, 28, 1)).astype(np.float32)
    model = bayesian_cnn()
    predictor = MCDropoutPredictor(model, args.T, chunk_size=args.chunk_size)
    consistent = MCDropoutPredictor(model, args.T, consistent_masks=True,
                                    chunk_size=args.chunk_size)
    # Warm-ups (tracing, compilation, first allocations), not timed.
    predictor.reduce(x, bald).numpy()  # the timed input's shape: no retracing later
    consistent.reduce(x, bald).numpy()
    naive_tf(model, x[:500], 1)
    run_baal = baal_bald(x, args.T, args.baal_batch)
    baal_bald(x[:args.baal_batch], 2, args.baal_batch)()
    run_baal_consistent = baal_bald(x, args.T, args.baal_batch, consistent=True)

    timings = common.time_interleaved(
        {"ours": lambda: predictor.reduce(x, bald).numpy(),
         "ours_consistent": lambda: consistent.reduce(x, bald).numpy(),
         "naive_tf": lambda: naive_tf(model, x, args.T),
         "baal": run_baal, "baal_consistent": run_baal_consistent},
        {"ours": args.repeats, "ours_consistent": args.repeats,
         "naive_tf": args.reference_repeats, "baal": args.reference_repeats,
         "baal_consistent": args.reference_repeats})
    assert consistent.flops(args.pool) == predictor.flops(args.pool)  # same work, regrouped
    ours_flops = predictor.flops(args.pool)
    full_flops = args.pool * args.T * model_flops(model)
    size = f"MC-dropout BALD, {args.pool} points x T = {args.T}, Bayesian CNN"
    peak = peaks["float32"]
    rows = [
        common.row(size, "ddu_tf", timings["ours"], "naive TF loop of T full passes",
                   timings["naive_tf"], ours_flops, peak,
                   note=f"naive TF at {timings['naive_tf']['wall_s']['min'] / (full_flops / peak):.1f}x"
                        " its own bound (T full passes)"),
        common.row(size, "ddu_tf", timings["ours"], f"baal {machine['versions']['baal']} "
                   "on torch CPU", timings["baal"], ours_flops, peak,
                   note=f"baal at {timings['baal']['wall_s']['min'] / (full_flops / peak):.1f}x"
                        " its own bound (T full passes)"),
        common.row(size + "; consistent masks (the same T masks for every point), dropout "
                   "folded into the Dense kernel", "ddu_tf", timings["ours_consistent"],
                   f"baal {machine['versions']['baal']} consistent dropout on torch CPU",
                   timings["baal_consistent"], ours_flops, peak,
                   note=f"ours with per-example masks {timings['ours']['wall_s']['min']:.2f} s"),
    ]
    print(f"chunk {predictor.chunk_size}; ours {ours_flops / 1e9:.1f} GFLOP (trunk once, "
          f"suffix T times), T full passes {full_flops / 1e9:.1f} GFLOP "
          f"({full_flops / ours_flops:.1f}x); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    common.write_result("mc_dropout_scoring", {
        "config": vars(args), "chunk_size": predictor.chunk_size,
        "chunk_size_consistent": consistent.chunk_size,
        "flop": {"ours": ours_flops, "full_passes": full_flops},
        "torch_threads": torch.get_num_threads(), "timings": timings, "rows": rows,
        "readme_notes": [
            f"MC-dropout: ours runs the deterministic trunk once per point and only the "
            f"stochastic suffix T times ({ours_flops / 1e9:.1f} GFLOP, {full_flops / ours_flops:.1f}x "
            f"fewer than the {full_flops / 1e9:.1f} GFLOP of T full passes that naive TF and baal "
            "do); its bound counts that work. With consistent masks (BatchBALD's) the first "
            "dropout is folded into the next Dense kernel: the same FLOPs as one "
            "[features, T * units] GEMM, without the T x pool x features masks and masked "
            "activations that per-example masks must draw and store."]},
        machine, peaks, argv)


if __name__ == "__main__":
    main()
