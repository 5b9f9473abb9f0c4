"""Figures of MNIST-1D (Greydanus 2020): the templates, one sample through each
transformation step, and a t-SNE of MNIST next to MNIST-1D.

Writes into ``--output-dir``:

* ``templates.png``: the ten 12-point digit templates (``ddu_tf.io.mnist1d.get_templates``).
* ``transformations.png``: one sample of the default data set after each step of the
  generator (``ddu_tf.io.mnist1d.transformation_steps``: padding, dilation, scaling,
  translation, correlated noise, i.i.d. noise, shear, final interpolation), with the drawn
  parameters in the titles.
* ``tsne.png``: t-SNE (scikit-learn, perplexity 30, PCA initialisation) of ``--num-points``
  MNIST training images (raw pixels / 255, the first ones in IDX order, from the offline IDX
  files) and of ``--num-points`` MNIST-1D signals (default arguments, train then test),
  coloured by class, each class labelled at its median; as the MNIST-1D repository's t-SNE
  notebook (which used openTSNE on all 70 000 MNIST images).

Example::

    DDU_TF_DATA_DIR=/path/to/data python experiments/plot_mnist1d.py \\
        --output-dir results/mnist1d_benchmark
"""
import argparse
import os
import time

import numpy as np

from ddu_tf import cli
from ddu_tf.io import mnist1d, mnist_idx

COLORS = np.array(["#a6cee3", "#1f78b4", "#b2df8a", "#33a02c", "#fb9a99",
                   "#e31a1c", "#fdbf6f", "#ff7f00", "#cab2d6", "#6a3d9a"])
TITLES = {"template": "template (+1e-8)", "padded": "padding", "dilated": "dilation",
          "scaled": "scaling", "translated": "translation", "correlated_noise": "correlated noise",
          "iid_noise": "i.i.d. noise", "sheared": "shear", "final": "final interpolation"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", default="results/mnist1d_benchmark")
    p.add_argument("--figures", nargs="+", choices=("templates", "transformations", "tsne"),
                   default=["templates", "transformations", "tsne"])
    p.add_argument("--sample", type=int, default=0,
                   help="generation-order index of the sample shown in transformations.png")
    p.add_argument("--num-points", type=int, default=5000, help="points per data set in t-SNE")
    p.add_argument("--seed", type=int, default=0, help="t-SNE random state")
    p.add_argument("--mnist-dir", default=None,
                   help="manual directory with mnist/*-ubyte[.gz] (default: $DDU_TF_DATA_DIR)")
    args = p.parse_args(argv)
    if not 10 <= args.num_points <= 5000:
        p.error(f"Expected 10 <= --num-points <= 5000 (the MNIST-1D default set). "
                f"Received: {args.num_points}")
    return args


def plot_templates(path):
    import matplotlib.pyplot as plt

    templates = mnist1d.get_templates()
    fig, axes = plt.subplots(2, 5, figsize=(10, 3.6), sharex=True, sharey=True)
    for digit, ax in zip(templates["y"], axes.ravel()):
        ax.plot(templates["t"], templates["x"][digit], "-o", color="k", lw=2, ms=3)
        ax.set_title(f"digit {digit}")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("t (template units)")
    for ax in axes[:, 0]:
        ax.set_ylabel("value")
    fig.suptitle("MNIST-1D templates: 12 points per digit (whitened, shifted to start at 0, / 6)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_transformations(path, sample):
    import matplotlib.pyplot as plt

    steps = mnist1d.transformation_steps(sample=sample)
    args = mnist1d.get_dataset_args()
    details = {"padded": f"p = {steps['padding']} zeros",
               "dilated": f"{args.template_len + args.padding[1]} points",
               "scaled": f"x {steps['scale']:.3f}",
               "translated": f"roll right {steps['shift']}",
               "correlated_noise": f"zeros <- gaussian_filter({args.corr_noise_scale} N, 2)",
               "iid_noise": f"+ {args.iid_noise_scale} N",
               "sheared": f"x - c * linspace(-0.5, 0.5), c = {steps['shear']:.3f}",
               "final": f"{args.final_seq_length} points"}
    fig, axes = plt.subplots(3, 3, figsize=(12, 7.5), sharey=True)
    for key, ax in zip(mnist1d.TRANSFORMATION_STEPS, axes.ravel()):
        signal = steps[key]
        ax.plot(np.arange(signal.size), signal, "-", color="k", lw=1.5)
        ax.plot(np.arange(signal.size), signal, ".", color="C3", ms=3)
        ax.set_title(f"{TITLES[key]}" + (f"\n{details[key]}" if key in details else "\n"),
                     fontsize=10)
        ax.set_xlabel("position (points)")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("value (before standardisation)")
    fig.suptitle(f"One MNIST-1D sample (digit {steps['label']}, generation index {sample}, "
                 "default arguments) after each step of the generator")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def tsne_embeddings(num_points, seed, mnist_dir):
    """``{"MNIST": (z [n, 2], y [n]), "MNIST-1D": (z, y)}`` from scikit-learn's t-SNE."""
    from sklearn.manifold import TSNE

    images, labels = mnist_idx.load_idx_arrays("mnist", "train", data_dir=mnist_dir)
    x_2d = images[:num_points].reshape(num_points, -1).astype(np.float32) / 255.0
    data = mnist1d.make_dataset()
    x_1d = np.concatenate([data["x"], data["x_test"]])[:num_points]
    y_1d = np.concatenate([data["y"], data["y_test"]])[:num_points]
    out = {}
    for name, x, y in (("MNIST", x_2d, labels[:num_points]), ("MNIST-1D", x_1d, y_1d)):
        start = time.perf_counter()
        z = TSNE(n_components=2, perplexity=30.0, init="pca", random_state=seed).fit_transform(x)
        print(f"t-SNE of {name} ({x.shape[0]} x {x.shape[1]}): "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        out[name] = (z, np.asarray(y))
    return out


def plot_tsne(path, embeddings):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    for ax, (name, (z, y)) in zip(axes, embeddings.items()):
        ax.scatter(z[:, 0], z[:, 1], c=COLORS[y], s=3, edgecolors="none")
        for k in range(10):
            mu = np.median(z[y == k], axis=0)
            ax.text(mu[0], mu[1], str(k), ha="center", va="center", fontsize=14,
                    weight="bold", bbox=dict(facecolor="white", alpha=0.7, lw=0, pad=1))
        ax.set_title(f"{name} ({len(y)} points)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.axis("off")
    fig.suptitle("t-SNE (scikit-learn, perplexity 30), coloured by class: MNIST forms clusters "
                 "in pixel space, MNIST-1D does not")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")

    os.makedirs(args.output_dir, exist_ok=True)
    written = []
    if "templates" in args.figures:
        written.append(os.path.join(args.output_dir, "templates.png"))
        plot_templates(written[-1])
    if "transformations" in args.figures:
        written.append(os.path.join(args.output_dir, "transformations.png"))
        plot_transformations(written[-1], args.sample)
    if "tsne" in args.figures:
        written.append(os.path.join(args.output_dir, "tsne.png"))
        plot_tsne(written[-1], tsne_embeddings(args.num_points, args.seed, args.mnist_dir))
    for path in written:
        print(f"wrote {path}", flush=True)
    return written


if __name__ == "__main__":
    cli.run(main)
