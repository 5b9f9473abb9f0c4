"""Statistics of a generated Ambiguous-MNIST against the official set (issue 13 item 3).

Oracles: a hand-placed set of predictive entropies whose histogram over the official bins is
known, the total-variation distance written out by hand, scipy's entropy of the label counts,
and the Mann-Whitney U statistic (AUROC = U / (n1 n2)) for the independent model's AUROCs.
"""
import hashlib
import json

import numpy as np
import pytest
import scipy.stats

from ddu_tf.generation import statistics
from ddu_tf.generation.ambiguous_mnist import OFFICIAL_TEST_HIST
from ddu_tf.io import ambiguous_mnist as amio


def _tiny_file(path, seed=0):
    """8 images: test PE 0.06, 0.10 (bin 0), 0.20 (bin 1), 1.70 (outside [0.05, 1.6])."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    labels = np.array([[3] * 10, [1] * 5 + [2] * 5, [0] * 10, list(range(10)),
                       [7] * 10, [7] * 9 + [1], [4] * 10, [5] * 2 + [6] * 8])
    probs = rng.dirichlet(np.ones(10), 8).astype(np.float32)
    pe = np.array([0.3, 0.4, 0.5, 0.6, 0.06, 0.10, 0.20, 1.70], np.float32)
    mi = np.array([0.01, 0.0, 0.02, 0.049, 0.03, 0.0, 0.01, 0.04], np.float32)
    sha = amio.save_generated(path, images, labels, probs, pe, mi, {"command": "test"})
    return sha, labels, mi


def test_set_statistics_match_hand_computed_histogram_tv_and_label_entropy(tmp_path):
    sha, labels, mi = _tiny_file(tmp_path / "t.npz")
    stats = statistics.set_statistics(amio.load_generated(tmp_path / "t.npz", sha256=sha))
    hist = stats["test_pe_histogram"]
    assert hist["counts"] == [2, 1] + [0] * 14
    assert hist["outside_range"] == 1 and hist["num_test_images"] == 4
    assert hist["official_counts"] == list(OFFICIAL_TEST_HIST)
    q = np.array(OFFICIAL_TEST_HIST) / 6024.0
    tv = 0.5 * (abs(2 / 3 - q[0]) + abs(1 / 3 - q[1]) + q[2:].sum())
    np.testing.assert_allclose(hist["total_variation"], tv)
    np.testing.assert_allclose(hist["edges"][1] - hist["edges"][0], 1.55 / 16, rtol=1e-5)
    assert stats["max_mutual_information"] == pytest.approx(0.049, abs=1e-6)
    assert stats["goals"]["max_mi_met"] and not stats["goals"]["tv_met"]
    counts = np.stack([np.bincount(row, minlength=10) for row in labels])
    h = scipy.stats.entropy(counts.T)  # nats, per image
    le = stats["label_entropy"]
    np.testing.assert_allclose(le["all"]["mean"], h.mean())
    np.testing.assert_allclose(le["test"]["mean"], h[4:].mean())
    assert le["all"]["fraction_identical_labels"] == 4 / 8
    assert le["train"]["fraction_identical_labels"] == 2 / 4
    assert le["all"]["fraction_above_1_nat"] == np.mean(h > 1.0)
    # The official mean from its bin centres is about 0.51 nats (REFERENCE.md section 2).
    assert stats["pe_mean_from_bin_centres"]["official"] == pytest.approx(0.51, abs=0.02)


def test_independent_lenet_check_aurocs_equal_mann_whitney(tmp_path):
    sha, _, _ = _tiny_file(tmp_path / "t.npz")
    data = amio.load_generated(tmp_path / "t.npz", sha256=sha)
    rng = np.random.default_rng(1)
    mnist_x = rng.uniform(0, 1, (300, 28, 28)).astype(np.float32)
    mnist_y = np.arange(300) % 10
    fashion = (rng.uniform(0, 1, (50, 28, 28)).astype(np.float32), np.zeros(50, np.int64))
    out = statistics.independent_lenet_check(
        data, (mnist_x, mnist_y), (mnist_x[:60], mnist_y[:60]), fashion, seed=5, epochs=1,
        batch_size=64)
    s = out["summary"]
    assert s["train_samples"] == 300 + 40 and s["train_ambiguous_pairs"] == 40
    assert {k: len(v) for k, v in out["entropy"].items()} == {
        "MNIST": 60, "Ambiguous-MNIST": 4, "Fashion-MNIST": 50}
    for a, b in (("Ambiguous-MNIST", "Fashion-MNIST"), ("MNIST", "Fashion-MNIST"),
                 ("MNIST", "Ambiguous-MNIST")):
        x, y = out["entropy"][a], out["entropy"][b]
        assert np.all((x >= 0) & (x <= np.log(10) + 1e-6))
        u = scipy.stats.mannwhitneyu(y, x).statistic  # second set = positive class
        np.testing.assert_allclose(s["auroc"][f"{a} vs {b}"], u / (x.size * y.size), rtol=1e-9)
    assert s["softmax_entropy"]["Fashion-MNIST"]["mean"] == pytest.approx(
        out["entropy"]["Fashion-MNIST"].mean())


def test_plot_script_writes_the_comparison_and_checks_the_digest(tmp_path, experiment_script):
    sha, _, _ = _tiny_file(tmp_path / "t.npz")
    script = experiment_script("plot_ambiguous_mnist")
    report = tmp_path / "build_report.json"
    report.write_text(json.dumps({"sha256": sha}))
    out = tmp_path / "out"
    result = script.main(["--npz", str(tmp_path / "t.npz"), "--build-report", str(report),
                          "--stats-dir", str(out), "--lenet-epochs", "0"])
    saved = json.loads((out / "generated_vs_official.json").read_text())
    assert saved["test_pe_histogram"]["counts"] == [2, 1] + [0] * 14
    assert saved["sha256"] == sha == hashlib.sha256((tmp_path / "t.npz").read_bytes()).hexdigest()
    assert "independent_lenet" not in saved and result["generator_command"] == "test"
    assert (out / "generated_vs_official.png").stat().st_size > 0
    with pytest.raises(amio.GeneratedFileError, match="SHA-256 mismatch"):
        script.main(["--npz", str(tmp_path / "t.npz"), "--sha256", "0" * 64,
                     "--stats-dir", str(out), "--lenet-epochs", "0"])
    with pytest.raises(SystemExit, match="--sha256"):
        script.main(["--npz", str(tmp_path / "t.npz"), "--stats-dir", str(out)])
