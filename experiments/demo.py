"""The main job: DDU and Bayesian active learning end to end on MNIST-1D, in minutes on a CPU.

MNIST-1D is procedural (no download), so this is the first thing to run:

    make demo                                   # or: python experiments/demo.py
    python experiments/demo.py --output-dir runs/my-demo --epochs 40

Steps (each uses only the public ``ddu_tf`` API, so it is the example to copy):

1. Data: TFDS ``mnist1d`` through ``ddu_tf.data`` (4000 train / 1000 test).
2. DDU model: a 1-D residual CNN with soft spectral normalisation (coeff 3) and the residual
   "mod" (LeakyReLU, average-pool shortcuts), trained with ``model.fit`` (TensorBoard logs).
3. DDU uncertainty: class-conditional Gaussians fitted on the training features (float64);
   accuracy, ECE (15 bins) and OoD AUROC of softmax entropy vs GMM density.
   OoD set: ``mnist1d/shuffled`` test, i.e. the *same* 1000 test signals with the spatial axis
   permuted by one fixed permutation. Values, noise, global normalisation and label set are
   identical to the in-distribution test set; only the spatial structure the network learned
   is destroyed. A detector cannot succeed on amplitude statistics alone, so it is a fair
   (covariate-shift) OoD set for a 1-D signal model, and needs no second data source.
4. Active learning: a few rounds from 20 class-balanced labels, acquiring 10 per round, with
   MC-dropout BALD (compiled, trunk once + stochastic suffix T times), DDU density (lowest
   class-prior-weighted GMM density first) and random acquisition as the baseline. Each round
   re-initialises the one model in place and trains it ``--al-steps`` steps with the compiled
   active-learning trainer (``ddu_tf.active_learning.CompiledTrainer``).
5. One summary table on stdout; ``summary.json``, PNG figures and TensorBoard logs in one
   output folder whose path is printed.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import ddu_tf  # noqa: E402,F401  (registers the TFDS builders)
from ddu_tf import cli, data, metrics, training  # noqa: E402
from ddu_tf.active_learning import (ActiveLearningLoop, CompiledTrainer,  # noqa: E402
                                    FixedLengthSampler, bald, check_acquisition_plan,
                                    initial_state, random_scores)
from ddu_tf.active_learning.ddu_scoring import acquisition_scores  # noqa: E402
from ddu_tf.inference import MCDropoutPredictor, Predictor, fit_gmm, gmm_scores  # noqa: E402
from ddu_tf.models import get_model  # noqa: E402

NUM_CLASSES = 10
STRATEGIES = ("bald", "ddu", "random")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output-dir", default=None,
                        help="output folder (default: runs/demo-<date>-<time>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30, help="DDU model training epochs")
    parser.add_argument("-b", "--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--coeff", type=float, default=3.0, help="spectral normalisation bound")
    parser.add_argument("--al-rounds", type=int, default=5, help="acquisition rounds")
    parser.add_argument("--al-initial", type=int, default=20, help="initial labelled points")
    parser.add_argument("--al-acquire", type=int, default=10, help="points acquired per round")
    parser.add_argument("--al-steps", type=int, default=300,
                        help="optimiser steps per active-learning round (model re-initialised)")
    parser.add_argument("--pool-subset", type=int, default=2000,
                        help="random pool points scored per round")
    parser.add_argument("--mc-samples", type=int, default=20, help="T, MC-dropout samples")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir (default: TFDS's)")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "al_initial", "al_acquire", "al_steps", "pool_subset",
                 "mc_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    if args.al_rounds < 0:
        parser.error(f"--al-rounds must be >= 0 (got {args.al_rounds})")
    if not args.coeff > 0:
        parser.error(f"--coeff must be > 0 (got {args.coeff})")
    return args


def load_arrays(config, split, data_dir):
    """``(x [n, 40] float32, y [n] int64)`` of ``mnist1d/<config>`` (TFDS)."""
    ds = data.tfds_builder(f"mnist1d/{config}", data_dir=data_dir).as_dataset(
        split=split, as_supervised=True, batch_size=-1)
    x, y = tfds.as_numpy(ds)
    return x.astype(np.float32), y.astype(np.int64)


def ddu_model(args, dropout_rate=0.0):
    return get_model("resnet1d", num_classes=NUM_CLASSES, input_shape=(40,),
                     spectral_normalization=True, coeff=args.coeff, mod=True,
                     dropout_rate=dropout_rate)


def train_ddu_model(args, out_dir):
    """Step 2: train the SN + mod residual CNN with ``model.fit`` and TensorBoard."""
    keras.utils.set_random_seed(args.seed)
    train = data.load("mnist1d", "train", args.batch_size, shuffle=True, seed=args.seed,
                      data_dir=args.data_dir)
    test = data.load("mnist1d", "test", 500, data_dir=args.data_dir)
    model = training.compile_model(ddu_model(args), keras.optimizers.Adam(args.lr))
    print(f"[2/4] Training resnet1d + SN(coeff={args.coeff}) + mod "
          f"({model.count_params():,} parameters) for {args.epochs} epochs", flush=True)
    start = time.perf_counter()
    model.fit(train, epochs=args.epochs, validation_data=test, verbose=2, shuffle=False,
              callbacks=[keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard", "ddu"))])
    return model, time.perf_counter() - start


def evaluate_ddu(model, args):
    """Step 3: GMM on training features; accuracy, ECE, OoD AUROC (entropy vs density)."""
    train = data.load("mnist1d", "train", 500, data_dir=args.data_dir)
    test = data.load("mnist1d", "test", 500, data_dir=args.data_dir)
    ood = data.load("mnist1d/shuffled", "test", 500, data_dir=args.data_dir)
    predictor = Predictor(model, chunk_size=500)
    gmm = fit_gmm(predictor, train, NUM_CLASSES)
    in_scores, ood_scores = gmm_scores(predictor, gmm, test), gmm_scores(predictor, gmm, ood)
    test_density, ood_density = in_scores["log_density"], ood_scores["log_density"]
    test_entropy, ood_entropy = in_scores["entropy"], ood_scores["entropy"]
    test_labels = in_scores["labels"]
    probs = tf.nn.softmax(in_scores["logits"]).numpy()
    entropy_auroc, entropy_auprc = metrics.ood_auroc_auprc(test_entropy, ood_entropy,
                                                           higher_is_uncertain=True)
    density_auroc, density_auprc = metrics.ood_auroc_auprc(test_density, ood_density,
                                                           higher_is_uncertain=False)
    result = {
        "test/accuracy": metrics.accuracy(test_labels, probs.argmax(1)),
        "test/ece": metrics.ece_from_probs(probs, test_labels),
        "ood/mnist1d_shuffled_auroc_softmax_entropy": entropy_auroc,
        "ood/mnist1d_shuffled_auprc_softmax_entropy": entropy_auprc,
        "ood/mnist1d_shuffled_auroc_gmm_density": density_auroc,
        "ood/mnist1d_shuffled_auprc_gmm_density": density_auprc,
        "gmm/jitter": float(gmm.jitter),
    }
    scores = {"entropy": (test_entropy, ood_entropy), "density": (test_density, ood_density)}
    return result, scores


def plot_ood(scores, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    titles = {"entropy": "softmax entropy (nats)", "density": "GMM log-density"}
    for ax, (key, (iid, ood)) in zip(axes, scores.items()):
        lo, hi = np.percentile(np.concatenate([iid, ood]), [0.5, 99.5])
        bins = np.linspace(lo, hi, 50)
        ax.hist(iid, bins=bins, alpha=0.6, density=True, label="MNIST-1D test (iD)")
        ax.hist(ood, bins=bins, alpha=0.6, density=True, label="MNIST-1D shuffled (OoD)")
        ax.set_xlabel(titles[key])
        ax.legend(fontsize=8)
    fig.suptitle("DDU on MNIST-1D: aleatoric (entropy) vs epistemic (feature density)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_active_learning(strategy, args, arrays, out_dir):
    """Step 4: one active-learning run; returns its history (list of round records)."""
    x_train, y_train, x_test, y_test = arrays
    state = initial_state(y_train, num_initial=args.al_initial, num_validation=0,
                          seed=args.seed)
    writer = tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard", f"al_{strategy}"))
    dropout = 0.25 if strategy == "bald" else 0.0
    # One model for the run, re-initialised in place each round (same seeded initial weights,
    # fresh optimiser state) and trained --al-steps steps of --batch-size draws: the train
    # step and the predictors below are traced once per run.
    trainer = CompiledTrainer(lambda: ddu_model(args, dropout_rate=dropout), epochs=1,
                              batch_size=args.batch_size, learning_rate=args.lr,
                              sampler=FixedLengthSampler(args.al_steps * args.batch_size))
    predictor = MCDropoutPredictor(trainer.model, num_samples=args.mc_samples, seed=args.seed)
    deterministic = Predictor(trainer.model, chunk_size=500)

    def train_fn(labelled, round_index):
        trainer.fit(x_train[labelled], y_train[labelled], seed=args.seed,
                    sampler_seed=[args.seed, round_index])
        return trainer.model

    def evaluate_fn(model, round_index):
        if strategy == "bald":  # MC-averaged predictive, as in Gal et al.
            log_probs = predictor.mean_log_probs(x_test).numpy()
        else:
            log_probs = tf.nn.log_softmax(deterministic.logits(x_test)).numpy()
        return {"test/accuracy": metrics.accuracy(y_test, log_probs.argmax(1))}

    def score_fn(model, candidates, round_index):
        pool = x_train[candidates]
        if strategy == "bald":
            return predictor.reduce(pool, bald, seed=(args.seed, round_index)).numpy()
        if strategy == "ddu":
            labelled = np.asarray(loop.state.labelled)
            return acquisition_scores("gmm", [deterministic], pool,
                                      labelled_images=x_train[labelled],
                                      labelled_labels=y_train[labelled],
                                      num_classes=NUM_CLASSES)
        dummy = tf.zeros([1, len(candidates), NUM_CLASSES])
        return random_scores(dummy, seed=(args.seed, round_index)).numpy()

    def on_round_end(record, model):
        with writer.as_default():
            tf.summary.scalar("test/accuracy", record["metrics"]["test/accuracy"],
                              step=record["num_labelled"])
        progress.update(1)

    loop = ActiveLearningLoop(
        state, train_fn=train_fn, evaluate_fn=evaluate_fn, score_fn=score_fn,
        acquisition_size=args.al_acquire, num_rounds=args.al_rounds,
        result_path=os.path.join(out_dir, f"active_learning_{strategy}.json"),
        pool_subset_size=args.pool_subset, on_round_end=on_round_end,
        config={"strategy": strategy, "seed": args.seed, "initial": args.al_initial,
                "acquire": args.al_acquire, "rounds": args.al_rounds, "steps": args.al_steps,
                "pool_subset": args.pool_subset, "mc_samples": args.mc_samples})
    with tqdm(total=args.al_rounds + 1, initial=loop.next_round, desc=f"  AL {strategy:>6}",
              unit="round", file=sys.stdout) as progress:
        return loop.run()


def plot_active_learning(histories, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for strategy, history in histories.items():
        ax.plot([r["num_labelled"] for r in history],
                [100 * r["metrics"]["test/accuracy"] for r in history], marker="o",
                label=strategy)
    ax.set_xlabel("labelled training points")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Active learning on MNIST-1D")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_table(summary):
    ddu = summary["ddu"]
    lines = [
        "",
        "=" * 66,
        "ddu_tf demo on MNIST-1D (4000 train / 1000 test)",
        "=" * 66,
        f"DDU model: resnet1d + SN(coeff {summary['args']['coeff']}) + mod, "
        f"{summary['ddu_train_seconds']:.0f} s training",
        f"  test accuracy                         {100 * ddu['test/accuracy']:6.2f} %",
        f"  test ECE (15 bins)                    {100 * ddu['test/ece']:6.2f} %",
        "  OoD = MNIST-1D shuffled test           AUROC    AUPRC",
        f"    softmax entropy (aleatoric)          "
        f"{100 * ddu['ood/mnist1d_shuffled_auroc_softmax_entropy']:6.2f}   "
        f"{100 * ddu['ood/mnist1d_shuffled_auprc_softmax_entropy']:6.2f}",
        f"    GMM density (DDU, epistemic)         "
        f"{100 * ddu['ood/mnist1d_shuffled_auroc_gmm_density']:6.2f}   "
        f"{100 * ddu['ood/mnist1d_shuffled_auprc_gmm_density']:6.2f}",
    ]
    histories = summary["active_learning"]
    if histories:
        strategies = list(histories)
        lines += ["", "Active learning: test accuracy (%) by labelled set size",
                  "  labelled " + "".join(f"{s:>9}" for s in strategies)]
        for i, record in enumerate(histories[strategies[0]]):
            row = [100 * histories[s][i]["metrics"]["test/accuracy"] for s in strategies]
            lines.append(f"  {record['num_labelled']:8d} " + "".join(f"{v:9.2f}" for v in row))
    lines += ["=" * 66, f"Outputs (JSON, PNG, TensorBoard): {summary['output_dir']}",
              f"Total time: {summary['total_seconds']:.0f} s", ""]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    out_dir = os.path.abspath(args.output_dir or os.path.join(
        "runs", time.strftime("demo-%Y%m%d-%H%M%S")))
    os.makedirs(out_dir, exist_ok=True)
    print(f"[1/4] Building MNIST-1D (TFDS 'mnist1d') -> outputs in {out_dir}", flush=True)
    x_train, y_train = load_arrays("default", "train", args.data_dir)
    x_test, y_test = load_arrays("default", "test", args.data_dir)
    load_arrays("shuffled", "test", args.data_dir)
    if args.al_rounds > 0:  # before training: a plan that cannot run fails now
        check_acquisition_plan(args.al_acquire, args.al_rounds,
                               pool_size=len(y_train) - args.al_initial,
                               pool_subset_size=args.pool_subset,
                               names={"acquisition_size": "--al-acquire",
                                      "num_rounds": "--al-rounds",
                                      "pool_subset_size": "--pool-subset"})

    model, train_seconds = train_ddu_model(args, out_dir)
    print("[3/4] Fitting the class-conditional GMM and scoring iD / OoD", flush=True)
    ddu_result, scores = evaluate_ddu(model, args)
    plot_ood(scores, os.path.join(out_dir, "ood_histograms.png"))

    print(f"[4/4] Active learning: {args.al_initial} initial + {args.al_acquire} x "
          f"{args.al_rounds} rounds, strategies {', '.join(STRATEGIES)}", flush=True)
    histories = {}
    if args.al_rounds > 0:
        arrays = (x_train, y_train, x_test, y_test)
        for strategy in STRATEGIES:
            histories[strategy] = run_active_learning(strategy, args, arrays, out_dir)
        plot_active_learning(histories, os.path.join(out_dir, "active_learning.png"))

    summary = {"args": vars(args), "output_dir": out_dir, "ddu": ddu_result,
               "ddu_train_seconds": train_seconds, "active_learning": histories,
               "total_seconds": time.perf_counter() - start}
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    print(summary_table(summary), flush=True)
    return summary


if __name__ == "__main__":
    cli.run(main)
