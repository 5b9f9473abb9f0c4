"""BatchBALD's MNIST experiment (Kirsch, van Amersfoort & Gal 2019, Fig. 4 / Table 1):
BatchBALD, PowerBALD, top-k BALD and random acquisition at acquisition size 10.

Setting (the paper's): 20 class-balanced initial points, 10 points acquired per round up to
``--max-labels`` (300), a Bayesian CNN with MC dropout, the pool scored with 100 MC samples
with consistent dropout masks (the same 100 masks for every pool point, which BatchBALD's
joint entropy needs; used by every method here), test accuracy of the MC-averaged predictive
on the 10k MNIST test set after every round. The table gives, over the seeds, the quartiles
(25 / 50 / 75 %) of the training-set size (initial points included) at which test accuracy
first reaches 90 % and 95 %, beside the paper notebook's numbers.

Where this differs from the original (BlackHC/BatchBALD), by choice or for CPU time:

* model: the Bayesian CNN of Gal et al. (``ddu_tf.models.bayesian_cnn``, dropout after the
  conv trunk) instead of the original's MNIST net with dropout after the first conv; the
  trunk then runs once per point and only the dense suffix 100 times;
* training: the original's recipe -- Adam 1e-3, batch 64, epochs of 5056 random draws
  (``FixedLengthSampler``), keep the best epoch on the validation points
  (``fit_best_on_validation``; ``--epochs`` epochs instead of early stopping with patience);
  the model is re-initialised every round;
* pool: ``--pool-subset`` random pool points are scored per round (default 10000 of ~59.9k;
  0 = the whole pool as in the paper), because on 2 CPU cores 100 MC samples of the whole
  pool take ~8 min per round;
* BatchBALD: joint entropies exact while ``10^(n-1) <= --num-configurations`` (10000;
  the original 40000), then estimated from that many sampled configurations.

Each run (method x seed) is resumable round by round (``ActiveLearningLoop``): re-running
the same command continues after the last finished round of
``<result-dir>/<method>_seed<s>/results.json``. After every run the aggregate
``table.json``, ``table.md`` and ``test_accuracy.png`` are rewritten from all result files.

Example (a tiny smoke run)::

    python experiments/batchbald_mnist.py --seeds 1 --max-labels 40 --pool-subset 300 \\
        --mc-samples 10 --epochs 2 --sampler-length 256 --test-size 500 \\
        --result-dir /tmp/batchbald
"""
import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf

from ddu_tf import cli
from ddu_tf.active_learning import (ActiveLearningLoop, CompiledTrainer,
                                    FixedLengthSampler, atomic_write_text, bald, batchbald,
                                    check_acquisition_plan, collect_results, first_reaching,
                                    fit_best_on_validation, initial_state, load_results,
                                    random_scores, selection_scores, stochastic_batch)
from ddu_tf.inference import MCDropoutPredictor
from ddu_tf.data.al_pools import load_mnist_pixels
from ddu_tf.models.bayesian_cnn import bayesian_cnn
from ddu_tf.plotting import quantile_curves
from ddu_tf.uncertainty import log_mean_prob

METHODS = ("batchbald", "powerbald", "bald", "random")
THRESHOLDS = (0.90, 0.95)
PAPER = {  # training-set size to reach 90 % / 95 %, quartiles 25/50/75 (paper notebook)
    "batchbald": ("70/90/110", "190/200/230"),
    "bald": ("120/120/170", "250/250/>300"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seed", type=int, default=0, help="seed of the first run")
    p.add_argument("--seeds", type=int, default=3, help="runs per method (seeds seed+i)")
    p.add_argument("--initial", type=int, default=20, help="class-balanced initial points")
    p.add_argument("--acquisition-size", type=int, default=10, help="b, points per round")
    p.add_argument("--max-labels", type=int, default=300,
                   help="stop when the training set has this many points")
    p.add_argument("--val-size", type=int, default=128, help="validation points")
    p.add_argument("--pool-subset", type=int, default=10000,
                   help="random pool points scored per round (0 = whole pool)")
    p.add_argument("--mc-samples", type=int, default=100, help="K, MC dropout samples")
    p.add_argument("--test-mc-samples", type=int, default=100,
                   help="MC samples of the test predictions")
    p.add_argument("--num-configurations", type=int, default=10000,
                   help="BatchBALD: M, exact while 10^(n-1) <= M, else M sampled")
    p.add_argument("--batchbald-dtype", choices=["float32", "float64"], default="float32",
                   help="dtype of BatchBALD's joint entropies")
    p.add_argument("--beta", type=float, default=1.0, help="PowerBALD: p ~ BALD^beta")
    p.add_argument("--epochs", type=int, default=10, help="epochs per round (best on val)")
    p.add_argument("--sampler-length", type=int, default=5056, help="draws per epoch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--test-size", type=int, default=10000, help="test points used")
    p.add_argument("--train-limit", type=int, default=None,
                   help="use only the first N training images (smoke runs)")
    p.add_argument("--data-dir", default=None, help="MNIST IDX dir (else $DDU_TF_DATA_DIR)")
    p.add_argument("--result-dir", default="results/batchbald")
    p.add_argument("--summary-only", action="store_true",
                   help="only rebuild table.json / table.md / PNG from saved results")
    args = p.parse_args(argv)
    if (args.max_labels - args.initial) % args.acquisition_size or args.max_labels <= args.initial:
        p.error(f"Expected --max-labels = --initial + a multiple of --acquisition-size. "
                f"Received: {args.max_labels}, {args.initial}, {args.acquisition_size}")
    try:
        check_acquisition_plan(args.acquisition_size, 0, pool_subset_size=args.pool_subset or None,
                               names={"acquisition_size": "--acquisition-size",
                                      "pool_subset_size": "--pool-subset"})
    except ValueError as e:
        p.error(str(e))
    return args


def round_seed(seed, round_index, purpose):
    return int(np.random.SeedSequence([seed, round_index, purpose]).generate_state(1)[0]
               % (2 ** 31))


class Run:
    """Train / evaluate / score callables of one method and seed (one model per run)."""

    def __init__(self, args, data, state, method, seed):
        self.args, self.state, self.method, self.seed = args, state, method, seed
        self.x_train, self.y_train, self.x_test, self.y_test = data
        self.trainer = CompiledTrainer(
            lambda: bayesian_cnn(10), epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=args.lr, sampler=FixedLengthSampler(args.sampler_length))
        model = self.trainer.model
        self.pool_predictor = MCDropoutPredictor(model, args.mc_samples, consistent_masks=True)
        self.test_predictor = MCDropoutPredictor(model, args.test_mc_samples,
                                                 consistent_masks=True)
        self.acquisition_seconds = {}

    def train(self, labelled, round_index):
        validation = np.asarray(self.state.validation, np.int64)
        seed = round_seed(self.seed, round_index, 0)
        fit_best_on_validation([self.trainer], self.x_train[labelled], self.y_train[labelled],
                               (self.x_train[validation], self.y_train[validation]),
                               seeds=[seed], sampler_seeds=[seed])
        return self.trainer.model

    def evaluate(self, model, round_index):
        idx = np.asarray(self.state.test, np.int64)
        log_p = self.test_predictor.reduce(self.x_test[idx], log_mean_prob,
                                           seed=(self.seed, round_index)).numpy()
        accuracy = float(np.mean(log_p.argmax(-1) == self.y_test[idx]))
        metrics = {"test/accuracy": accuracy,
                   "test/nll": float(-np.mean(log_p[np.arange(idx.size), self.y_test[idx]]))}
        if round_index in self.acquisition_seconds:
            metrics["time/acquisition_seconds"] = self.acquisition_seconds[round_index]
        return metrics

    def score(self, model, candidates, round_index):
        """Scores whose top ``b`` is the method's batch (``selection_scores`` for the batch
        methods)."""
        start = time.perf_counter()
        b = self.args.acquisition_size
        seed = (self.seed, 10_000 + round_index)
        x = self.x_train[candidates]
        if self.method == "random":
            scores = random_scores(tf.zeros([1, len(candidates), 1]), seed=seed).numpy()
        elif self.method == "bald":
            scores = self.pool_predictor.reduce(x, bald, seed=seed).numpy()
        elif self.method == "powerbald":
            mi = self.pool_predictor.reduce(x, bald, seed=seed).numpy()
            scores = selection_scores(stochastic_batch(mi, b, mode="power", beta=self.args.beta,
                                                       seed=seed), len(candidates))
        else:
            log_probs = self.pool_predictor.log_probs(x, seed=seed)
            positions, _ = batchbald(log_probs, b, num_configurations=self.args.num_configurations,
                                     seed=seed, dtype=tf.as_dtype(self.args.batchbald_dtype))
            scores = selection_scores(positions, len(candidates))
        # the acquisition of round r is timed and stored with round r + 1's metrics
        self.acquisition_seconds[round_index + 1] = time.perf_counter() - start
        return scores


def run_config(args, method, seed):
    keys = ["initial", "acquisition_size", "val_size", "pool_subset", "mc_samples",
            "test_mc_samples", "epochs", "sampler_length", "batch_size", "lr", "test_size",
            "train_limit"]
    config = {k: getattr(args, k) for k in keys}
    if method == "batchbald":
        config.update(num_configurations=args.num_configurations,
                      batchbald_dtype=args.batchbald_dtype)
    if method == "powerbald":
        config.update(beta=args.beta)
    config.update(method=method, seed=seed)
    return config


def run_one(args, data, method, seed):
    run_dir = os.path.join(args.result_dir, f"{method}_seed{seed}")
    _, y_train, x_test, _ = data
    state = initial_state(y_train, num_initial=args.initial, num_validation=args.val_size,
                          test_size=len(x_test), num_test=args.test_size, seed=seed)
    runner = Run(args, data, state, method, seed)
    loop = ActiveLearningLoop(
        state, train_fn=runner.train, evaluate_fn=runner.evaluate, score_fn=runner.score,
        acquisition_size=args.acquisition_size,
        num_rounds=(args.max_labels - args.initial) // args.acquisition_size,
        result_path=os.path.join(run_dir, "results.json"),
        pool_subset_size=args.pool_subset or None, config=run_config(args, method, seed),
        on_round_end=lambda record, model: print(
            f"  [{method} seed {seed}] {record['num_labelled']:4d} labels  test accuracy "
            f"{record['metrics']['test/accuracy']:.4f}  ({record['round_seconds']:.1f} s)",
            flush=True))
    runner.state = loop.state  # the resumed state, if any
    print(f"[{method} seed {seed}] starting at round {loop.next_round}", flush=True)
    return loop.run()


def labels_to_reach(history, threshold):
    """Training-set size of the first round with test accuracy >= threshold, else inf."""
    size = first_reaching([r["num_labelled"] for r in history],
                          [r["metrics"]["test/accuracy"] for r in history], threshold)
    return float("inf") if size is None else float(size)


def quartiles_text(values, max_labels):
    """``q25/q50/q75`` (NumPy's linear quantiles); ``>max`` where a quartile is unreached."""
    values = np.minimum(np.asarray(values, np.float64), 1e12)  # unreached: beyond any size
    qs = np.quantile(values, [0.25, 0.5, 0.75])
    return "/".join(f">{max_labels}" if q > max_labels else f"{q:g}" for q in qs)


def summarise(args):
    """Aggregate every ``<method>_seed<s>/results.json`` under ``--result-dir``."""
    directory = args.result_dir
    runs = {method: [saved["history"] for saved in saved_runs]
            for method, saved_runs in collect_results(directory).items()}
    table, curves = {}, {}
    for method in [m for m in METHODS if m in runs] + sorted(set(runs) - set(METHODS)):
        histories = runs[method]
        length = min(len(h) for h in histories)
        labels = [histories[0][r]["num_labelled"] for r in range(length)]
        accuracy = np.array([[h[r]["metrics"]["test/accuracy"] for r in range(length)]
                             for h in histories])
        curves[method] = (labels, accuracy)
        largest = labels[-1]
        row = {"runs": len(histories), "max_labels": largest,
               "accuracy_at_max_mean": float(accuracy[:, -1].mean()),
               "round_seconds_mean": float(np.mean([r["round_seconds"] for h in histories
                                                    for r in h[:length]]))}
        for threshold in THRESHOLDS:
            marks = [labels_to_reach(h[:length], threshold) for h in histories]
            key = f"labels_to_{int(threshold * 100)}pct"
            row[key] = [None if not np.isfinite(v) else v for v in marks]
            row[key + "_quartiles"] = quartiles_text(marks, largest)
        table[method] = row
    os.makedirs(directory, exist_ok=True)
    atomic_write_text(os.path.join(directory, "table.json"), json.dumps(table, indent=2) + "\n")
    lines = ["| method (b = 10) | runs | labels to 90 % (q25/q50/q75) | to 95 % | "
             "accuracy at max labels (mean) | paper to 90 % | paper to 95 % |",
             "|---|---|---|---|---|---|---|"]
    for method, row in table.items():
        paper = PAPER.get(method, ("", ""))
        lines.append(f"| {method} | {row['runs']} | {row['labels_to_90pct_quartiles']} | "
                     f"{row['labels_to_95pct_quartiles']} | {100 * row['accuracy_at_max_mean']:.2f}"
                     f" % at {row['max_labels']} | {paper[0]} | {paper[1]} |")
    atomic_write_text(os.path.join(directory, "table.md"), "\n".join(lines) + "\n")
    if curves:
        quantile_curves(curves, os.path.join(directory, "test_accuracy.png"),
                        xlabel="training-set size (20 initial + acquired)",
                        ylabel="MNIST test accuracy (MC-averaged)",
                        title="Batch acquisition, b = 10: median and quartiles over seeds",
                        reference_lines=THRESHOLDS)
    return table


def main(argv=None):
    args = parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    start = time.perf_counter()
    if not args.summary_only:
        data = load_mnist_pixels(args.data_dir, train_limit=args.train_limit or None)
        for i in range(args.seeds):
            for method in args.methods:
                run_one(args, data, method, args.seed + i)
                summarise(args)
    table = summarise(args)
    print(json.dumps(table, indent=2))
    print(f"total wall time {time.perf_counter() - start:.1f}s")
    return table


if __name__ == "__main__":
    cli.run(main)
