"""Loading the experiment scripts in tests (the one place that does it).

The scripts in ``experiments/`` are not a package; :func:`load_experiment_script` executes
one as a fresh module, so a test's monkeypatching never leaks into another test. The
``experiment_script`` fixture (``tests/conftest.py``) returns this function; helpers that
run in a subprocess (``tests/two_replicas.py``) import it directly.
"""
import importlib.util
import os
import pathlib

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
