"""Fig. 1/2 check of DDU on Dirty-MNIST (generated Ambiguous-MNIST): scores, pair AUROCs, PNG.

Uses the functions of ``experiments/plot_uncertainty.py`` (``model_scores`` = softmax entropy +
GMM log-density ``logsumexp_c log q(z|c)``, ``plot_histograms`` = the figure) on CPU-sized sets:

* GMM fitted on the SAME seeded random subset of Dirty-MNIST (generated) train that
  ``experiments/train.py --max-train-samples N --seed S`` trained the model on (normalised +
  fixed N(0, 0.05) noise, as in training);
* MNIST test: the first ``--max-mnist`` images (normalised, no noise, as plot_uncertainty.py);
* Ambiguous-MNIST test (generated): one (image, label) pair per unique image (every 10th
  flattened pair, i.e. the 6000 test images; normalised + fixed noise);
* Fashion-MNIST test: the first ``--max-fashion`` images (normalised with the MNIST statistics).

AUROCs (sklearn ``roc_auc_score``; the set named second is the positive class): for entropy the
score is the entropy (higher = more uncertain), for the density the score is ``-log q(z)``
(lower density = more uncertain). Pairs: Ambiguous vs Fashion (the paper's claim: entropy
fails, DDU density succeeds), MNIST vs Fashion (plain OoD), MNIST vs Ambiguous (aleatoric:
entropy should separate them).

Run from the repository root, see run.sh.
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

import plot_uncertainty  # noqa: E402  (also registers the custom layers / optimisers)
from ddu_tf import evaluation  # noqa: E402
from ddu_tf.data import dirty_mnist  # noqa: E402
from train import DATASETS, train_validation_arrays  # noqa: E402

PAIRS = (("Ambiguous-MNIST", "Fashion-MNIST"), ("MNIST", "Fashion-MNIST"),
         ("MNIST", "Ambiguous-MNIST"))


def _batched(x, y, batch_size):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def gmm_train_set(dataset, seed, max_train, batch_size):
    """The training subset of experiments/train.py (same seeded selection)."""
    (x, y), _ = train_validation_arrays(DATASETS[dataset], seed=seed, val_size=0.1)
    if max_train and max_train < len(x):
        keep = np.sort(np.random.RandomState(seed).permutation(len(x))[:max_train])
        x, y = x[keep], y[keep]
    return _batched(x, y, batch_size), int(len(y))


def eval_sets(variant, max_mnist, max_fashion, batch_size):
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
    return {k: _batched(x, y, batch_size) for k, (x, y) in sets.items()}, \
        {k: int(len(y)) for k, (x, y) in sets.items()}


def pair_aurocs(per_set):
    out = {}
    for neg, pos in PAIRS:
        key = f"{neg} vs {pos}"
        row = {}
        for score, sign in (("entropy", 1.0), ("log_density", -1.0)):
            s_neg = sign * np.asarray(per_set[neg][score])
            s_pos = sign * np.asarray(per_set[pos][score])
            labels = np.r_[np.zeros(len(s_neg)), np.ones(len(s_pos))]
            row[score] = float(roc_auc_score(labels, np.r_[s_neg, s_pos]))
        out[key] = row
    return out


_FITTED = {}


def _recording_fit_gmm(*args, **kwargs):
    """evaluation.fit_gmm, remembering the last GMM (to report its jitter)."""
    _FITTED["gmm"] = _ORIGINAL_FIT_GMM(*args, **kwargs)
    return _FITTED["gmm"]


_ORIGINAL_FIT_GMM = evaluation.fit_gmm
plot_uncertainty.evaluation.fit_gmm = _recording_fit_gmm


def zoomed_density_plot(scores, path, bins=50):
    """Log-density histograms on the range of the in-distribution values (1st..100th
    percentile of MNIST + Ambiguous-MNIST); OoD values below are piled into the first bin."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(scores), figsize=(5 * len(scores), 3.2), squeeze=False)
    for ax, (model_name, per_set) in zip(axes[0], scores.items()):
        ind = np.concatenate([per_set[s]["log_density"] for s in ("MNIST", "Ambiguous-MNIST")])
        everything = np.concatenate([v["log_density"] for v in per_set.values()])
        low, high = np.percentile(ind, 1), everything.max()
        edges = np.linspace(low, high, bins + 1)
        for name, v in per_set.items():
            ax.hist(np.clip(v["log_density"], low, high), bins=edges, density=True, alpha=0.5,
                    label=name, color=plot_uncertainty.COLORS.get(name))
        ax.set_xlabel("GMM log-density (nats), iD range")
        ax.set_ylabel("density")
        ax.set_title(model_name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--names", nargs="+", required=True)
    p.add_argument("--max-train-samples", dest="max_train", nargs="+", type=int, required=True,
                   help="per model: the --max-train-samples it was trained with")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dataset", default="dirty_mnist_generated")
    p.add_argument("--variant", default="generated")
    p.add_argument("--max-mnist", type=int, default=5000)
    p.add_argument("--max-fashion", type=int, default=5000)
    p.add_argument("-b", dest="batch_size", type=int, default=256)
    p.add_argument("--output-png", required=True)
    p.add_argument("--output-json", required=True)
    args = p.parse_args(argv)
    sets, sizes = eval_sets(args.variant, args.max_mnist, args.max_fashion, args.batch_size)
    scores, result = {}, {"sizes": sizes, "models": {}, "args": vars(args)}
    for name, path, n in zip(args.names, args.models, args.max_train):
        gmm_train, n_fit = gmm_train_set(args.dataset, args.seed, n, args.batch_size)
        model = keras.models.load_model(path)
        per_set = plot_uncertainty.model_scores(model, gmm_train, sets)
        jitter = float(_FITTED["gmm"].jitter)
        scores[name] = per_set
        summary = {s: {"mean_entropy": float(np.mean(v["entropy"])),
                       "median_entropy": float(np.median(v["entropy"])),
                       "median_log_density": float(np.median(v["log_density"]))}
                   for s, v in per_set.items()}
        result["models"][name] = {"path": os.path.basename(path), "gmm_fit_examples": n_fit,
                                  "gmm_jitter": jitter,
                                  "summary": summary, "auroc": pair_aurocs(per_set)}
        print(json.dumps({name: result["models"][name]}, indent=1), flush=True)
    import matplotlib.pyplot as plt
    plt.rcParams["axes.formatter.limits"] = (-3, 4)  # 1e4 offset notation: no tick overlap
    plot_uncertainty.plot_histograms(scores, args.output_png)
    zoomed_density_plot(scores, args.output_png.replace(".png", "_density_zoom.png"))
    np.savez_compressed(args.output_png.replace(".png", "_scores.npz"), **{
        f"{m}/{s}/{k}": np.asarray(v, np.float32)
        for m, per_set in scores.items() for s, d in per_set.items() for k, v in d.items()})
    with open(args.output_json, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"wrote {args.output_png} and {args.output_json}")


if __name__ == "__main__":
    main()
