"""Fig. 1/2 of DDU (Mukhoti et al. 2021): softmax entropy vs GMM feature density, as a PNG.

For every model trained on Dirty-MNIST (e.g. LeNet, VGG-16, ResNet-18+SN+mod) the figure has
two panels: the histogram of the softmax entropy (nats) and the histogram of the GMM
log-density ``logsumexp_c log q(z|c)`` (nats; GMM fitted on the model's Dirty-MNIST training
features), each for MNIST test (iD, unambiguous), Ambiguous-MNIST test (iD, ambiguous) and
Fashion-MNIST test (OoD). The paper's claim: entropy cannot tell ambiguous iD from OoD; the
density of the SN + mod model can.

Example:

    python experiments/plot_uncertainty.py --models runs/lenet_1_50.keras \\
        runs/resnet18_sn_3.0_mod_1_50.keras --names LeNet "ResNet-18+SN+mod" \\
        --output results/fig1.png

From saved scores, without recomputing anything (``scores_*.npz`` of ``experiments/evaluate.py
--protocol dirty_mnist``, one per model, ``ddu_tf.evaluation.save_scores``)::

    python experiments/plot_uncertainty.py \\
        --scores runs/scores_lenet_1_50_softmax.npz runs/scores_resnet18_sn_3.0_mod_1_50_gmm.npz \\
        --names LeNet "ResNet-18+SN+mod" --output results/fig1.png --pairs-json results/pairs.json

``--sets`` picks the protocol sets to draw (default MNIST, Ambiguous-MNIST and Fashion-MNIST
test); ``--pairs-json`` adds the AUROCs of separating Ambiguous vs Fashion, MNIST vs Fashion
and MNIST vs Ambiguous by each score (``ddu_tf.evaluation.pair_aurocs``; the protocol's JSON has
the first two but not MNIST vs Ambiguous).

Scores: ``ddu_tf.evaluation.uncertainty_scores`` / ``load_scores``; figure:
``ddu_tf.plotting.uncertainty_histograms`` (shared bins per panel; log-density range from the
``--density-percentiles`` of each set, values beyond it counted in the edge bins and marked).
With ``--models``, data come from ``ddu_tf.data.dirty_mnist`` (normalised MNIST statistics; Dirty-MNIST train and
Ambiguous-MNIST with the fixed N(0, 0.05) noise, Fashion-MNIST without, as in the pip package).
"""
import argparse
import json
import os

import keras
import numpy as np

import ddu_tf  # noqa: F401  (registers the custom layers / optimisers)
from ddu_tf import cli, evaluation, plotting
from ddu_tf.data import dirty_mnist
from ddu_tf.io.atomic import atomic_write_text


def _batched(dataset, batch_size, max_samples):
    if max_samples:
        dataset = dataset.take(max_samples)
    return dataset.batch(batch_size)


def ddu_datasets(data_dir, variant, batch_size, max_samples=None):
    """(GMM training set, evaluation sets) of the figure as batched ``tf.data`` pipelines."""
    train = dirty_mnist.dirty_mnist_source("train", data_dir, variant=variant)
    if max_samples:
        # Dirty-MNIST train lists MNIST first, then ambiguous pairs: sample both halves.
        train = train.shuffle(200_000, seed=0, reshuffle_each_iteration=False)
    eval_sets = {
        "MNIST": dirty_mnist.mnist_source("test", data_dir),
        "Ambiguous-MNIST": dirty_mnist.ambiguous_mnist_source("test", data_dir, variant=variant),
        "Fashion-MNIST": dirty_mnist.fashion_mnist_source("test", data_dir),
    }
    return (_batched(train, batch_size, max_samples),
            {k: _batched(v, batch_size, max_samples) for k, v in eval_sets.items()})


PAIRS = (("Ambiguous-MNIST", "Fashion-MNIST"), ("MNIST", "Fashion-MNIST"),
         ("MNIST", "Ambiguous-MNIST"))
"""(negative, positive) set pairs of ``--pairs-json``: ambiguous iD vs OoD (the paper's claim),
plain OoD, and aleatoric (entropy should separate them, the density should not)."""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--models", nargs="+",
                        help=".keras files of models trained on Dirty-MNIST (scores recomputed)")
    source.add_argument("--scores", nargs="+",
                        help="scores_*.npz files of evaluate.py --protocol dirty_mnist, one per "
                             "model (nothing recomputed)")
    parser.add_argument("--names", nargs="+", default=None,
                        help="row titles, one per model (default: file names)")
    parser.add_argument("--sets", nargs="+", default=["mnist", "ambiguous", "fashion_mnist"],
                        help="--scores: the protocol sets to draw, in legend order")
    parser.add_argument("--dataset-root", dest="dataset_root", default=None,
                        help="manual data directory (default $DDU_TF_DATA_DIR)")
    parser.add_argument("--variant", default="official",
                        help="Ambiguous-MNIST variant: official or a generated config")
    parser.add_argument("-b", dest="batch_size", type=int, default=256, help="batch size")
    parser.add_argument("--max-samples", dest="max_samples", type=int, default=None,
                        help="--models: use at most this many samples per set (quick looks)")
    parser.add_argument("--bins", type=int, default=50, help="bins per panel")
    parser.add_argument("--density-percentiles", dest="density_percentiles", nargs=2,
                        type=float, default=[1.0, 99.0], metavar=("LOW", "HIGH"),
                        help="log-density range: from the lowest LOW-th to the highest HIGH-th "
                             "percentile of the sets (0 100: everything, no clipping)")
    parser.add_argument("--pairs-json", dest="pairs_json", default=None,
                        help="also write the pair AUROCs (entropy, log-density) to this JSON")
    parser.add_argument("--output", default="results/dirty_mnist_uncertainty.png")
    return parser


def saved_scores(paths, sets):
    """``[{figure label: scores}]``: the ``sets`` of each saved scores file, in order."""
    out = []
    for path in paths:
        stored = evaluation.load_scores(path)
        missing = [name for name in sets if name not in stored]
        if missing:
            raise ValueError(f"Expected the sets {list(sets)} in every --scores file. Received "
                             f"{path!r} with {sorted(stored)}; pick --sets among them.")
        out.append({plotting.SET_LABELS.get(name, name): stored[name] for name in sets})
    return out


def computed_scores(args, names):
    """``{name: {set: scores}}`` of the ``--models``, recomputed (GMM on Dirty-MNIST train)."""
    gmm_train, eval_sets = ddu_datasets(args.dataset_root, args.variant, args.batch_size,
                                        args.max_samples)
    return {name: evaluation.uncertainty_scores(keras.models.load_model(path), gmm_train,
                                                eval_sets)[0]
            for name, path in zip(names, args.models)}


def main(argv=None):
    """Write the figure (and ``--pairs-json``); returns the panels
    (``ddu_tf.plotting.uncertainty_panels``) drawn."""
    args = build_parser().parse_args(argv)
    files = args.scores or args.models
    names = args.names or [os.path.basename(p) for p in files]
    if len(names) != len(files):
        raise ValueError(f"Expected one --names entry per model. Received {len(names)} names "
                         f"for {len(files)} files.")
    if len(set(names)) != len(names):
        raise ValueError(f"Expected distinct --names. Received: {names}.")
    if args.scores:
        scores = dict(zip(names, saved_scores(args.scores, args.sets)))
    else:
        scores = computed_scores(args, names)
    for name, per_set in scores.items():
        for set_name, s in per_set.items():
            print(f"{name:>24s} {set_name:>16s}: mean entropy {np.mean(s['entropy']):.3f} nats, "
                  f"median log-density {np.median(s['log_density']):.1f} nats")
    panels = plotting.uncertainty_panels(scores, args.bins, args.density_percentiles)
    path = plotting.draw_uncertainty_panels(panels, args.output)
    print(f"Figure written to {path}")
    if args.pairs_json:
        pairs = {name: evaluation.pair_aurocs(per_set, [p for p in PAIRS
                                                       if set(p) <= set(per_set)])
                 for name, per_set in scores.items()}
        atomic_write_text(args.pairs_json, json.dumps(pairs, indent=2))
        print(json.dumps(pairs, indent=1))
    return panels


if __name__ == "__main__":
    cli.run(main)
