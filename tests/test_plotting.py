"""ddu_tf.plotting's clipped histograms and experiments/plot_uncertainty.py --scores, on a
synthetic scores file written by ddu_tf.evaluation.save_scores (the writer of evaluate.py)."""
import json

import matplotlib
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ddu_tf import evaluation, plotting

matplotlib.use("Agg")

SETS = ("mnist", "ambiguous", "fashion_mnist", "uniform_noise")


def _synthetic_scores(rng, shift):
    """Protocol-like scores (>= 200 per set): log-densities with one far outlier per set."""
    scores = {}
    for name, n, centre, spread in (("mnist", 300, -3000.0, 400.0),
                                    ("ambiguous", 200, -3500.0, 600.0),
                                    ("fashion_mnist", 250, -40000.0, 8000.0),
                                    ("uniform_noise", 200, -9e5, 1e5)):
        log_density = rng.normal(centre + shift, spread, n)
        log_density[0] -= rng.uniform(1e6, 1e7)  # one far outlier: below every 1st percentile
        scores[name] = {"entropy": np.clip(rng.gamma(2.0, 0.2 + 0.3 * SETS.index(name), n),
                                           0.0, np.log(10.0)),
                        "log_density": log_density,
                        "logits": rng.normal(size=(n, 10)), "labels": np.arange(n) % 10}
    return scores


def test_plot_from_saved_scores_counts_clipped_values_in_edge_bins(tmp_path, experiment_script):
    rng = np.random.default_rng(0)
    models = {"A": _synthetic_scores(rng, 0.0), "B": _synthetic_scores(rng, 500.0)}
    paths = [evaluation.save_scores(tmp_path / f"scores_{name}", scores)
             for name, scores in models.items()]
    png, pairs_json = tmp_path / "fig" / "fig1.png", tmp_path / "pairs.json"
    panels = experiment_script("plot_uncertainty").main(
        ["--scores", *paths, "--names", "A", "B", "--output", str(png), "--bins", "40",
         "--pairs-json", str(pairs_json)])

    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")) == (
        1200, 760)  # 12 x 3.8 inches per model at 100 dpi, 2 models
    labels = {"mnist": "MNIST", "ambiguous": "Ambiguous-MNIST", "fashion_mnist": "Fashion-MNIST"}
    assert list(panels) == ["A", "B"]
    for model, scores in models.items():
        for key, percentiles in (("entropy", (0, 100)), ("log_density", (1, 99))):
            panel = panels[model][key]
            assert list(panel["counts"]) == list(labels.values())  # only the default --sets
            edges = panel["edges"]
            assert len(edges) == 41
            stored = {name: scores[name][key].astype(np.float32).astype(np.float64)
                      for name in labels}  # what the float32 file holds
            assert edges[0] == pytest.approx(min(np.percentile(v, percentiles[0])
                                                 for v in stored.values()), rel=1e-12)
            assert edges[-1] == pytest.approx(max(np.percentile(v, percentiles[1])
                                                  for v in stored.values()), rel=1e-12)
            for name, label in labels.items():
                v, counts = stored[name], panel["counts"][label]
                below, above = int(np.sum(v < edges[0])), int(np.sum(v > edges[-1]))
                assert (panel["below"][label], panel["above"][label]) == (below, above)
                inside = np.histogram(v[(v >= edges[0]) & (v <= edges[-1])], bins=edges)[0]
                np.testing.assert_array_equal(counts[1:-1], inside[1:-1])
                assert counts[0] == inside[0] + below and counts[-1] == inside[-1] + above
                assert counts.sum() == v.size
                if key == "entropy":
                    assert below == above == 0
                else:
                    assert below >= 1  # the far outlier at least

    pairs = json.loads(pairs_json.read_text())
    for model, scores in models.items():
        row = pairs[model]["MNIST vs Ambiguous-MNIST"]
        a = {k: scores["mnist"][k].astype(np.float32) for k in ("entropy", "log_density")}
        b = {k: scores["ambiguous"][k].astype(np.float32) for k in ("entropy", "log_density")}
        y = np.r_[np.zeros(a["entropy"].size), np.ones(b["entropy"].size)]
        assert row["entropy"] == pytest.approx(roc_auc_score(y, np.r_[a["entropy"],
                                                                       b["entropy"]]))
        assert row["log_density"] == pytest.approx(roc_auc_score(
            y, -np.r_[a["log_density"], b["log_density"]]))
        assert set(pairs[model]) == {"Ambiguous-MNIST vs Fashion-MNIST",
                                     "MNIST vs Fashion-MNIST", "MNIST vs Ambiguous-MNIST"}


def test_clipped_bins_are_marked():
    import matplotlib.pyplot as plt

    values = {"MNIST": np.r_[np.linspace(0.0, 1.0, 98), -50.0, -60.0],
              "Fashion-MNIST": np.r_[np.linspace(0.5, 1.5, 99), 40.0]}
    panel = plotting.histogram_panel(values, bins=10, percentiles=(2, 99))
    assert panel["below"] == {"MNIST": 2, "Fashion-MNIST": 0}
    assert panel["above"] == {"MNIST": 0, "Fashion-MNIST": 1}
    fig, ax = plt.subplots()
    plotting.draw_histogram_panel(ax, panel, "x (nats)")
    texts = [t.get_text() for t in ax.texts]
    low, high = panel["edges"][0], panel["edges"][-1]
    assert f"2 MNIST < {low:.4g}" in texts and f"1 Fashion-MNIST > {high:.4g}" in texts
    assert len(ax.patches) >= 2 + 2  # two step histograms + a shaded band per clipped edge
    assert ax.get_xlabel() == "x (nats)"
    plt.close(fig)


def test_load_scores_rejects_other_files(tmp_path):
    np.savez(tmp_path / "other.npz", logits=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Expected a scores file written by"):
        evaluation.load_scores(tmp_path / "other.npz")
    np.savez(tmp_path / "half.npz", **{"mnist/entropy": np.zeros(2)})
    with pytest.raises(ValueError, match="for set 'mnist'"):
        evaluation.load_scores(tmp_path / "half.npz")
    with pytest.raises(ValueError, match="percentiles"):
        plotting.robust_limits({"a": np.arange(3.0)}, (50, 10))
