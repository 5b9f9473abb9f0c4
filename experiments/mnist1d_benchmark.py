"""MNIST-1D benchmark (Greydanus 2020): logistic, MLP, CNN and GRU on regular and shuffled data.

Reference recipe (the repo's notebooks): Adam lr 1e-2, no weight decay, batches of 100 in
the stored (fixed) order, 6000 steps, cross-entropy on logits; test accuracy on the 1000
test signals. Data come from the ``mnist1d`` TFDS builder through ``ddu_tf.data.load``
(``mnist1d`` and ``mnist1d/shuffled``: the same signals, positions permuted once).

Outputs in ``--output-dir``: ``results.json`` (``mean`` / ``std`` / ``values`` of the final
test accuracy in percent, keyed ``<config>/<model>``; ``best`` = the best test accuracy seen
at the evaluation points, like the rounded README figures; ``published`` / ``notebooks``
reference numbers; ``seconds``; ``info`` = the arguments) and ``benchmark.png`` (bars with
one standard deviation over seeds against the published and notebook numbers).

Example::

    python experiments/mnist1d_benchmark.py --seeds 0 1 2 --steps 6000 --batch-size 100 \\
        --lr 1e-2 --output-dir results/mnist1d_benchmark
"""
import argparse
import json
import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddu_tf import data  # noqa: E402  (importing ddu_tf registers the mnist1d builder)
from ddu_tf.models import get_model  # noqa: E402

MODELS = ("logistic", "mlp", "cnn1d", "gru")
CONFIGS = {"regular": "mnist1d", "shuffled": "mnist1d/shuffled"}
PUBLISHED = {"regular": {"logistic": 32, "mlp": 68, "cnn1d": 94, "gru": 91},
             "shuffled": {"logistic": 32, "mlp": 68, "cnn1d": 56, "gru": 57}}
"""Test accuracy (%) in the MNIST-1D README."""
NOTEBOOKS = {"regular": {"logistic": 31.5, "mlp": 65.0, "cnn1d": 92.5, "gru": 90.0},
             "shuffled": {"logistic": 31.5, "mlp": 66.0, "cnn1d": 58.0, "gru": 54.0}}
"""Approximate test accuracy (%) recorded in the repo's notebooks (GRU regular: 89-91)."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["regular", "shuffled"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=6000, help="optimiser steps per run")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    p.add_argument("--eval-every", type=int, default=500,
                   help="steps between test evaluations (must divide --steps)")
    p.add_argument("--steps-per-execution", type=int, default=100,
                   help="training steps per compiled call (Keras steps_per_execution)")
    p.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--data-dir", default=None, help="TFDS data directory (default: TFDS')")
    p.add_argument("--output-dir", default="results/mnist1d_benchmark")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "eval_every", "steps_per_execution"):
        if getattr(args, name) < 1:
            p.error(f"Expected --{name.replace('_', '-')} >= 1. Received: {getattr(args, name)}")
    if args.steps % args.eval_every:
        p.error(f"Expected --steps to be a multiple of --eval-every. Received: steps={args.steps}, "
                f"eval_every={args.eval_every}")
    if not args.lr > 0:
        p.error(f"Expected --lr > 0. Received: {args.lr}")
    return args


def train_and_evaluate(model_name, dataset, seed, args):
    """Trains one model with the reference recipe; returns (final %, best %, seconds)."""
    keras.utils.set_random_seed(seed)
    train = data.load(dataset, "train", args.batch_size, repeat=True, data_dir=args.data_dir)
    test = data.load(dataset, "test", 1000, data_dir=args.data_dir)
    model = get_model(model_name, num_classes=10, input_shape=(40,))
    model.compile(optimizer=keras.optimizers.Adam(args.lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=args.jit_compile,
                  steps_per_execution=min(args.steps_per_execution, args.eval_every))
    start = time.perf_counter()
    history = model.fit(train, steps_per_epoch=args.eval_every,
                        epochs=args.steps // args.eval_every, validation_data=test,
                        shuffle=False, verbose=0)
    seconds = time.perf_counter() - start
    accuracies = [100.0 * a for a in history.history["val_accuracy"]]
    return accuracies[-1], max(accuracies), seconds


def summarise(values):
    """Mean and sample standard deviation (ddof=1; 0 for one seed) of per-seed values."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std


def plot(results, path):
    """Grouped bars per configuration: ours (mean +- std) vs published vs notebooks."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({key.split("/")[0] for key in results["mean"]},
                     key=list(CONFIGS).index)
    fig, axes = plt.subplots(1, len(configs), figsize=(6 * len(configs), 4), squeeze=False)
    for ax, config in zip(axes[0], configs):
        models = [m for m in MODELS if f"{config}/{m}" in results["mean"]]
        xs = np.arange(len(models))
        ours = [results["mean"][f"{config}/{m}"] for m in models]
        errs = [results["std"][f"{config}/{m}"] for m in models]
        ax.bar(xs - 0.27, ours, 0.27, yerr=errs, capsize=3, label="ddu_tf (mean +- std)")
        ax.bar(xs, [PUBLISHED[config][m] for m in models], 0.27, label="published (README)")
        ax.bar(xs + 0.27, [NOTEBOOKS[config][m] for m in models], 0.27, label="repo notebooks")
        for x, value, err in zip(xs, ours, errs):
            ax.text(x - 0.27, value + err + 1.5, f"{value:.1f}", ha="center", fontsize=8)
        ax.set_xticks(xs, models)
        ax.set_ylim(0, 105)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"MNIST-1D {config}")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    results = {"mean": {}, "std": {}, "values": {}, "best": {}, "seconds": {},
               "published": {}, "notebooks": {}, "info": vars(args)}
    print(f"{'config/model':<18} {'mean':>6} {'std':>5} {'best':>6} {'published':>9} "
          f"{'notebooks':>9}  per-seed", flush=True)
    for config in args.configs:
        for model_name in args.models:
            key = f"{config}/{model_name}"
            runs = [train_and_evaluate(model_name, CONFIGS[config], seed, args)
                    for seed in args.seeds]
            finals, bests, seconds = (list(v) for v in zip(*runs))
            results["values"][key] = finals
            results["mean"][key], results["std"][key] = summarise(finals)
            results["best"][key] = bests
            results["seconds"][key] = seconds
            results["published"][key] = PUBLISHED[config][model_name]
            results["notebooks"][key] = NOTEBOOKS[config][model_name]
            print(f"{key:<18} {results['mean'][key]:>6.1f} {results['std'][key]:>5.1f} "
                  f"{np.mean(bests):>6.1f} {PUBLISHED[config][model_name]:>9} "
                  f"{NOTEBOOKS[config][model_name]:>9}  "
                  f"{' '.join(f'{v:.1f}' for v in finals)}  ({sum(seconds):.0f} s)", flush=True)
            with open(os.path.join(args.output_dir, "results.json"), "w") as f:
                json.dump(results, f, indent=2)
    plot(results, os.path.join(args.output_dir, "benchmark.png"))
    return results


if __name__ == "__main__":
    main()
