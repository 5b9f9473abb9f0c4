"""A tiny end-to-end run of the main job (experiments/demo.py), as `make demo` runs it."""
import json

import numpy as np

from experiment_scripts import load_experiment_script


def _demo():
    return load_experiment_script("demo")


def test_tiny_demo_writes_summary_figures_and_logs(tmp_path, capsys):
    summary = _demo().main([
        "--output-dir", str(tmp_path), "--epochs", "2", "--al-rounds", "1", "--al-steps", "5",
        "--al-acquire", "5", "--mc-samples", "3", "--pool-subset", "50",
        "--data-dir", str(tmp_path / "tfds")])
    printed = capsys.readouterr().out
    assert "GMM density (DDU, epistemic)" in printed and str(tmp_path) in printed
    saved = json.loads((tmp_path / "summary.json").read_text())
    ddu = saved["ddu"]
    # Two epochs of the SN residual CNN already beat chance (10%) by far.
    assert ddu["test/accuracy"] > 0.3
    assert 0.0 <= ddu["test/ece"] <= 1.0
    for key in ("ood/mnist1d_shuffled_auroc_softmax_entropy", "ood/mnist1d_shuffled_auroc_gmm_density"):
        assert 0.0 <= ddu[key] <= 1.0
    for strategy in ("bald", "ddu", "random"):
        history = saved["active_learning"][strategy]
        assert [r["num_labelled"] for r in history] == [20, 25]
        acquired = history[0]["acquired"]
        assert len(set(acquired)) == 5
        # Acquired points came from the pool, never from the initial labelled set.
        state = json.loads((tmp_path / f"active_learning_{strategy}.json").read_text())["state"]
        assert set(acquired) <= set(state["labelled"])
        assert not set(acquired) & set(state["pool"])
        assert len(state["labelled"]) == 25
    assert (tmp_path / "ood_histograms.png").stat().st_size > 10_000
    assert (tmp_path / "active_learning.png").stat().st_size > 10_000
    events = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert {p.relative_to(tmp_path / "tensorboard").parts[0] for p in events} >= {
        "ddu", "al_bald", "al_ddu", "al_random"}
    assert np.isfinite(saved["total_seconds"])


def test_bad_flag_is_rejected_with_a_clear_message(capsys):
    demo = _demo()
    try:
        demo.main(["--epochs", "0"])
    except SystemExit as exit_:
        assert exit_.code == 2
    else:  # pragma: no cover - the parser must reject the flag
        raise AssertionError("--epochs 0 was accepted")
    assert "--epochs must be >= 1" in capsys.readouterr().err
