"""OoD detectors side by side on one trained network: softmax entropy, energy, per-class GMM
(DDU), shared-covariance Gaussian (Mahalanobis) and kNN distance; AUROC, AUPRC, FPR@95.

For each ``--models`` file (a model of ``experiments/train.py``, with a ``"features"`` layer)
and its training ``--seeds``:

* one forward pass (``ddu_tf.inference.Predictor``) over the model's own training split --
  ``train.py``'s seeded 10% hold-out and ``--max-train-samples`` subset
  (``ddu_tf.experiment_data``) -- and over every evaluation set;
* the feature detectors (``ddu_tf.density.detectors``: ``gmm``, ``shared_gaussian``, ``knn``
  with ``--knn-k``) are fitted on the training features; softmax entropy and energy
  (``ddu_tf.uncertainty``) come from the logits;
* per (in-distribution, OoD) pair and score: AUROC and AUPRC (``ddu_tf.metrics
  .ood_auroc_auprc``; OoD positive for entropy / energy, in-distribution positive for the
  densities) and FPR at 95% TPR (``ddu_tf.metrics.fpr_at_tpr``, in-distribution positive).

Evaluation sets by ``--dataset``:

* ``mnist1d``: in = MNIST-1D test, OoD = ``mnist1d/shuffled`` test (the same signals with their
  40 positions permuted; see ``experiments/demo.py``);
* ``dirty_mnist`` / ``dirty_mnist_generated``: the Dirty-MNIST protocol sets of
  ``ddu_tf.data.ood_sets.evaluation_sets`` (MNIST test, Ambiguous-MNIST test and their union
  ``dirty`` in-distribution; ``--ood-sets``, default Fashion-MNIST; one transform for all).

Output: ``--output-json`` with keys ``<in>_vs_<ood>/<detector>_<auroc|auprc|fpr95>`` per
model, their mean and std (``ddof=1``) over the models, and a Markdown table on stdout.

Example (results/ood_detectors/README.md)::

    python experiments/ood_detectors.py --dataset mnist1d --seeds 0 1 2 \\
        --models runs/ood_detectors/mnist1d/resnet1d_sn_3.0_mod_{0,1,2}_30.keras \\
        --output-json results/ood_detectors/mnist1d.json
"""
import argparse
import json
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import ddu_tf  # noqa: E402,F401  (registers the TFDS builders and custom layers)
from ddu_tf import cli, metrics, uncertainty  # noqa: E402
from ddu_tf.data import ood_sets  # noqa: E402
from ddu_tf.density import DETECTORS  # noqa: E402
from ddu_tf.experiment_data import (DATASETS, dataset_key, evaluation_pipeline,  # noqa: E402
                                    seeded_subset, split_arrays, train_validation_arrays)
from ddu_tf.inference import Predictor  # noqa: E402
from ddu_tf.io.atomic import atomic_write_text  # noqa: E402

SCORES = ("softmax_entropy", "energy", "gmm", "shared_gaussian", "knn")
"""Score names, in table order; the last three are feature detectors (higher = iD)."""
UNCERTAINTY_SCORES = {"softmax_entropy": uncertainty.softmax_entropy,
                      "energy": uncertainty.energy}
"""Logit scores where higher = more uncertain."""
DIRTY_MNIST_VARIANTS = {"dirty_mnist": "official", "dirty_mnist_generated": "generated",
                        "dirty_mnist_generated_tiny": "generated_tiny"}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help=".keras files of train.py")
    p.add_argument("--seeds", nargs="+", type=int, required=True,
                   help="per model: the --seed it was trained with (fixes its training split)")
    p.add_argument("--dataset", type=dataset_key, required=True,
                   choices=["mnist1d", *DIRTY_MNIST_VARIANTS], help="the models' training set")
    p.add_argument("--max-train-samples", dest="max_train", type=int, default=None,
                   help="the --max-train-samples the models were trained with")
    p.add_argument("--val-size", type=float, default=0.1, help="train.py's --val-size")
    p.add_argument("--ood-sets", nargs="+", default=["fashion_mnist"],
                   choices=sorted(ood_sets.OOD_SETS), help="Dirty-MNIST: OoD sets")
    p.add_argument("--max-eval-samples", type=int, default=None,
                   help="Dirty-MNIST: first N images of each evaluation set (smoke runs)")
    p.add_argument("--knn-k", type=int, default=50, help="k of the kNN detector (Sun et al.)")
    p.add_argument("-b", dest="batch_size", type=int, default=500, help="batch size")
    p.add_argument("--dataset-root", dest="dataset_root", default=None,
                   help="data directory passed to ddu_tf.data.load, as in train.py (default: "
                        "$DDU_TF_DATA_DIR for the MNIST family, TFDS's for MNIST-1D)")
    p.add_argument("--output-json", required=True)
    return p


def evaluation_sets(args):
    """``(in-distribution sets, OoD sets, pairs)``: dicts name -> batched dataset and the
    ``(in, ood)`` name pairs to score (``dirty`` = mnist + ambiguous, scored by concatenation)."""
    spec = DATASETS[args.dataset]
    if args.dataset == "mnist1d":
        sets = {"mnist1d": split_arrays("mnist1d", "test", args.dataset_root),
                "mnist1d_shuffled": split_arrays("mnist1d/shuffled", "test", args.dataset_root)}
        in_names, ood_names = ["mnist1d"], ["mnist1d_shuffled"]
    else:
        sets = ood_sets.evaluation_sets(DIRTY_MNIST_VARIANTS[args.dataset], args.ood_sets,
                                        data_dir=args.dataset_root,
                                        max_per_set=args.max_eval_samples)
        in_names, ood_names = ["mnist", "ambiguous", "dirty"], list(args.ood_sets)
    datasets = {name: evaluation_pipeline(spec, arrays, args.batch_size)
                for name, arrays in sets.items()}
    return datasets, [(i, o) for i in in_names for o in ood_names]


def network_scores(model, seed, args, eval_sets):
    """Every score of one network on every evaluation set: name -> {score: [n]}, plus the
    training-subset size and the test accuracy of the in-distribution sets."""
    spec = DATASETS[args.dataset]
    (x, y), _ = train_validation_arrays(spec, seed=seed, val_size=args.val_size,
                                        data_dir=args.dataset_root)
    x, y = seeded_subset((x, y), args.max_train, seed)
    predictor = Predictor(model, chunk_size=args.batch_size)
    train_features, _, train_labels = predictor.dataset_features_and_logits(
        evaluation_pipeline(spec, (x, y), args.batch_size))
    num_classes = spec.num_classes
    detectors = {kind: DETECTORS[kind].fit(train_features, train_labels, num_classes,
                                           **({"k": args.knn_k} if kind == "knn" else {}))
                 for kind in ("gmm", "shared_gaussian", "knn")}
    out, accuracy = {}, {}
    for name, ds in eval_sets.items():
        features, logits, labels = predictor.dataset_features_and_logits(ds)
        out[name] = {score: np.asarray(fn(logits), np.float64)
                     for score, fn in UNCERTAINTY_SCORES.items()}
        out[name].update({kind: d.score(features) for kind, d in detectors.items()})
        accuracy[name] = metrics.accuracy(labels, np.argmax(logits, axis=1))
    if "mnist" in out and "ambiguous" in out:
        out["dirty"] = {k: np.concatenate([out["mnist"][k], out["ambiguous"][k]])
                        for k in SCORES}
    info = {"fit_examples": int(len(y)), "jitter_gmm": detectors["gmm"].gaussians.jitter,
            "jitter_shared_gaussian": detectors["shared_gaussian"].gaussians.jitter}
    return out, accuracy, info


def pair_metrics(scores, pairs):
    """``{"<in>_vs_<ood>/<score>_<auroc|auprc|fpr95>": float}``."""
    out = {}
    for in_name, ood_name in pairs:
        for score in SCORES:
            uncertain = score in UNCERTAINTY_SCORES
            pair = (scores[in_name][score], scores[ood_name][score])
            auroc, auprc = metrics.ood_auroc_auprc(*pair, higher_is_uncertain=uncertain)
            key = f"{in_name}_vs_{ood_name}/{score}"
            out[f"{key}_auroc"], out[f"{key}_auprc"] = auroc, auprc
            out[f"{key}_fpr95"] = metrics.fpr_at_tpr(*pair, 0.95, higher_is_uncertain=uncertain)
    return out


def markdown_table(mean, std, pairs, runs):
    """Rows = scores, columns = AUROC / AUPRC / FPR@95 (%) per pair; mean +- std over runs."""
    def cell(key):
        text = f"{100 * mean[key]:.2f}"
        return text + (f" +- {100 * std[key]:.2f}" if runs > 1 else "")

    head = " | ".join(f"{i} vs {o}: {m}" for i, o in pairs
                      for m in ("AUROC", "AUPRC", "FPR@95"))
    lines = [f"| score | {head} |", "| --- |" + " --- |" * (3 * len(pairs))]
    for score in SCORES:
        cells = [cell(f"{i}_vs_{o}/{score}_{m}") for i, o in pairs
                 for m in ("auroc", "auprc", "fpr95")]
        lines.append(f"| {score} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if len(args.models) != len(args.seeds):
        raise ValueError(f"Expected one --seeds value per model. Received {len(args.models)} "
                         f"models and {len(args.seeds)} seeds.")
    if args.knn_k < 1 or args.batch_size < 1:
        raise ValueError(f"Expected --knn-k >= 1 and -b >= 1. Received: {args.knn_k}, "
                         f"{args.batch_size}.")
    missing = [path for path in args.models if not os.path.isfile(path)]
    if missing:
        raise ValueError(f"Expected model files written by experiments/train.py. Received "
                         f"missing paths {missing}.")
    eval_sets, pairs = evaluation_sets(args)
    runs = []
    for path, seed in zip(args.models, args.seeds):
        keras.utils.set_random_seed(seed)
        scores, accuracy, info = network_scores(keras.models.load_model(path), seed, args,
                                                eval_sets)
        result = pair_metrics(scores, pairs)
        runs.append({"model": os.path.basename(path), "seed": seed, **info,
                     **{f"{name}/accuracy": acc for name, acc in accuracy.items()},
                     "metrics": result})
        print(f"{os.path.basename(path)}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in result.items() if k.endswith("auroc")), flush=True)
    keys = list(runs[0]["metrics"])
    values = {k: [run["metrics"][k] for run in runs] for k in keys}
    mean = {k: float(np.mean(v)) for k, v in values.items()}
    std = {k: float(np.std(v, ddof=1)) if len(v) > 1 else None for k, v in values.items()}
    table = markdown_table(mean, std, pairs, len(runs))
    output = {"mean": mean, "std": std, "runs": runs, "table": table,
              "sizes": {name: int(sum(int(x.shape[0]) for x, _ in ds))
                        for name, ds in eval_sets.items()},
              "args": {k: v for k, v in vars(args).items()}}
    atomic_write_text(args.output_json, json.dumps(output, indent=2))
    print(table)
    print(f"wrote {args.output_json}")
    return output


if __name__ == "__main__":
    tf.get_logger().setLevel("ERROR")
    cli.run(main)
