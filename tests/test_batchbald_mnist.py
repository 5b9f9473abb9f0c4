"""experiments/batchbald_mnist.py on a tiny MNIST config: runs, resumes, aggregates."""
import json

import numpy as np
import pytest

TINY = ["--seeds", "1", "--max-labels", "40", "--train-limit", "3000", "--pool-subset", "200",
        "--mc-samples", "8", "--test-mc-samples", "4", "--epochs", "1",
        "--sampler-length", "64", "--test-size", "200", "--num-configurations", "100",
        "--val-size", "50"]


@pytest.mark.real_data
def test_tiny_run_resumes_and_aggregates(experiment_script, tmp_path, mnist_data_dir):
    script = experiment_script("batchbald_mnist")
    argv = TINY + ["--methods", "batchbald", "--data-dir", str(mnist_data_dir),
                   "--result-dir", str(tmp_path)]
    table = script.main(argv)
    assert set(table) == {"batchbald"}
    for method in table:
        saved = json.loads((tmp_path / f"{method}_seed0" / "results.json").read_text())
        history = saved["history"]
        assert [r["num_labelled"] for r in history] == [20, 30, 40]
        acquired = [i for r in history for i in r["acquired"]]
        assert len(acquired) == 20 == len(set(acquired))
        assert not set(acquired) & set(saved["state"]["validation"])
        assert set(acquired) <= set(saved["state"]["labelled"])
        assert all(0 <= r["metrics"]["test/accuracy"] <= 1 for r in history)
        assert history[1]["metrics"]["time/acquisition_seconds"] > 0
    before = (tmp_path / "batchbald_seed0" / "results.json").read_text()
    script.main(argv)  # finished runs: nothing is recomputed
    assert (tmp_path / "batchbald_seed0" / "results.json").read_text() == before
    assert (tmp_path / "test_accuracy.png").stat().st_size > 0
    assert "| batchbald | 1 |" in (tmp_path / "table.md").read_text()


def test_quartiles_of_threshold_marks(experiment_script):
    script = experiment_script("batchbald_mnist")
    history = [{"num_labelled": n, "metrics": {"test/accuracy": a}}
               for n, a in [(20, 0.5), (30, 0.91), (40, 0.96)]]
    assert script.labels_to_reach(history, 0.9) == 30
    assert script.labels_to_reach(history, 0.97) == np.inf
    # numpy's linear quantiles of [70, 90, 110, 130]: 85 / 100 / 115
    assert script.quartiles_text([70, 90, 110, 130], 300) == "85/100/115"
    assert script.quartiles_text([70, 90, np.inf], 300) == "80/90/>300"
