"""ddu_tf: Deep Deterministic Uncertainty and Bayesian deep active learning in TensorFlow/Keras.

Importing the package registers the TFDS builders (``mnist1d``, ``ambiguous_mnist``,
``dirty_mnist``) so that ``tfds.load(name)`` works.
"""
__version__ = "0.1.0"

import tfds_builders  # noqa: E402,F401  (registers the TFDS builders)
