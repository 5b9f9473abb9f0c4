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

Data come from ``ddu_tf.data.dirty_mnist`` (normalised MNIST statistics; Dirty-MNIST train and
Ambiguous-MNIST with the fixed N(0, 0.05) noise, Fashion-MNIST without, as in the pip package).
The log-density axis is limited to the 1st..100th percentile of all plotted values (OoD
densities reach -1e5 and would squash the iD histograms); values below are counted in the
leftmost bin.
"""
import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import keras  # noqa: E402

import ddu_tf  # noqa: E402,F401
from ddu_tf import evaluation, uncertainty  # noqa: E402
from ddu_tf.data import dirty_mnist  # noqa: E402

SETS = ("MNIST", "Ambiguous-MNIST", "Fashion-MNIST")
COLORS = {"MNIST": "tab:blue", "Ambiguous-MNIST": "tab:orange", "Fashion-MNIST": "tab:green"}


def model_scores(model, gmm_train, eval_sets):
    """Softmax entropy and GMM log-density of one model on each evaluation set.

    Args:
      model: functional Keras model with a ``"features"`` layer, returning logits.
      gmm_train: ``tf.data.Dataset`` of ``(x, y)`` batches to fit the GMM on.
      eval_sets: dict ``name -> tf.data.Dataset`` of ``(x, y)`` batches.

    Returns:
      dict ``name -> {"entropy": [n] float64, "log_density": [n] float64}``.
    """
    num_classes = int(model.outputs[0].shape[-1])
    gmm = evaluation.fit_gmm(model, gmm_train, num_classes)
    out = {}
    for name, ds in eval_sets.items():
        features, logits, _ = evaluation.extract_features_and_logits(model, ds)
        out[name] = {
            "entropy": uncertainty.softmax_entropy(logits).numpy(),
            "log_density": gmm.log_density(features).numpy(),
        }
    return out


def plot_histograms(scores, path, bins=50):
    """Write the Fig. 1/2 grid: one row per model, columns entropy and log-density.

    Args:
      scores: dict ``model name -> set name -> {"entropy": [n], "log_density": [n]}``
        (any set names; colours for the three DDU sets are fixed).
      path: output PNG path (directories are created).
      bins: histogram bins per panel.

    Returns:
      ``path``.
    """
    if not scores:
        raise ValueError("Expected scores of at least one model. Received an empty dict.")
    fig, axes = plt.subplots(len(scores), 2, figsize=(10, 3.2 * len(scores)), squeeze=False)
    for row, (model_name, per_set) in enumerate(scores.items()):
        for col, (key, label) in enumerate((("entropy", "softmax entropy (nats)"),
                                            ("log_density", "GMM log-density (nats)"))):
            ax = axes[row, col]
            values = {name: np.asarray(s[key], np.float64) for name, s in per_set.items()}
            for name, v in values.items():
                if not np.all(np.isfinite(v)):
                    raise ValueError(f"Expected finite {key} scores. Received NaN/Inf for "
                                     f"model {model_name!r}, set {name!r}.")
            everything = np.concatenate(list(values.values()))
            low = np.percentile(everything, 1) if key == "log_density" else everything.min()
            high = everything.max()
            if high <= low:
                high = low + 1.0
            edges = np.linspace(low, high, bins + 1)
            for name, v in values.items():
                ax.hist(np.clip(v, low, high), bins=edges, density=True, alpha=0.5,
                        label=name, color=COLORS.get(name))
            ax.set_xlabel(label)
            ax.set_ylabel("density")
            ax.set_title(model_name)
            ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
        scores[name] = model_scores(keras.models.load_model(path), gmm_train, eval_sets)
        for set_name, s in scores[name].items():
            print(f"{name:>24s} {set_name:>16s}: entropy {np.mean(s['entropy']):.3f}, "
                  f"median log-density {np.median(s['log_density']):.1f}")
    print(f"Figure written to {plot_histograms(scores, args.output)}")


if __name__ == "__main__":
    main(sys.argv[1:])
