"""Test-wide setup: offline data dir, a private TFDS data dir, quiet and deterministic TF."""
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The development and CI machines have no internet: point the package's manual-dir
# variable at the shared reference data when it sits beside the checkout.
_shared = pathlib.Path(__file__).resolve().parent.parent / "shared" / "data"
if "DDU_TF_DATA_DIR" not in os.environ and _shared.is_dir():
    os.environ["DDU_TF_DATA_DIR"] = str(_shared)
# Never write into the user's ~/tensorflow_datasets from tests.
os.environ.setdefault("TFDS_DATA_DIR", tempfile.mkdtemp(prefix="ddu_tf_tfds_"))
