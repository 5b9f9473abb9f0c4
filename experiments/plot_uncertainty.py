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

Scores: ``ddu_tf.evaluation.uncertainty_scores``; figure: ``ddu_tf.plotting.uncertainty_histograms``.
Data come from ``ddu_tf.data.dirty_mnist`` (normalised MNIST statistics; Dirty-MNIST train and
Ambiguous-MNIST with the fixed N(0, 0.05) noise, Fashion-MNIST without, as in the pip package).
The log-density axis is limited to the 1st..100th percentile of all plotted values (OoD
densities reach -1e5 and would squash the iD histograms); values below are counted in the
leftmost bin.
"""
import argparse
import os

import keras
import numpy as np

import ddu_tf  # noqa: F401  (registers the custom layers / optimisers)
from ddu_tf import cli, evaluation, plotting
from ddu_tf.data import dirty_mnist


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


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True,
                        help=".keras files of models trained on Dirty-MNIST")
    parser.add_argument("--names", nargs="+", default=None,
                        help="row titles (default: file names)")
    parser.add_argument("--dataset-root", dest="dataset_root", default=None,
                        help="manual data directory (default $DDU_TF_DATA_DIR)")
    parser.add_argument("--variant", default="official",
                        help="Ambiguous-MNIST variant: official or a generated config")
    parser.add_argument("-b", dest="batch_size", type=int, default=256, help="batch size")
    parser.add_argument("--max-samples", dest="max_samples", type=int, default=None,
                        help="use at most this many samples per set (quick looks)")
    parser.add_argument("--output", default="results/dirty_mnist_uncertainty.png")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    names = args.names or [os.path.basename(p) for p in args.models]
    if len(names) != len(args.models):
        raise ValueError(f"Expected one name per model. Received {len(names)} names for "
                         f"{len(args.models)} models.")
    gmm_train, eval_sets = ddu_datasets(args.dataset_root, args.variant, args.batch_size,
                                        args.max_samples)
    scores = {}
    for name, path in zip(names, args.models):
        scores[name], _ = evaluation.uncertainty_scores(keras.models.load_model(path),
                                                        gmm_train, eval_sets)
        for set_name, s in scores[name].items():
            print(f"{name:>24s} {set_name:>16s}: entropy {np.mean(s['entropy']):.3f}, "
                  f"median log-density {np.median(s['log_density']):.1f}")
    print(f"Figure written to {plotting.uncertainty_histograms(scores, args.output)}")


if __name__ == "__main__":
    cli.run(main)
