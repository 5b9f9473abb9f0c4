"""experiments/dbal_authors_curves.py: reading the authors' curve files and the comparison,
on hand-made curves whose crossings are known."""
import json
import pickle

import numpy as np
import pytest


def _authors_dir(tmp_path, script):
    directory = tmp_path / "authors"
    directory.mkdir()
    acquired = np.arange(0, 990, 10)
    for name in script.AUTHORS_FILES:
        # accuracy 0.5 up to 140 acquired images, 0.92 from 150, 0.96 from 300
        accuracy = np.where(acquired >= 150, 0.92, 0.5)
        accuracy = np.where(acquired >= 300, 0.96, accuracy)
        np.save(directory / name, accuracy)
    return directory


def _our_run(result_dir, function, seed, errors):
    run = result_dir / "exp1" / f"{function}_seed{seed}"
    run.mkdir(parents=True)
    history = [{"num_acquired": 10 * i, "metrics": {"test/error": e}}
               for i, e in enumerate(errors)]
    (run / "results.json").write_text(json.dumps({"config": {"seed": seed},
                                                  "history": history}))


def test_comparison_of_hand_made_curves(experiment_script, tmp_path):
    script = experiment_script("dbal_authors_curves")
    authors = _authors_dir(tmp_path, script)
    results = tmp_path / "results"
    _our_run(results, "bald", 1, [0.5, 0.2, 0.09, 0.04])  # 10% at 20, 5% at 30
    _our_run(results, "bald", 2, [0.5, 0.08, 0.07, 0.06])  # 10% at 10, 5% never
    out = tmp_path / "out"
    table = script.main(["--authors-dir", str(authors), "--result-dir", str(results),
                         "--output-dir", str(out)])
    stats = table["bald"]["authors"]["Dropout_Bald.npy"]
    assert stats["to_10pct_error"] == 150 and stats["to_5pct_error"] == 300
    assert stats["accuracy_at"]["110"] == 0.5
    ours = table["bald"]["ours"]
    assert ours["to_10pct_error"] == {"mean": 15.0, "std": pytest.approx(np.std([20, 10],
                                                                                 ddof=1))}
    assert ours["to_5pct_error"] is None  # seed 2 never got there: no biased mean
    assert "ours" not in table["var_ratios"]
    saved = json.loads((out / "authors_curves.json").read_text())
    assert len(saved["curves"]["Dropout_VarRatio.npy"]["accuracy"]) == 99
    assert (out / "comparison.png").stat().st_size > 0
    readme = (out / "README.md").read_text()
    assert "| bald | ours, 2 seeds (mean +- std) | 15 +- 7 | not within 30 |" in readme
    # later runs reuse the imported curves: same table without the files
    before = (out / "comparison.json").read_text()
    for f in authors.iterdir():
        f.unlink()
    script.main(["--result-dir", str(results), "--output-dir", str(out)])
    assert (out / "comparison.json").read_text() == before


def test_bad_authors_files(experiment_script, tmp_path):
    script = experiment_script("dbal_authors_curves")
    with pytest.raises(FileNotFoundError, match="--authors-dir"):
        script.read_curve(str(tmp_path / "Dropout_Bald.npy"))
    hostile = tmp_path / "hostile.npy"
    np.save(hostile, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="without unpickling"):
        script.read_curve(str(hostile))
    pickled = tmp_path / "pickled.npy"
    pickled.write_bytes(pickle.dumps([0.5] * 99))
    with pytest.raises(ValueError, match="Expected a NumPy .npy"):
        script.read_curve(str(pickled))
    short = tmp_path / "short.npy"
    np.save(short, np.full(98, 0.5))
    with pytest.raises(ValueError, match="Expected 99 float accuracies"):
        script.read_curve(str(short))
    percent = tmp_path / "percent.npy"
    np.save(percent, np.full(99, 55.0))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        script.read_curve(str(percent))
    with pytest.raises(FileNotFoundError, match="authors_curves.json"):
        script.main(["--output-dir", str(tmp_path / "empty")])
