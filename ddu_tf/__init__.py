"""ddu_tf: Deep Deterministic Uncertainty and Bayesian deep active learning in TensorFlow/Keras.

Importing the package registers the TFDS builders (``mnist1d``, ``ambiguous_mnist``,
``dirty_mnist``) so that ``tfds.load(name)`` works, and the package's Keras objects so that
``keras.models.load_model`` reads the models it saves.
"""
__version__ = "0.1.0"

import tfds_builders  # noqa: E402,F401  (registers the TFDS builders)

# Register every custom Keras object of the package, so that `keras.models.load_model` can
# read any model saved by it (SN wrapper, the "-mod" shortcut, the torch-style optimisers,
# the DDU wrapper of any classifier).
from ddu_tf import ddu_classifier, layers, training  # noqa: E402,F401
from ddu_tf.models import blocks  # noqa: E402,F401
