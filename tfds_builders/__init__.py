"""TFDS builders of ddu_tf. Importing this package registers them with TFDS.

    import tfds_builders  # or: import ddu_tf
    ds = tfds.load("mnist1d", split="train")
"""

# One import per builder package (each registers its `Builder` with TFDS on import).
from tfds_builders import mnist1d  # noqa: E402,F401
from tfds_builders import ambiguous_mnist  # noqa: E402,F401
from tfds_builders import dirty_mnist  # noqa: E402,F401
