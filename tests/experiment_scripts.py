"""Loading and running the experiment scripts in tests (the one place that does it).

The scripts in ``experiments/`` are not a package; :func:`load_experiment_script` executes
one as a fresh module, so a test's monkeypatching never leaks into another test. The
``experiment_script`` fixture (``tests/conftest.py``) returns this function; helpers that
run in a subprocess (``tests/two_replicas.py``) import it directly.

Kill-and-resume tests: :func:`start_and_kill` runs a command in a subprocess and ``SIGKILL``s it
a seeded random delay after a progress marker appears (e.g. the first checkpoint file);
:func:`leftover_temporaries` lists the temporary / partial files a run must not leave behind;
:func:`without_timings` drops the wall-time entries before comparing results.
"""
import importlib.util
import os
import pathlib
import random
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTS = pathlib.Path(__file__).resolve().parent


def load_experiment_script(name):
    """``experiments/<name>.py`` executed as a new module named ``experiments_<name>``."""
    spec = importlib.util.spec_from_file_location(f"experiments_{name}",
                                                  ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def subprocess_env(**extra):
    """The environment of a test subprocess: this checkout and tests/ on the path, quiet TF."""
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra)
    return env


def start_and_kill(args, *, ready, seed, max_delay, log_path, timeout=600, env=None):
    """Run ``python *args`` and ``SIGKILL`` it ``uniform(0, max_delay)`` seconds (seeded) after
    ``ready()`` first holds.

    Args:
        args: the command after the interpreter (script path or ``-c`` and its flags).
        ready: zero-argument callable, polled every 20 ms: the progress marker (e.g. "the first
            epoch's backup exists"), so the kill lands after real work and before the end.
        seed: seed of the delay (a test is reproducible, its kill point varies with the seed).
        max_delay: upper end of the delay (s).
        log_path: file receiving the process' stdout and stderr.
        timeout: seconds to wait for the marker.
        env: environment (default :func:`subprocess_env`).

    Returns:
        True if the process was killed, False if it had finished before the delay was over
        (the caller's checks then hold for a complete run). A process that fails, or ends
        before the marker, fails the test with its log.
    """
    delay = random.Random(seed).uniform(0.0, max_delay)
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, *map(str, args)], stdout=log,
                                   stderr=subprocess.STDOUT, env=env or subprocess_env(),
                                   cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                what = (f"ended (code {process.returncode})" if process.poll() is not None
                        else f"did not reach it within {timeout} s (machine overloaded?)")
                raise AssertionError(f"the process {what} before its progress marker; its log: "
                                     f"{pathlib.Path(log_path).read_text()[-3000:]}")
            time.sleep(0.02)
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.kill()  # SIGKILL: no cleanup handler runs
            process.wait()
            return True
        assert process.returncode == 0, pathlib.Path(log_path).read_text()[-3000:]
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


TEMPORARY = re.compile(r"(\.partial|\.tmp|\.part$|^\.tmp_|^incomplete\.)")
"""Names of temporary or partial files and directories (ours, Keras', TFDS' ``incomplete.*``)."""


def leftover_temporaries(root):
    """Every file or directory under ``root`` whose name marks it temporary or partial."""
    return sorted(str(p) for p in pathlib.Path(root).rglob("*") if TEMPORARY.search(p.name))


TIMING_KEY = re.compile(r"seconds|minutes|timings")


def without_timings(value):
    """``value`` (parsed JSON) without the entries whose key names a wall time."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not TIMING_KEY.search(str(k))}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value
