"""Ambiguous-MNIST figure (samples per class ordered by label entropy) and statistics.

Figure: one row per class (the image's most frequent label), ``--columns`` images per row taken
at evenly spaced quantiles of the label entropy (left: least ambiguous, right: most), as in the
original ``amnist_digits.png``.

Statistics (``--stats-dir``): label entropy of the unique images (mean, histogram), and the
softmax entropy that an independent MNIST-trained LeNet (seed ``--lenet-seed``, not one of the
generation ensemble's seeds) gives the ambiguous images vs MNIST test images.

    python experiments/plot_ambiguous_mnist.py --variant generated \
        --out results/ambiguous_mnist/amnist_digits.png --stats-dir results/ambiguous_mnist

Comparison with the official set (issue 13; ``--npz``): for a generated file read by
``ddu_tf.io.ambiguous_mnist.load_generated`` (its SHA-256 from ``--sha256`` or from the
``--build-report`` JSON that ``experiments/build_ambiguous_mnist.py`` wrote), write
``generated_vs_official.json`` and ``generated_vs_official.png`` to ``--stats-dir``: the test
images' ensemble-PE histogram over the official 16 bins on [0.05, 1.6] beside the official one,
their total-variation distance, max MI, label-entropy statistics
(``ddu_tf.generation.statistics.set_statistics``), and the softmax entropy of an independent
LeNet trained ``--lenet-epochs`` epochs on Dirty-MNIST built from the file, with the AUROC of
Ambiguous-MNIST test vs Fashion-MNIST test (``independent_lenet_check``; ``--lenet-epochs 0``
skips it)::

    python experiments/plot_ambiguous_mnist.py \
        --npz results/ambiguous_mnist/ambiguous_mnist_generated.npz \
        --build-report results/ambiguous_mnist/build_report.json \
        --stats-dir results/ambiguous_mnist --lenet-epochs 3
"""
import argparse
import json
import pathlib
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import ddu_tf  # noqa: E402,F401  (registers the TFDS builders)
from ddu_tf import cli, plotting  # noqa: E402
from ddu_tf import uncertainty  # noqa: E402
from ddu_tf.data import dirty_mnist  # noqa: E402
from ddu_tf.generation import ambiguous_mnist, statistics  # noqa: E402
from ddu_tf.io import ambiguous_mnist as amnist_io  # noqa: E402
from ddu_tf.io import mnist_idx  # noqa: E402
from tfds_builders.ambiguous_mnist import ambiguous_mnist_dataset_builder  # noqa: E402,F401

ENTROPY_BINS = np.linspace(0.0, np.log(10.0), 21)


def unique_images(variant, data_dir, tfds_data_dir):
    """Unique images of both splits: images [n, 28, 28], label distributions [n, 10], split."""
    out = {"images": [], "dist": [], "split": []}
    for split in ("train", "test"):
        a = dirty_mnist.load_ambiguous_arrays(split, variant, data_dir, tfds_data_dir)
        first = a["pair_id"] % 10 == 0
        out["images"].append(a["images"][first])
        out["dist"].append(a["label_distribution"][first])
        out["split"] += [split] * int(first.sum())
    return (np.concatenate(out["images"]), np.concatenate(out["dist"]).astype(np.float64),
            np.array(out["split"]))


def entropy(p):
    """Entropy in nats of rows of ``p`` (0 log 0 = 0)."""
    return 0.0 - np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)


def plot_grid(images, dist, columns, out):
    h = entropy(dist)
    majority = dist.argmax(1)
    fig, axes = plt.subplots(10, columns, figsize=(columns * 0.8, 10 * 0.85))
    for c in range(10):
        idx = np.flatnonzero(majority == c)
        idx = idx[np.argsort(h[idx], kind="stable")]
        picks = idx[np.linspace(0, len(idx) - 1, columns).round().astype(int)] if len(idx) else []
        for j in range(columns):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(picks):
                ax.imshow(images[picks[j]], cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{h[picks[j]]:.2f}", fontsize=6)
    fig.suptitle("Ambiguous-MNIST by majority label (rows) and label entropy in nats "
                 "(titles, left to right)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def histogram(values):
    counts, edges = np.histogram(values, bins=ENTROPY_BINS)
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}


def summary(values):
    return {"mean": float(np.mean(values)), "median": float(np.median(values)),
            "std": float(np.std(values)), "frac_above_1nat": float(np.mean(values > 1.0)),
            "histogram": histogram(values)}


def expected_sha256(args):
    """The digest to check the ``--npz`` file against: ``--sha256``, or the ``sha256`` that
    the ``--build-report`` JSON recorded for it."""
    if args.sha256:
        return args.sha256
    if not args.build_report:
        raise SystemExit("error: --npz needs --sha256 <hex digest> or --build-report <json "
                         "written by experiments/build_ambiguous_mnist.py> (the file is checked "
                         "before use)")
    report = json.loads(pathlib.Path(args.build_report).read_text())
    if "sha256" not in report:
        raise SystemExit(f"error: --build-report {args.build_report} holds no 'sha256'. Received "
                         f"keys: {sorted(report)}")
    return report["sha256"]


def compare_with_official(args):
    """``--npz`` mode: generated_vs_official.json / .png in ``--stats-dir``."""
    sha = expected_sha256(args)
    data = amnist_io.load_generated(args.npz, sha256=sha)
    out = pathlib.Path(args.stats_dir or "results/ambiguous_mnist")
    out.mkdir(parents=True, exist_ok=True)
    report = {"file": args.npz, "sha256": sha, "generator_command": data.metadata.get("command"),
              "command": ("python experiments/plot_ambiguous_mnist.py --npz " + args.npz
                          + (f" --build-report {args.build_report}" if args.build_report and
                             not args.sha256 else f" --sha256 {sha}")
                          + f" --stats-dir {out} --lenet-epochs {args.lenet_epochs}"
                          + f" --lenet-seed {args.lenet_seed}"),
              **statistics.set_statistics(data)}
    entropy = aurocs = None
    if args.lenet_epochs > 0:
        def split(dataset, name):
            images, labels = mnist_idx.load_idx_arrays(dataset, name, args.data_dir)
            return images.astype(np.float32) / np.float32(255.0), labels

        check = statistics.independent_lenet_check(
            data, split("mnist", "train"), split("mnist", "test"),
            split("fashion_mnist", "test"), seed=args.lenet_seed, epochs=args.lenet_epochs)
        entropy, aurocs = check["entropy"], check["summary"]["auroc"]
        report["independent_lenet"] = dict(check["summary"], histograms={
            name: histogram(h) for name, h in entropy.items()})
    (out / "generated_vs_official.json").write_text(json.dumps(report, indent=1))
    png = plotting.generated_vs_official(report["test_pe_histogram"],
                                         str(out / "generated_vs_official.png"), entropy, aurocs)
    hist = report["test_pe_histogram"]
    print(f"test PE histogram {hist['counts']} (official {hist['official_counts']}); "
          f"TV {hist['total_variation']}; max MI {report['max_mutual_information']:.4f}; "
          f"label entropy mean {report['label_entropy']['all']['mean']:.3f} nats, "
          f"{100 * report['label_entropy']['all']['fraction_identical_labels']:.1f}% identical")
    if aurocs:
        print("independent LeNet AUROC:", json.dumps(aurocs))
    print(f"wrote {out / 'generated_vs_official.json'} and {png}")
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="generated",
                        help="official | generated | generated_tiny")
    parser.add_argument("--data-dir", default=None, help="manual dir (else $DDU_TF_DATA_DIR)")
    parser.add_argument("--tfds-data-dir", default=None, help="TFDS data dir for generated sets")
    parser.add_argument("--out", default="results/ambiguous_mnist/amnist_digits.png")
    parser.add_argument("--columns", type=int, default=12)
    parser.add_argument("--stats-dir", default=None, help="write stats.json here")
    parser.add_argument("--lenet-seed", type=int, default=12345)
    parser.add_argument("--lenet-epochs", type=int, default=4,
                        help="epochs of the independent LeNet (0 skips it with --npz)")
    parser.add_argument("--npz", default=None,
                        help="a generated Ambiguous-MNIST file: compare it with the official set")
    digest = parser.add_mutually_exclusive_group()
    digest.add_argument("--sha256", default=None, help="expected SHA-256 of --npz")
    digest.add_argument("--build-report", default=None,
                        help="build_report.json of experiments/build_ambiguous_mnist.py holding "
                             "the SHA-256 of --npz")
    args = parser.parse_args(argv)
    if args.lenet_epochs < 0:
        raise SystemExit(f"error: expected --lenet-epochs >= 0. Received: {args.lenet_epochs}")
    if args.npz:
        return compare_with_official(args)

    images, dist, split = unique_images(args.variant, args.data_dir, args.tfds_data_dir)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plot_grid(images, dist, args.columns, args.out)
    print(f"wrote {args.out} ({len(images)} unique images)")
    if args.stats_dir is None:
        return
    t0 = time.time()
    x_train, y_train = mnist_idx.load_idx_arrays("mnist", "train", args.data_dir)
    x_test, y_test = mnist_idx.load_idx_arrays("mnist", "test", args.data_dir)
    model = ambiguous_mnist.train_lenet(x_train.astype(np.float32) / 255.0, y_train,
                                        seed=args.lenet_seed, epochs=args.lenet_epochs)

    def logits_of(images01):
        return model.predict(dirty_mnist.normalize(images01)[..., None], batch_size=4096,
                             verbose=0)

    logits = logits_of(x_test.astype(np.float32) / 255.0)
    mnist_h = uncertainty.softmax_entropy(logits).numpy()
    amb_h = uncertainty.softmax_entropy(logits_of(images.astype(np.float32))).numpy()
    label_h = entropy(dist)
    stats = {
        "variant": args.variant,
        "num_unique_images": int(len(images)),
        "num_train_images": int((split == "train").sum()),
        "label_entropy": {"all": summary(label_h),
                          "train": summary(label_h[split == "train"]),
                          "test": summary(label_h[split == "test"])},
        "independent_lenet": {
            "seed": args.lenet_seed, "epochs": args.lenet_epochs,
            "mnist_test_accuracy": float((logits.argmax(1) == y_test).mean()),
            "softmax_entropy_mnist_test": summary(mnist_h),
            "softmax_entropy_ambiguous": summary(amb_h),
            "seconds": time.time() - t0,
        },
        "majority_label_counts": np.bincount(dist.argmax(1), minlength=10).tolist(),
    }
    out = pathlib.Path(args.stats_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps({k: v for k, v in stats.items() if k != "label_entropy"}, indent=1)[:2000])
    print("label entropy mean (all):", stats["label_entropy"]["all"]["mean"])


if __name__ == "__main__":
    cli.run(main)
