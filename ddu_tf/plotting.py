"""Figures shared by the experiment scripts (matplotlib, Agg backend, PNG files).

* :func:`uncertainty_histograms`: Fig. 1/2 of DDU (Mukhoti et al. 2021) -- per model, the
  histograms of softmax entropy and of GMM log-density on each evaluation set;
* :func:`density_zoom_histograms`: the log-density histograms on the in-distribution range;
* :func:`generated_vs_official`: a generated Ambiguous-MNIST's ensemble-PE histogram beside the
  official one, and an independent model's softmax entropies (issue 13).

Scores come from :func:`ddu_tf.evaluation.uncertainty_scores`.
"""
from __future__ import annotations

import os

import numpy as np

SET_COLORS = {"MNIST": "tab:blue", "Ambiguous-MNIST": "tab:orange",
              "Fashion-MNIST": "tab:green"}
"""Fixed colours of the three sets of DDU's Dirty-MNIST figure."""


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path, dpi):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def uncertainty_histograms(scores, path, bins=50):
    """Write the Fig. 1/2 grid: one row per model, columns entropy and log-density.

    The log-density axis is limited to the 1st..100th percentile of all plotted values (OoD
    densities reach -1e5 and would squash the iD histograms); values below are counted in
    the leftmost bin.

    Args:
      scores: dict ``model name -> set name -> {"entropy": [n], "log_density": [n]}``
        (any set names; colours for the three DDU sets are fixed).
      path: output PNG path (directories are created), 100 dpi, 10 x 3.2 inches per model.
      bins: histogram bins per panel.

    Returns:
      ``path``.

    Raises:
      ValueError: no model, or non-finite scores.
    """
    if not scores:
        raise ValueError("Expected scores of at least one model. Received an empty dict.")
    plt = _pyplot()
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
                        label=name, color=SET_COLORS.get(name))
            ax.set_xlabel(label)
            ax.set_ylabel("density")
            ax.set_title(model_name)
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi=100)


def density_zoom_histograms(scores, path, in_distribution=("MNIST", "Ambiguous-MNIST"),
                            bins=50):
    """Log-density histograms on the range of the in-distribution values.

    The x-range is the 1st percentile of the ``in_distribution`` sets' log-densities up to
    the maximum of all; lower (OoD) values are piled into the first bin. One panel per
    model, 5 x 3.2 inches each, 100 dpi.

    Args:
      scores: as :func:`uncertainty_histograms`.
      path: output PNG path.
      in_distribution: names of the sets that set the range.
      bins: histogram bins per panel.

    Returns:
      ``path``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(scores), figsize=(5 * len(scores), 3.2), squeeze=False)
    for ax, (model_name, per_set) in zip(axes[0], scores.items()):
        ind = np.concatenate([per_set[s]["log_density"] for s in in_distribution])
        everything = np.concatenate([v["log_density"] for v in per_set.values()])
        low, high = np.percentile(ind, 1), everything.max()
        edges = np.linspace(low, high, bins + 1)
        for name, v in per_set.items():
            ax.hist(np.clip(v["log_density"], low, high), bins=edges, density=True, alpha=0.5,
                    label=name, color=SET_COLORS.get(name))
        ax.set_xlabel("GMM log-density (nats), iD range")
        ax.set_ylabel("density")
        ax.set_title(model_name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi=100)


def quantile_curves(curves, path, *, xlabel, ylabel, title, quantiles=(0.25, 0.5, 0.75),
                    reference_lines=(), dpi=120):
    """Median line and interquartile band of each method's runs (e.g. seeds), one PNG.

    Args:
        curves: ``{label: (x [n], y [runs, n])}``; runs of one label share ``x``.
        path: PNG path.
        xlabel, ylabel, title: axis labels and title.
        quantiles: ``(low, middle, high)`` over the runs: the band and the line
            (default: quartiles and median).
        reference_lines: horizontal lines ``y`` to draw (e.g. accuracy thresholds).

    Returns:
        ``path``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (x, y) in curves.items():
        y = np.atleast_2d(np.asarray(y, dtype=np.float64))
        low, mid, high = np.quantile(y, quantiles, axis=0)
        line, = ax.plot(x, mid, label=f"{label} ({len(y)} runs)")
        if len(y) > 1:
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    for level in reference_lines:
        ax.axhline(level, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path, dpi)


def generated_vs_official(histogram, path, entropy=None, aurocs=None, bins=40):
    """Issue 13's figure: the generated test set's ensemble-PE histogram beside the official
    one and, if given, an independent model's softmax entropy on the three sets.

    Args:
      histogram: ``test_pe_histogram`` of :func:`ddu_tf.generation.statistics.set_statistics`
        (``edges`` [B + 1], ``normalised`` and ``official_normalised`` [B], ``total_variation``).
      path: output PNG path (100 dpi; 5 x 3.6 inches per panel).
      entropy: optional dict set name -> ``[n]`` softmax entropies (nats).
      aurocs: optional dict ``"A vs B"`` -> AUROC, written into the second panel's title.
      bins: bins of the entropy histograms over ``[0, log 10]``.

    Returns:
      ``path``.
    """
    plt = _pyplot()
    panels = 1 if entropy is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), squeeze=False)
    ax = axes[0, 0]
    edges = np.asarray(histogram["edges"], np.float64)
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    ours = histogram["normalised"] or [0.0] * len(centres)
    ax.bar(centres - width / 4, histogram["official_normalised"], width / 2,
           label=f"official test ({sum(histogram['official_counts'])} images)", color="tab:gray")
    ax.bar(centres + width / 4, ours, width / 2,
           label=f"generated test ({sum(histogram['counts'])} images)", color="tab:orange")
    tv = histogram["total_variation"]
    ax.set_title(f"Ensemble PE, {len(centres)} bins; TV distance "
                 f"{'n/a' if tv is None else f'{tv:.3f}'}", fontsize=10)
    ax.set_xlabel("scoring ensemble predictive entropy (nats)")
    ax.set_ylabel("fraction of test images")
    ax.legend(fontsize=8)
    if entropy is not None:
        ax = axes[0, 1]
        grid = np.linspace(0.0, np.log(10.0), bins + 1)
        for name, h in entropy.items():
            ax.hist(np.asarray(h, np.float64), bins=grid, density=True, alpha=0.5,
                    label=f"{name} ({len(h)})", color=SET_COLORS.get(name))
        title = "Independent LeNet, softmax entropy"
        if aurocs:
            title += "\n" + "; ".join(f"AUROC {k}: {v:.3f}" for k, v in aurocs.items()
                                       if k.startswith("Ambiguous"))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("softmax entropy (nats)")
        ax.set_ylabel("density")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi=100)


__all__ = ["SET_COLORS", "density_zoom_histograms", "generated_vs_official", "quantile_curves",
           "uncertainty_histograms"]
