"""Test-wide setup: offline data dir, a private TFDS data dir, quiet and deterministic TF.

Real data: tests that read the official MNIST / Fashion-MNIST files carry the marker
``real_data`` (module-level ``pytestmark`` or a decorator). They run when ``$DDU_TF_DATA_DIR``
holds the files -- on the development and CI machines it is pointed at ``../shared/data`` when
that folder sits beside the checkout -- and are skipped, with the reason, otherwise (a fresh
clone with no variable set and no network). ``DDU_TF_DATA_DIR=`` (set but empty) forces the
no-data mode, which ``.ci/run`` uses to check that collection never needs the files.
"""
import atexit
import os
import pathlib
import shutil
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The development and CI machines have no internet: point the package's manual-dir
# variable at the shared reference data when it sits beside the checkout.
_shared = pathlib.Path(__file__).resolve().parent.parent / "shared" / "data"
if "DDU_TF_DATA_DIR" not in os.environ and _shared.is_dir():
    os.environ["DDU_TF_DATA_DIR"] = str(_shared)
# Never write into the user's ~/tensorflow_datasets from tests: a private TFDS data dir,
# removed when the test process exits (a caller's own TFDS_DATA_DIR is left alone).
if "TFDS_DATA_DIR" not in os.environ:
    _tfds_dir = tempfile.mkdtemp(prefix="ddu_tf_tfds_")
    os.environ["TFDS_DATA_DIR"] = _tfds_dir
    atexit.register(shutil.rmtree, _tfds_dir, ignore_errors=True)

_IDX_NAMES = [f"{stem}-ubyte.gz" for stem in ("train-images-idx3", "train-labels-idx1",
                                              "t10k-images-idx3", "t10k-labels-idx1")]
REAL_DATA_REASON = (
    "needs the official MNIST and Fashion-MNIST files: set DDU_TF_DATA_DIR=<dir> with "
    "<dir>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz and the same four names under "
    "<dir>/fashion_mnist/ (tests never download)")


def real_data_dir():
    """``$DDU_TF_DATA_DIR`` as a path when it holds all eight IDX files, else None."""
    root = os.environ.get("DDU_TF_DATA_DIR")
    if not root:
        return None
    root = pathlib.Path(root)
    complete = all((root / name / f).is_file()
                   for name in ("mnist", "fashion_mnist") for f in _IDX_NAMES)
    return root if complete else None


def pytest_collection_modifyitems(config, items):
    if real_data_dir() is not None:
        return
    skip = pytest.mark.skip(reason=REAL_DATA_REASON)
    for item in items:
        if "real_data" in item.keywords or "mnist_data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist_data_dir():
    """The directory holding ``mnist/`` and ``fashion_mnist/``; a test using this fixture is
    skipped (at collection) when the files are absent, as if marked ``real_data``."""
    return real_data_dir()
