"""Running an experiment script's ``main(argv)`` as a command: bad input exits with one line.

Every script in ``experiments/`` ends with

    if __name__ == "__main__":
        cli.run(main)

The package reports bad input (unknown names, flag combinations that cannot work, missing or
corrupt data files, NaN features, too small pools, ...) as ``ValueError`` or
``FileNotFoundError`` subclasses whose message names what was expected, what was received
and what to do. :func:`run` prints that message as ``<prog>: error: <message>`` on stderr and
exits with status 2 -- argparse's convention for bad flags -- instead of a Python traceback.
A ``ValueError`` counts as bad input only when it is raised in this project's own code (the
``ddu_tf`` and ``tfds_builders`` packages, or the directory of the script defining ``main``):
one raised inside NumPy, TensorFlow or Keras from our call is a bug of ours and, like any
other exception, keeps its traceback. ``DDU_TF_TRACEBACK=1`` keeps the traceback for all of them.
"""
import os
import pickle
import sys
import traceback

import tensorflow as tf

__all__ = ["USER_ERRORS", "TRACEBACK_ENV_VAR", "error_message", "is_bad_input", "run"]

USER_ERRORS = (ValueError, FileNotFoundError, pickle.UnpicklingError, tf.errors.DataLossError)
"""Exceptions that report bad input: printed as one line by :func:`run`. ``ValueError`` covers
the package's ``IdxFormatError``, ``IdxChecksumError``, ``TorchFileFormatError``, ...;
``FileNotFoundError`` its ``DataNotFoundError``; ``pickle.UnpicklingError`` its
``UnsafePickleError``; ``tf.errors.DataLossError`` a corrupt record met while reading."""

TRACEBACK_ENV_VAR = "DDU_TF_TRACEBACK"
"""Set to ``1`` to get the full traceback of bad-input errors too (debugging)."""


def _project_dirs(main=None):
    files = [__file__]
    builders = sys.modules.get("tfds_builders")
    if builders is not None and getattr(builders, "__file__", None):
        files.append(builders.__file__)
    code = getattr(main, "__code__", None)
    if code is not None:
        files.append(code.co_filename)
    return [os.path.join(os.path.dirname(os.path.abspath(f)), "") for f in files]


def is_bad_input(error: BaseException, main=None) -> bool:
    """True for the errors :func:`run` prints as one line: a :data:`USER_ERRORS` instance,
    and for a plain ``ValueError`` only when the frame that raised it is the project's code
    (``ddu_tf``, ``tfds_builders``, or the directory of the script defining ``main``), not
    NumPy's, TensorFlow's or Keras' internals, where it means a bug of ours."""
    if not isinstance(error, USER_ERRORS):
        return False
    if not isinstance(error, ValueError) or isinstance(error, pickle.UnpicklingError):
        return True
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return True
    raised_in = os.path.abspath(frames[-1].filename)
    return any(raised_in.startswith(d) for d in _project_dirs(main))


def error_message(error: BaseException) -> str:
    """The one-line (possibly multi-sentence) message :func:`run` prints for ``error``."""
    if isinstance(error, tf.errors.DataLossError):
        # TF's text names the op and an offset, not the file: say what to do.
        return (f"Expected intact data files. Received a corrupt record while reading "
                f"({error.message.strip()}). A prepared TFDS directory is damaged: delete the "
                "data set's directory under the TFDS data_dir (--data-dir / --dataset-root, "
                "else $TFDS_DATA_DIR or ~/tensorflow_datasets) and run again to rebuild it.")
    return str(error).strip() or type(error).__name__


def run(main, argv=None):
    """``main(argv)``; a bad-input error (:func:`is_bad_input`) exits with status 2 and the
    message on stderr, without a traceback.

    Args:
        main: the script's ``main(argv=None)``.
        argv: arguments without the program name; None reads ``sys.argv[1:]``.

    Returns:
        What ``main`` returns.

    Raises:
        SystemExit: status 2 after a bad-input error (and argparse's own exits).
    """
    try:
        return main(sys.argv[1:] if argv is None else list(argv))
    except USER_ERRORS as error:
        if os.environ.get(TRACEBACK_ENV_VAR, "") not in ("", "0") or not is_bad_input(error, main):
            raise
        prog = os.path.basename(sys.argv[0]) or "ddu_tf"
        print(f"{prog}: error: {error_message(error)}", file=sys.stderr)
        raise SystemExit(2) from None
