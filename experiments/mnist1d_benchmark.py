"""MNIST-1D benchmark (Greydanus 2020): logistic, MLP, CNN and GRU on MNIST-1D (regular and
shuffled) and on MNIST, the comparison table of the MNIST-1D README.

Reference recipe (the repo's notebooks): Adam lr 1e-2, no weight decay, batches of 100 in
the stored (fixed) order, 6000 steps, cross-entropy on logits; test accuracy on the test
split. Configs:

* ``regular`` / ``shuffled``: the ``mnist1d`` / ``mnist1d/shuffled`` TFDS builders (4000
  train / 1000 test signals of 40 points; the same signals, positions permuted once).
* ``mnist``: MNIST from the offline IDX files (``ddu_tf.data`` source ``"mnist"`` over
  ``ddu_tf.io.mnist_idx``; ``$DDU_TF_DATA_DIR`` or ``--mnist-dir``), all 60 000 training
  images in IDX order and the 10 000 test images. The MNIST-1D repository has no code for
  its MNIST row, so the recipe is adapted the way the paper compares them: each image is
  flattened row-major into a 784-point sequence (pixels / 255, standardised with the MNIST
  mean 0.1307 and std 0.3081, as MNIST-1D is globally standardised) and fed to the SAME four
  models with input length 784 instead of 40 (logistic 784->10; MLP 784-100-100-10; CNN:
  the three stride-2 convolutions give 784 -> 391 -> 196 -> 98 positions x 25 channels =
  2450 features; GRU: bidirectional, hidden 6, over all 784 steps, 9408 features), with the
  same optimiser, batch, learning rate and 6000 steps (10 epochs of MNIST).

Outputs in ``--output-dir``: ``results.json`` (``mean`` / ``std`` / ``values`` of the final
test accuracy in percent, keyed ``<config>/<model>``; ``best`` = the best test accuracy seen
at the evaluation points, like the rounded README figures; ``published`` / ``notebooks``
reference numbers (``null`` where the notebooks have none); ``seconds``; ``recipe`` = the
recipe of each key) and ``benchmark.png`` (bars with one standard deviation over seeds
against the published and notebook numbers). Keys already in ``results.json`` with the same
recipe are kept and not rerun, so an interrupted run resumes with the same command and runs
of different configs accumulate in one table.

Example::

    python experiments/mnist1d_benchmark.py --seeds 0 1 2 --steps 6000 --batch-size 100 \\
        --lr 1e-2 --output-dir results/mnist1d_benchmark
    python experiments/mnist1d_benchmark.py --configs mnist --seeds 0 1 2 \\
        --output-dir results/mnist1d_benchmark          # the MNIST row, same table
"""
import argparse
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from ddu_tf import cli, data  # (importing ddu_tf registers the mnist1d builder)
from ddu_tf.models import get_model
from ddu_tf.io.atomic import atomic_write_text

MODELS = ("logistic", "mlp", "cnn1d", "gru")
MNIST_LENGTH = 28 * 28
CONFIGS = {  # config -> (data set, train split, test split, signal length)
    "regular": ("mnist1d", "train", "test", 40),
    "shuffled": ("mnist1d/shuffled", "train", "test", 40),
    "mnist": ("mnist", "train_full", "test", MNIST_LENGTH),
}
PUBLISHED = {"regular": {"logistic": 32, "mlp": 68, "cnn1d": 94, "gru": 91},
             "shuffled": {"logistic": 32, "mlp": 68, "cnn1d": 56, "gru": 57},
             "mnist": {"logistic": 94, "mlp": 99, "cnn1d": 99, "gru": 99}}
"""Test accuracy (%) in the MNIST-1D README (MNIST: 94% and "99+%")."""
NOTEBOOKS = {"regular": {"logistic": 31.5, "mlp": 65.0, "cnn1d": 92.5, "gru": 90.0},
             "shuffled": {"logistic": 31.5, "mlp": 66.0, "cnn1d": 58.0, "gru": 54.0},
             "mnist": {m: None for m in MODELS}}
"""Approximate test accuracy (%) recorded in the repo's notebooks (GRU regular: 89-91; the
notebooks do not train on MNIST)."""
RECIPE = ("seeds", "steps", "batch_size", "lr", "eval_every")
"""Arguments that define a result: a key is rerun when any of them changes."""


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
    p.add_argument("--mnist-dir", default=None,
                   help="manual directory with mnist/*-ubyte[.gz] (default: $DDU_TF_DATA_DIR)")
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


def _flatten(x, y):
    """MNIST image ``[28, 28, 1]`` -> row-major sequence ``[784]``."""
    return tf.reshape(x, [MNIST_LENGTH]), y


def load_splits(config, args):
    """``(train, test, length)``: repeated fixed-order train batches, one-pass test batches."""
    name, train_split, test_split, length = CONFIGS[config]
    if config == "mnist":
        kwargs = dict(data_dir=args.mnist_dir, preprocess=_flatten)
    else:
        kwargs = dict(data_dir=args.data_dir)
    train = data.load(name, train_split, args.batch_size, repeat=True, **kwargs)
    test = data.load(name, test_split, 1000, **kwargs)
    return train, test, length


def train_and_evaluate(model_name, config, seed, args):
    """Trains one model with the reference recipe; returns (final %, best %, seconds)."""
    keras.utils.set_random_seed(seed)
    train, test, length = load_splits(config, args)
    model = get_model(model_name, num_classes=10, input_shape=(length,))
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


def load_results(path):
    """The results file to extend (empty tables when absent). A file written before per-key
    recipes existed gets its global ``info`` as every key's recipe."""
    fields = ("mean", "std", "values", "best", "seconds", "published", "notebooks", "recipe")
    results = {field: {} for field in fields}
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        info = saved.pop("info", None)
        results.update({field: saved.get(field, {}) for field in fields})
        if info is not None:
            for key in results["mean"]:
                results["recipe"].setdefault(key, {k: info[k] for k in RECIPE})
    return results


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
    titles = {"regular": "MNIST-1D", "shuffled": "MNIST-1D shuffled", "mnist": "MNIST (784-pt)"}
    fig, axes = plt.subplots(1, len(configs), figsize=(6 * len(configs), 4), squeeze=False)
    for ax, config in zip(axes[0], configs):
        models = [m for m in MODELS if f"{config}/{m}" in results["mean"]]
        xs = np.arange(len(models))
        ours = [results["mean"][f"{config}/{m}"] for m in models]
        errs = [results["std"][f"{config}/{m}"] for m in models]
        ax.bar(xs - 0.27, ours, 0.27, yerr=errs, capsize=3, label="ddu_tf (mean +- std)")
        ax.bar(xs, [PUBLISHED[config][m] for m in models], 0.27, label="published (README)")
        notebooks = [NOTEBOOKS[config][m] for m in models]
        if any(v is not None for v in notebooks):
            ax.bar(xs + 0.27, [np.nan if v is None else v for v in notebooks], 0.27,
                   label="repo notebooks")
        for x, value, err in zip(xs, ours, errs):
            ax.text(x - 0.27, value + err + 1.5, f"{value:.1f}", ha="center", fontsize=8)
        ax.set_xticks(xs, models)
        ax.set_ylim(0, 105)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(titles[config])
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "results.json")
    results = load_results(path)
    recipe = {k: getattr(args, k) for k in RECIPE}
    print(f"{'config/model':<18} {'mean':>6} {'std':>5} {'best':>6} {'published':>9} "
          f"{'notebooks':>9}  per-seed", flush=True)
    for config in args.configs:
        for model_name in args.models:
            key = f"{config}/{model_name}"
            if results["recipe"].get(key) == recipe:
                print(f"{key:<18} already in {path} with this recipe: kept", flush=True)
                continue
            runs = []
            for seed in args.seeds:
                runs.append(train_and_evaluate(model_name, config, seed, args))
                print(f"  {key} seed {seed}: {runs[-1][0]:.2f}% ({runs[-1][2]:.0f} s)",
                      flush=True)
            finals, bests, seconds = (list(v) for v in zip(*runs))
            results["values"][key] = finals
            results["mean"][key], results["std"][key] = summarise(finals)
            results["best"][key] = bests
            results["seconds"][key] = seconds
            results["published"][key] = PUBLISHED[config][model_name]
            results["notebooks"][key] = NOTEBOOKS[config][model_name]
            results["recipe"][key] = recipe
            notebook = NOTEBOOKS[config][model_name]
            print(f"{key:<18} {results['mean'][key]:>6.1f} {results['std'][key]:>5.1f} "
                  f"{np.mean(bests):>6.1f} {PUBLISHED[config][model_name]:>9} "
                  f"{'-' if notebook is None else notebook:>9}  "
                  f"{' '.join(f'{v:.1f}' for v in finals)}  ({sum(seconds):.0f} s)", flush=True)
            atomic_write_text(path, json.dumps(results, indent=2))  # never a half-written table
    plot(results, os.path.join(args.output_dir, "benchmark.png"))
    return results


if __name__ == "__main__":
    cli.run(main)
