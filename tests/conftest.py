"""Fixtures shared by the tests of the experiment scripts.

* ``experiment_script``: ``load(name)`` -> a fresh module of ``experiments/<name>.py``
  (:func:`experiment_scripts.load_experiment_script`);
* ``two_replicas``: runs a test helper in a fresh Python process whose CPU is split into 2
  logical devices before TensorFlow initialises (``tests/two_replicas.py``), so that
  ``--strategy mirrored`` really has 2 replicas; returns the helper's JSON-able result.
"""
import json
import subprocess
import sys

import pytest

from experiment_scripts import TESTS, load_experiment_script, subprocess_env

TIMEOUT = 600  # seconds per subprocess (the CI machine is shared and slow)


@pytest.fixture
def experiment_script():
    """``load(name)`` -> a fresh module of ``experiments/<name>.py``."""
    return load_experiment_script


@pytest.fixture
def two_replicas(tmp_path):
    """``run("test_module:function", *args)`` -> the helper's result, computed in a process
    with 2 logical CPUs (``get_strategy("mirrored")`` then has 2 replicas)."""
    def run(target, *args):
        out = tmp_path / f"two_replicas_{target.replace(':', '_')}.json"
        result = subprocess.run(
            [sys.executable, str(TESTS / "two_replicas.py"), target, json.dumps(args), str(out)],
            env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr[-4000:]
        return json.loads(out.read_text())
    return run
