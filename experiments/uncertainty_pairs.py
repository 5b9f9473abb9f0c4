"""Fig. 1/2 check of DDU on Dirty-MNIST: per-model scores, pair AUROCs, histograms (PNG).

For each model (``--models``, trained by ``experiments/train.py``):

* the GMM is fitted on the SAME seeded random subset of the training set that
  ``experiments/train.py --dataset D --max-train-samples N --seed S`` trained the model on
  (``ddu_tf.experiment_data``; normalised + fixed N(0, 0.05) noise, as in training);
* softmax entropy and GMM log-density ``logsumexp_c log q(z|c)`` (nats;
  ``ddu_tf.evaluation.uncertainty_scores``) are computed on MNIST test (the first
  ``--max-mnist`` images, normalised, no noise), Ambiguous-MNIST test (one (image, label) pair
  per unique image, i.e. every 10th flattened pair: the 6000 test images; normalised + fixed
  noise) and Fashion-MNIST test (the first ``--max-fashion`` images, normalised with the MNIST
  statistics);
* AUROCs of separating two sets (``ddu_tf.evaluation.pair_aurocs``; the set named second is
  the positive class; entropy: higher = more uncertain; density: lower = more uncertain):
  Ambiguous vs Fashion (the paper's claim: entropy fails, DDU density succeeds), MNIST vs
  Fashion (plain OoD), MNIST vs Ambiguous (aleatoric: entropy should separate them).

Outputs: ``--output-json`` (sizes, per-model jitter, score summaries, AUROCs),
``--output-png`` (``ddu_tf.plotting.uncertainty_histograms``), ``<png>_density_zoom.png``
(``ddu_tf.plotting.density_zoom_histograms``) and ``<png>_scores.npz`` (all scores, float32).

Example: see ``results/dirty_mnist_ddu/run.sh`` (stage ``figure``).
"""
import argparse
import json
import os

import keras
import numpy as np
import tensorflow as tf

import ddu_tf  # noqa: F401  (registers the custom layers / optimisers)
from ddu_tf import cli, evaluation, plotting
from ddu_tf.data import dirty_mnist
from ddu_tf.experiment_data import DATASETS, seeded_subset, train_validation_arrays

PAIRS = (("Ambiguous-MNIST", "Fashion-MNIST"), ("MNIST", "Fashion-MNIST"),
         ("MNIST", "Ambiguous-MNIST"))


def _batched(x, y, batch_size):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def gmm_train_set(dataset, seed, max_train, batch_size):
    """The training subset of experiments/train.py (same seeded selection), batched."""
    (x, y), _ = train_validation_arrays(DATASETS[dataset], seed=seed, val_size=0.1)
    x, y = seeded_subset((x, y), max_train, seed)
    return _batched(x, y, batch_size), int(len(y))


def eval_sets(variant, max_mnist, max_fashion, batch_size):
    """Batched MNIST / Ambiguous-MNIST / Fashion-MNIST test sets and their sizes."""
    m = dirty_mnist.load_mnist_arrays("test", "mnist")
    m = {k: v[:max_mnist] for k, v in m.items()}
    f = dirty_mnist.load_mnist_arrays("test", "fashion_mnist")
    f = {k: v[:max_fashion] for k, v in f.items()}
    a = dirty_mnist.load_ambiguous_arrays("test", variant)
    first = np.unique(a["sample_id"], return_index=True)[1]  # one pair per unique image
    a = {"images": a["images"][first], "label": a["label"][first],
         "noise_key": a["pair_id"][first] + dirty_mnist.NOISE_KEY_OFFSETS["ambiguous"]}
    sets = {
        "MNIST": dirty_mnist.prepare(m),
        "Ambiguous-MNIST": dirty_mnist.prepare(a, noise_std=dirty_mnist.NOISE_STD),
        "Fashion-MNIST": dirty_mnist.prepare(f),
    }
    return ({k: _batched(x, y, batch_size) for k, (x, y) in sets.items()},
            {k: int(len(y)) for k, (x, y) in sets.items()})


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True, help=".keras files")
    p.add_argument("--names", nargs="+", required=True, help="one name per model")
    p.add_argument("--max-train-samples", dest="max_train", nargs="+", type=int, required=True,
                   help="per model: the --max-train-samples it was trained with")
    p.add_argument("--seed", type=int, default=1, help="the models' training seed")
    p.add_argument("--dataset", default="dirty_mnist_generated",
                   help="the models' training set (a key of ddu_tf.experiment_data.DATASETS)")
    p.add_argument("--variant", default="generated", help="Ambiguous-MNIST variant")
    p.add_argument("--max-mnist", type=int, default=5000)
    p.add_argument("--max-fashion", type=int, default=5000)
    p.add_argument("-b", dest="batch_size", type=int, default=256)
    p.add_argument("--output-png", required=True)
    p.add_argument("--output-json", required=True)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not len(args.names) == len(args.models) == len(args.max_train):
        raise ValueError("Expected one --names and one --max-train-samples value per model. "
                         f"Received {len(args.models)} models, {len(args.names)} names, "
                         f"{len(args.max_train)} sizes.")
    sets, sizes = eval_sets(args.variant, args.max_mnist, args.max_fashion, args.batch_size)
    scores, result = {}, {"sizes": sizes, "models": {}, "args": vars(args)}
    for name, path, n in zip(args.names, args.models, args.max_train):
        gmm_train, n_fit = gmm_train_set(args.dataset, args.seed, n, args.batch_size)
        per_set, gmm = evaluation.uncertainty_scores(keras.models.load_model(path), gmm_train,
                                                     sets)
        scores[name] = per_set
        summary = {s: {"mean_entropy": float(np.mean(v["entropy"])),
                       "median_entropy": float(np.median(v["entropy"])),
                       "median_log_density": float(np.median(v["log_density"]))}
                   for s, v in per_set.items()}
        result["models"][name] = {"path": os.path.basename(path), "gmm_fit_examples": n_fit,
                                  "gmm_jitter": float(gmm.jitter), "summary": summary,
                                  "auroc": evaluation.pair_aurocs(per_set, PAIRS)}
        print(json.dumps({name: result["models"][name]}, indent=1), flush=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams["axes.formatter.limits"] = (-3, 4)  # 1e4 offset notation: no tick overlap
    plotting.uncertainty_histograms(scores, args.output_png)
    plotting.density_zoom_histograms(scores, args.output_png.replace(".png", "_density_zoom.png"))
    np.savez_compressed(args.output_png.replace(".png", "_scores.npz"), **{
        f"{m}/{s}/{k}": np.asarray(v, np.float32)
        for m, per_set in scores.items() for s, d in per_set.items() for k, v in d.items()})
    with open(args.output_json, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"wrote {args.output_png} and {args.output_json}")


if __name__ == "__main__":
    cli.run(main)
