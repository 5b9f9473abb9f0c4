"""The generic loop with toy callables: selection, atomic saves, resume after interruption."""
import json

import numpy as np
import pytest

from ddu_tf.active_learning.loop import ActiveLearningLoop, load_results
from ddu_tf.active_learning.pool import initial_state


class _Interrupted(Exception):
    pass


def _make_loop(path, calls, fail_at=None, num_rounds=4):
    """Scores = the index itself, so each round must take the largest subset indices."""
    def train_fn(labelled, round_index):
        calls.append(round_index)
        if round_index == fail_at:
            raise _Interrupted
        return {"n": len(labelled)}

    def evaluate_fn(model, round_index):
        return {"test/accuracy": model["n"] / 100.0}

    def score_fn(model, candidates, round_index):
        return candidates.astype(np.float64)

    state = initial_state(np.arange(200) % 10, num_initial=10, num_validation=10, seed=0)
    return ActiveLearningLoop(state, train_fn=train_fn, evaluate_fn=evaluate_fn,
                              score_fn=score_fn, acquisition_size=3, num_rounds=num_rounds,
                              result_path=path, pool_subset_size=20, config={"k": 3})


def test_rounds_select_top_scores_and_record_history(tmp_path):
    loop = _make_loop(str(tmp_path / "r.json"), [])
    first_subset = loop.state.pool_subset(0, 20)
    history = loop.run()
    assert [r["round"] for r in history] == [0, 1, 2, 3, 4]
    assert [r["num_labelled"] for r in history] == [10, 13, 16, 19, 22]
    assert [r["num_acquired"] for r in history] == [0, 3, 6, 9, 12]
    assert history[0]["acquired"] == sorted(first_subset.tolist())[-3:][::-1]
    assert history[-1]["acquired"] == []
    saved = load_results(str(tmp_path / "r.json"))
    assert saved["history"] == json.loads(json.dumps(history))
    assert len(saved["state"]["labelled"]) == 22


def test_interrupted_run_resumes_without_losing_rounds(tmp_path):
    path = str(tmp_path / "r.json")
    reference = _make_loop(str(tmp_path / "ref.json"), []).run()
    calls = []
    with pytest.raises(_Interrupted):
        _make_loop(path, calls, fail_at=2).run()  # rounds 0 and 1 finish, round 2 dies
    before = load_results(path)
    assert [r["round"] for r in before["history"]] == [0, 1]
    calls = []
    history = _make_loop(path, calls).run()
    assert calls == [2, 3, 4]  # nothing finished is recomputed
    assert history[:2] == before["history"]
    assert [r["acquired"] for r in history] == [r["acquired"] for r in reference]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp_")]


def test_finished_run_extends_to_more_rounds_as_if_run_at_once(tmp_path):
    reference = _make_loop(str(tmp_path / "ref.json"), [], num_rounds=4).run()
    path = str(tmp_path / "r.json")
    short = _make_loop(path, [], num_rounds=2).run()
    assert short[-1]["acquired"] == []  # the last round of a 2-round run only evaluates
    calls = []
    history = _make_loop(path, calls, num_rounds=4).run()
    assert calls == [2, 3, 4]  # round 2 is redone to acquire, rounds 0-1 are kept
    assert [r["acquired"] for r in history] == [r["acquired"] for r in reference]
    assert [r["num_labelled"] for r in history] == [r["num_labelled"] for r in reference]


def test_resume_with_other_config_is_refused(tmp_path):
    path = str(tmp_path / "r.json")
    _make_loop(path, []).run(max_rounds=1)
    loop = _make_loop(path, [])
    with pytest.raises(ValueError, match="different config"):
        ActiveLearningLoop(loop.state, train_fn=None, evaluate_fn=None, score_fn=None,
                           acquisition_size=3, num_rounds=4, result_path=path,
                           config={"k": 4})
    with pytest.raises(ValueError, match="acquisition_size"):
        ActiveLearningLoop(loop.state, train_fn=None, evaluate_fn=None, score_fn=None,
                           acquisition_size=0, num_rounds=4)


def test_legacy_config_keys_do_not_block_a_resume(tmp_path):
    """Keys an older version stored in the config (not identifying the run) are ignored on
    resume; any other difference, or a legacy key given a new value, still is refused."""
    path = str(tmp_path / "r.json")
    _make_loop(path, []).run(max_rounds=1)
    saved = load_results(path)
    saved["config"]["threshold"] = 1.0
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(saved, handle)
    state = _make_loop(None, []).state

    def loop(config, legacy):
        return ActiveLearningLoop(state, train_fn=None, evaluate_fn=None, score_fn=None,
                                  acquisition_size=3, num_rounds=4, result_path=path,
                                  config=config, legacy_config_keys=legacy)

    with pytest.raises(ValueError, match="different config"):
        loop({"k": 3}, ())
    assert loop({"k": 3}, ("threshold",)).next_round == 1
    with pytest.raises(ValueError, match="different config"):
        loop({"k": 4}, ("threshold",))
    with pytest.raises(ValueError, match="different config"):
        loop({"k": 3, "threshold": 2.0}, ("threshold",))


def test_a_write_removes_the_temporaries_of_killed_writers_only(tmp_path):
    """ddu_tf.io.atomic: a SIGKILLed writer leaves its temporary; the next write of the target
    on this host deletes it, but not a live process' (a concurrent writer) nor another
    host's, nor another target's."""
    import os
    import socket
    import subprocess
    import sys

    from ddu_tf.io.atomic import atomic_write, atomic_write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid, host = int(dead.stdout), socket.gethostname()
    target = tmp_path / "results.json"
    stale = tmp_path / f".results.json.{dead_pid}@{host}.0a1b2c3d.partial.json"
    live = tmp_path / f".results.json.{os.getppid()}@{host}.0a1b2c3d.partial.json"
    remote = tmp_path / f".results.json.{dead_pid}@other-{host}.0a1b2c3d.partial.json"
    other = tmp_path / f".table.json.{dead_pid}@{host}.0a1b2c3d.partial.json"
    for path in (stale, live, remote, other):
        path.write_text("{half")
    atomic_write_text(target, '{"round": 1}')
    assert json.loads(target.read_text()) == {"round": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, live.name, remote.name, other.name])

    def failing_writer(tmp):
        with open(tmp, "w") as handle:
            handle.write("{half")
        raise _Interrupted

    with pytest.raises(_Interrupted):  # a failing writer leaves the old file and no temporary
        atomic_write(target, failing_writer)
    assert json.loads(target.read_text()) == {"round": 1}
    assert len(list(tmp_path.iterdir())) == 4
