"""Gal, Islam & Ghahramani (2017): the authors' released Keras learning curves beside ours.

The 10%-error column of our Experiment 1 is later than the paper's Table 1 for BALD, Var
Ratios and Max Entropy (issue 20 item 5). The authors' repository
(github.com/Riashat/Deep-Bayesian-Active-Learning) keeps the test accuracies of its Keras
runs of that experiment (10 images acquired per round, up to 1000 labelled) as NumPy files
in ``MC_Dropout_Keras/Results/Queries=10/``: ``Dropout_Bald.npy``, ``Dropout_Bald_2.npy``,
``Dropout_Max_Entropy.npy``, ``Dropout_VarRatio.npy`` -- 99 accuracies each, at training-set
sizes 20, 30, ..., 1000 (``np.arange(20, 1010, 10)`` in the repository's
``Results/Accuracy_Plot.py``), i.e. 0, 10, ..., 980 acquired images; one run per file, seed
not recorded. This script puts them beside the paper's Table 1 and our runs, with the same
"images to X% error" statistic (:func:`ddu_tf.active_learning.first_reaching`).

Import the files once (read with ``allow_pickle=False``, checked for shape and range; their
SHA-256 is recorded), from a clone of that repository::

    python experiments/dbal_authors_curves.py \\
        --authors-dir <clone>/MC_Dropout_Keras/Results/Queries=10

Later runs (e.g. after more of our seeds finished) reuse the imported
``<output-dir>/authors_curves.json``::

    python experiments/dbal_authors_curves.py

Writes ``<output-dir>/authors_curves.json`` (the imported accuracies), ``comparison.json``,
``README.md`` and ``comparison.png``. Our runs are read from
``<result-dir>/exp1/<function>_seed<s>/results.json`` (``experiments/bayesian_al.py``).
"""
import argparse
import hashlib
import io
import json
import os

import numpy as np

from ddu_tf import cli
from ddu_tf.active_learning import (atomic_write_text, collect_results, first_reaching,
                                    mean_std_over_runs)
from ddu_tf.io.atomic import atomic_write

AUTHORS_FILES = {"Dropout_Bald.npy": "bald", "Dropout_Bald_2.npy": "bald",
                 "Dropout_Max_Entropy.npy": "max_entropy", "Dropout_VarRatio.npy": "var_ratios"}
"""The Queries=10 files and the acquisition function each one ran."""
AUTHORS_ROUNDS = 99
"""Accuracies per file: training-set sizes 20, 30, ..., 1000."""
SOURCE = ("github.com/Riashat/Deep-Bayesian-Active-Learning, "
          "MC_Dropout_Keras/Results/Queries=10/")
PAPER_TABLE_1 = {"bald": (145, 335), "var_ratios": (120, 295), "max_entropy": (165, 355)}
"""Paper Table 1: acquired images to 10% / 5% test error."""
FUNCTIONS = ("bald", "var_ratios", "max_entropy")
THRESHOLDS = (("10pct", 0.10), ("5pct", 0.05))
ACCURACY_AT = (50, 100, 110, 120, 200, 300)
"""Acquired-image counts whose test accuracy the table lists (110 acquired = 130 labelled:
the last training batch of 128 holds 2 examples)."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--authors-dir", default=None,
                   help="directory holding the authors' Queries=10 .npy files (import them); "
                        "without it, <output-dir>/authors_curves.json is reused")
    p.add_argument("--result-dir", default="results/bayesian_al",
                   help="our runs: <result-dir>/exp1/<function>_seed<s>/results.json")
    p.add_argument("--output-dir", default="results/bayesian_al/authors_curves")
    return p.parse_args(argv)


def read_curve(path):
    """One authors' file: ``[99]`` float64 test accuracies in [0, 1], and its SHA-256.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: not a plain NumPy array file (object arrays are refused, nothing is
            unpickled), or not 99 finite accuracies in [0, 1].
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Expected the authors' curve file {path}. Received: no such file. Pass "
            f"--authors-dir <clone of the authors' repository>/MC_Dropout_Keras/Results/"
            f"Queries=10 (files {', '.join(AUTHORS_FILES)}).")
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        curve = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"Expected a NumPy .npy array of test accuracies in {path}. Received "
                         f"a file NumPy cannot read without unpickling: {error}") from None
    if not isinstance(curve, np.ndarray) or curve.shape != (AUTHORS_ROUNDS,) \
            or curve.dtype.kind != "f":
        raise ValueError(f"Expected {AUTHORS_ROUNDS} float accuracies in {path}. Received: "
                         f"{getattr(curve, 'dtype', type(curve))} of shape "
                         f"{getattr(curve, 'shape', None)}.")
    if not np.all(np.isfinite(curve)) or curve.min() < 0 or curve.max() > 1:
        raise ValueError(f"Expected accuracies in [0, 1] in {path}. Received values from "
                         f"{np.nanmin(curve)} to {np.nanmax(curve)} (or NaN).")
    return curve.astype(np.float64), hashlib.sha256(data).hexdigest()


def import_authors(directory):
    """``{file: {"function", "sha256", "acquired", "accuracy"}}`` of the authors' files."""
    curves = {}
    for name, function in AUTHORS_FILES.items():
        accuracy, sha = read_curve(os.path.join(directory, name))
        curves[name] = {"function": function, "sha256": sha,
                        "acquired": list(range(0, 10 * AUTHORS_ROUNDS, 10)),
                        "accuracy": [float(a) for a in accuracy]}
    return {"source": SOURCE, "x": "acquired images (training-set size - 20)",
            "curves": curves}


def curve_stats(acquired, accuracy):
    """Images to 10% / 5% error and the accuracy at ``ACCURACY_AT`` of one curve."""
    acquired, accuracy = np.asarray(acquired), np.asarray(accuracy, np.float64)
    stats = {f"to_{key}_error": first_reaching(acquired, 1 - accuracy, level,
                                               higher_is_better=False)
             for key, level in THRESHOLDS}
    stats["accuracy_at"] = {str(n): float(accuracy[acquired == n][0])
                            for n in ACCURACY_AT if np.any(acquired == n)}
    stats["last_acquired"] = int(acquired[-1])
    return stats


def our_curves(runs, function):
    """``[(seed, acquired, accuracy)]`` of our Experiment-1 runs of ``function``
    (``runs``: :func:`ddu_tf.active_learning.collect_results` of ``<result-dir>/exp1``)."""
    return [(saved["config"]["seed"], [r["num_acquired"] for r in saved["history"]],
             [1 - r["metrics"]["test/error"] for r in saved["history"]])
            for saved in runs.get(function, [])]


def _mean_std(values):
    mean, std = mean_std_over_runs(values)
    return None if mean is None else {"mean": mean, "std": std}


def compare(authors, runs):
    """Per function: the paper's Table 1, each authors' file and our seeds (mean, std)."""
    table = {}
    for function in FUNCTIONS:
        row = {"paper": dict(zip(("to_10pct_error", "to_5pct_error"), PAPER_TABLE_1[function])),
               "authors": {name: curve_stats(c["acquired"], c["accuracy"])
                           for name, c in authors["curves"].items()
                           if c["function"] == function}}
        ours_runs = our_curves(runs, function)
        if ours_runs:
            per_seed = {seed: curve_stats(acq, acc) for seed, acq, acc in ours_runs}
            ours = {"seeds": sorted(per_seed), "per_seed": per_seed}
            for key, _ in THRESHOLDS:
                ours[f"to_{key}_error"] = _mean_std([s[f"to_{key}_error"]
                                                    for s in per_seed.values()])
            ours["accuracy_at"] = {
                str(n): _mean_std([s["accuracy_at"].get(str(n)) for s in per_seed.values()])
                for n in ACCURACY_AT}
            row["ours"] = ours
        table[function] = row
    return table


def _fmt(value, digits=0):
    if value is None:
        return "not reached"
    if isinstance(value, dict):
        text = f"{value['mean']:.{digits}f}"
        return text + (f" +- {value['std']:.{digits}f}" if value["std"] is not None else "")
    return f"{value:.{digits}f}"


def table_lines(table):
    head = ("| function | curve | images to 10% error | to 5% error | "
            + " | ".join(f"acc. % at {n}" for n in ACCURACY_AT) + " |")
    lines = [head, "|---|---|---|---|" + "---|" * len(ACCURACY_AT)]
    for function, row in table.items():
        paper = row["paper"]
        lines.append(f"| {function} | paper Table 1 | {paper['to_10pct_error']} | "
                     f"{paper['to_5pct_error']} |" + " |" * len(ACCURACY_AT))
        for name, stats in row["authors"].items():
            acc = [_fmt(100 * stats["accuracy_at"][str(n)], 1) for n in ACCURACY_AT]
            lines.append(f"| {function} | authors' `{name}` (1 run) | "
                         f"{_fmt(stats['to_10pct_error'])} | {_fmt(stats['to_5pct_error'])} | "
                         + " | ".join(acc) + " |")
        if "ours" in row:
            ours = row["ours"]
            last = min(s["last_acquired"] for s in ours["per_seed"].values())
            acc = []
            for n in ACCURACY_AT:
                stat = ours["accuracy_at"][str(n)]
                acc.append("" if stat is None else _fmt(
                    {"mean": 100 * stat["mean"],
                     "std": None if stat["std"] is None else 100 * stat["std"]}, 1))
            lines.append(
                f"| {function} | ours, {len(ours['seeds'])} seeds (mean +- std) | "
                f"{_fmt(ours['to_10pct_error'])} | "
                f"{_fmt(ours['to_5pct_error']) if ours['to_5pct_error'] else f'not within {last}'}"
                f" | " + " | ".join(acc) + " |")
    return lines


def plot(table, authors, runs, path):
    """Test accuracy vs acquired images: ours (mean, band +-1 std) and the authors' files."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"bald": "tab:red", "var_ratios": "tab:blue", "max_entropy": "tab:green"}
    fig = plt.figure(figsize=(8, 5))
    x_max = 300
    for function in table:
        curves = our_curves(runs, function)
        if curves:
            length = min(len(acq) for _, acq, _ in curves)
            acquired = np.asarray(curves[0][1][:length])
            acc = np.array([a[:length] for _, _, a in curves])
            x_max = max(x_max, int(acquired[-1]))
            plt.plot(acquired, acc.mean(0), color=colors[function],
                     label=f"{function}, ours ({len(curves)} "
                           f"seed{'' if len(curves) == 1 else 's'})")
            if len(curves) > 1:
                std = acc.std(0, ddof=1)
                plt.fill_between(acquired, acc.mean(0) - std, acc.mean(0) + std, alpha=0.2,
                                 color=colors[function], linewidth=0)
        for name, curve in authors["curves"].items():
            if curve["function"] == function:
                style = ":" if name.endswith("_2.npy") else "--"
                plt.plot(curve["acquired"], curve["accuracy"], style, color=colors[function],
                         label=f"{function}, authors' {name}")
    for level in (0.90, 0.95):
        plt.axhline(level, color="grey", linewidth=0.8)
    plt.xlim(0, x_max)
    plt.ylim(0.3, 1.0)
    plt.xlabel("acquired images")
    plt.ylabel("MNIST test accuracy")
    plt.title("Gal et al. 2017, Experiment 1: the authors' released Keras curves and ours\n"
              "ours: mean over seeds, band +-1 std; authors: one run per file")
    plt.grid(alpha=0.3)
    plt.legend(fontsize=7, loc="lower right")
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight"))
    plt.close(fig)


README_HEAD = """# Experiment 1: the authors' released curves, the paper's Table 1 and ours

Made by (from the repository root; the authors' files were imported once with
`--authors-dir <clone>/MC_Dropout_Keras/Results/Queries=10`, see the script's docstring):

    python experiments/dbal_authors_curves.py

Source of the authors' curves: {source}
(`authors_curves.json` keeps the 99 accuracies and the SHA-256 of each file). Their x axis is the repository's own (`Results/Accuracy_Plot.py`:
training-set sizes 20, 30, ..., 1000), converted here to acquired images. Each authors' file
is one run with an unrecorded seed; ours are the committed `../exp1/<function>_seed<s>`
runs (seeds 369, 370, 371; `+-` is the sample standard deviation over seeds, ddof 1). Same
statistic for all: per curve, the acquired images at the first round whose test error is
<= 10% (5%). "not within N": our runs have finished N acquired images without reaching it.
"""


def write_readme(table, authors, path):
    text = README_HEAD.format(source=authors["source"]) + "\n" + "\n".join(table_lines(table))
    text += "\n\n![curves](comparison.png)\n"
    atomic_write_text(path, text)
    return text


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    imported = os.path.join(args.output_dir, "authors_curves.json")
    if args.authors_dir:
        authors = import_authors(args.authors_dir)
        atomic_write_text(imported, json.dumps(authors, indent=1) + "\n")
    elif os.path.exists(imported):
        with open(imported, encoding="utf-8") as handle:
            authors = json.load(handle)
    else:
        raise FileNotFoundError(
            f"Expected the imported authors' curves {imported}. Received: no such file. Run "
            "once with --authors-dir <clone>/MC_Dropout_Keras/Results/Queries=10.")
    runs = collect_results(os.path.join(args.result_dir, "exp1"))
    table = compare(authors, runs)
    atomic_write_text(os.path.join(args.output_dir, "comparison.json"),
                      json.dumps(table, indent=2) + "\n")
    plot(table, authors, runs, os.path.join(args.output_dir, "comparison.png"))
    text = write_readme(table, authors, os.path.join(args.output_dir, "README.md"))
    print(text)
    return table


if __name__ == "__main__":
    cli.run(main)
