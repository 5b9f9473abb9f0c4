"""Figures shared by the experiment scripts (matplotlib, Agg backend, PNG files).

* :func:`uncertainty_histograms`: Fig. 1/2 of DDU (Mukhoti et al. 2021) -- per model, the
  histograms of softmax entropy and of GMM log-density on each evaluation set, with shared
  bins per panel and clipped tails counted in (and marked on) the edge bins
  (:func:`histogram_panel`, :func:`draw_histogram_panel`, reusable for any panel);
* :func:`generated_vs_official`: a generated Ambiguous-MNIST's ensemble-PE histogram beside the
  official one, and an independent model's softmax entropies (issue 13).

Scores come from :func:`ddu_tf.evaluation.uncertainty_scores` / :func:`~ddu_tf.evaluation.set_scores`,
or from a file of :func:`ddu_tf.evaluation.save_scores`.
"""
from __future__ import annotations

import os

import numpy as np

SET_COLORS = {"MNIST": "tab:blue", "Ambiguous-MNIST": "tab:orange",
              "Fashion-MNIST": "tab:green"}
"""Fixed colours of the three sets of DDU's Dirty-MNIST figure."""

SET_LABELS = {"mnist": "MNIST", "ambiguous": "Ambiguous-MNIST", "fashion_mnist": "Fashion-MNIST",
              "mnist_rot90": "MNIST rotated 90°", "sklearn_digits": "sklearn digits",
              "uniform_noise": "uniform noise"}
"""Figure labels of the Dirty-MNIST protocol's set names (``ddu_tf.data.ood_sets``)."""

HATCHES = ("//", "\\\\", "..", "xx", "++", "oo")
"""Hatch of the n-th set of a histogram panel (distinct even in grey-scale print)."""

SCORE_AXES = {"entropy": "softmax entropy (nats)",
              "log_density": "GMM log-density log q(z) = logsumexp_c log q(z|c) (nats)"}
"""x-axis labels of the two Fig. 1/2 scores."""


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


# ---------------------------------------------------------------- clipped histograms
def robust_limits(values_by_set, percentiles=(1.0, 99.0)):
    """x-range of a histogram panel that keeps the bulk of EVERY set.

    ``low = min_s percentile(v_s, percentiles[0])``, ``high = max_s percentile(v_s,
    percentiles[1])``: at most ``percentiles[0]`` % of any one set falls below the range and
    ``100 - percentiles[1]`` % above it, so a long tail of one set (OoD log-densities reach
    -1e5 nats) does not squash the others, and no set is clipped wholesale.

    Args:
      values_by_set: dict ``name -> [n]`` finite values.
      percentiles: ``(low, high)`` in [0, 100]; ``(0, 100)`` is the full range (no clipping).

    Returns:
      ``(low, high)`` floats with ``low < high`` (a constant panel gets ``high = low + 1``).
    """
    low_q, high_q = (float(q) for q in percentiles)
    if not 0.0 <= low_q < high_q <= 100.0:
        raise ValueError(f"Expected percentiles 0 <= low < high <= 100. Received: "
                         f"percentiles={tuple(percentiles)}.")
    arrays = [np.asarray(v, np.float64) for v in values_by_set.values()]
    low = min(float(np.percentile(v, low_q)) for v in arrays)
    high = max(float(np.percentile(v, high_q)) for v in arrays)
    return (low, high) if high > low else (low, low + 1.0)


def clipped_histogram(values, edges):
    """Counts of ``values`` in ``bins = len(edges) - 1`` bins, out-of-range values in the edge
    bins.

    Bins are ``[e_i, e_{i+1})`` and the last ``[e_{B-1}, e_B]`` (``np.histogram``'s rule);
    values below ``edges[0]`` are added to bin 0 and values above ``edges[-1]`` to bin
    ``B - 1``, so ``counts.sum() == len(values)``.

    Args:
      values: ``[n]`` finite values.
      edges: ``[B + 1]`` increasing bin edges.

    Returns:
      ``(counts [B] int64, below, above)``: ``below`` / ``above`` are the numbers of values
      beyond the range, already included in ``counts[0]`` / ``counts[-1]``.
    """
    values = np.asarray(values, np.float64)
    edges = np.asarray(edges, np.float64)
    below = int(np.count_nonzero(values < edges[0]))
    above = int(np.count_nonzero(values > edges[-1]))
    counts = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0].astype(np.int64)
    return counts, below, above


def histogram_panel(values_by_set, bins=50, percentiles=(0.0, 100.0)):
    """The data of one histogram panel: shared bins, per-set counts and clipping.

    Args:
      values_by_set: dict ``name -> [n]`` finite values (any units).
      bins: number of bins ``B`` shared by all sets.
      percentiles: x-range by :func:`robust_limits` (default: the full range).

    Returns:
      dict with ``edges [B + 1]``, ``counts`` (name -> ``[B]`` int64, clipped values in the
      edge bins, :func:`clipped_histogram`), ``below`` / ``above`` (name -> values beyond the
      range) and ``sizes`` (name -> ``n``).

    Raises:
      ValueError: no set, an empty set or non-finite values.
    """
    if not values_by_set:
        raise ValueError("Expected at least one set of values. Received an empty dict.")
    values = {}
    for name, v in values_by_set.items():
        v = np.asarray(v, np.float64).ravel()
        if v.size == 0 or not np.all(np.isfinite(v)):
            raise ValueError(f"Expected a non-empty set of finite values. Received {v.size} "
                             f"values, {int(np.sum(~np.isfinite(v)))} NaN/Inf, for set {name!r}.")
        values[name] = v
    low, high = robust_limits(values, percentiles)
    edges = np.linspace(low, high, int(bins) + 1)
    panel = {"edges": edges, "counts": {}, "below": {}, "above": {}, "sizes": {}}
    for name, v in values.items():
        counts, below, above = clipped_histogram(v, edges)
        panel["counts"][name], panel["below"][name], panel["above"][name] = counts, below, above
        panel["sizes"][name] = int(v.size)
    return panel


def draw_histogram_panel(ax, panel, xlabel, colors=None):
    """Draw :func:`histogram_panel` on ``ax``: one step histogram per set, hatched.

    Every set is an outlined step histogram with a light fill and its own hatch, y = fraction
    of the set per bin, so overlapping sets stay distinguishable. When values were clipped, the
    edge bin is shaded grey and an arrow labelled ``"<k> <set> < <low>"`` (``> <high>``)
    points at it; the y-range ends at 1.15 x the tallest un-clipped bar, so a bin swollen by
    clipping runs off the top but keeps its label.

    Args:
      ax: a matplotlib Axes.
      panel: from :func:`histogram_panel`.
      xlabel: x-axis label (with units).
      colors: optional dict name -> colour (default: :data:`SET_COLORS`, then the colour cycle).
    """
    import matplotlib.colors as mcolors

    colors = {**SET_COLORS, **(colors or {})}
    edges = panel["edges"]
    width = edges[1] - edges[0]
    tallest = 0.0
    marks = {"below": [], "above": []}
    for i, (name, counts) in enumerate(panel["counts"].items()):
        color = colors.get(name, f"C{i % 10}")
        fraction = counts / panel["sizes"][name]
        ax.stairs(fraction, edges, fill=True, facecolor=mcolors.to_rgba(color, 0.15),
                  edgecolor=color, hatch=HATCHES[i % len(HATCHES)], linewidth=1.6,
                  label=f"{name} (n={panel['sizes'][name]})")
        inner = counts.astype(np.float64)
        inner[0] -= panel["below"][name]
        inner[-1] -= panel["above"][name]
        tallest = max(tallest, float(np.max(inner)) / panel["sizes"][name])
        for side, index in (("below", 0), ("above", -1)):
            if panel[side][name]:
                marks[side].append((name, color, panel[side][name], fraction[index]))
    top = 1.15 * tallest if tallest > 0 else 1.0
    ax.set_ylim(0.0, top)
    for side, index, sign in (("below", 0, "<"), ("above", -1, ">")):
        if not marks[side]:
            continue
        left = edges[0] if side == "below" else edges[-1] - width
        ax.axvspan(left, left + width, color="0.85", zorder=0, linewidth=0)
        limit = edges[0] if side == "below" else edges[-1]
        for row, (name, color, k, height) in enumerate(marks[side]):
            ax.annotate(f"{k} {name} {sign} {limit:.4g}",
                        xy=(left + width / 2, min(height, top)), xycoords="data",
                        xytext=(0.03 if side == "below" else 0.97, 0.92 - 0.09 * row),
                        textcoords="axes fraction", ha="left" if side == "below" else "right",
                        va="top", fontsize=7, color=color,
                        arrowprops={"arrowstyle": "->", "color": color, "linewidth": 0.8})
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of the set per bin")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))


def uncertainty_histograms(scores, path, bins=50, density_percentiles=(1.0, 99.0)):
    """Write the Fig. 1/2 grid: one row per model, columns softmax entropy and log-density.

    Each panel shares its bins between the sets (:func:`histogram_panel`). The entropy panel
    spans the full range; the log-density panel spans :func:`robust_limits` with
    ``density_percentiles`` (OoD densities reach -1e5 nats and would squash the rest), and
    the values beyond it are counted in the edge bins and marked
    (:func:`draw_histogram_panel`).

    Args:
      scores: dict ``model name -> set name -> {"entropy": [n], "log_density": [n]}``
        (any set names; colours for the three DDU sets are fixed).
      path: output PNG path (directories are created), 100 dpi, 12 x 3.8 inches per model.
      bins: histogram bins per panel.
      density_percentiles: ``(low, high)`` percentiles of the log-density range;
        ``(0, 100)`` shows everything.

    Returns:
      ``path``.

    Raises:
      ValueError: no model, or empty / non-finite scores.
    """
    return draw_uncertainty_panels(uncertainty_panels(scores, bins, density_percentiles), path)


def draw_uncertainty_panels(panels, path):
    """Write the grid of :func:`uncertainty_histograms` from its panel data
    (:func:`uncertainty_panels`); returns ``path``."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 2, figsize=(12, 3.8 * len(panels)), squeeze=False)
    for row, (model_name, per_key) in enumerate(panels.items()):
        for col, key in enumerate(("entropy", "log_density")):
            ax = axes[row, col]
            draw_histogram_panel(ax, per_key[key], SCORE_AXES[key])
            ax.set_title(f"{model_name}: {key.replace('_', '-')}", fontsize=10)
            ax.legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    return _save(fig, path, dpi=100)


def uncertainty_panels(scores, bins=50, density_percentiles=(1.0, 99.0)):
    """The panel data of :func:`uncertainty_histograms`: ``model -> {"entropy": panel,
    "log_density": panel}`` (:func:`histogram_panel`; entropy over the full range)."""
    if not scores:
        raise ValueError("Expected scores of at least one model. Received an empty dict.")
    panels = {}
    for model_name, per_set in scores.items():
        panels[model_name] = {}
        for key, percentiles in (("entropy", (0.0, 100.0)),
                                 ("log_density", density_percentiles)):
            try:
                panels[model_name][key] = histogram_panel(
                    {name: s[key] for name, s in per_set.items()}, bins, percentiles)
            except ValueError as error:
                raise ValueError(f"Expected finite {key} scores of model {model_name!r}. "
                                 f"Received: {error}") from None
    return panels


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


__all__ = ["HATCHES", "SCORE_AXES", "SET_COLORS", "SET_LABELS", "clipped_histogram",
           "draw_histogram_panel", "draw_uncertainty_panels", "generated_vs_official", "histogram_panel", "quantile_curves",
           "robust_limits", "uncertainty_histograms", "uncertainty_panels"]
