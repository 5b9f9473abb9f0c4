"""Data: one loader from data-set names to ``tf.data`` pipelines.

    >>> from ddu_tf import data
    >>> ds = data.load("mnist1d", "train", batch_size=100)       # TFDS builder, fixed order

Other data-set modules plug into :func:`load` with :func:`register_source`.
"""
import functools

from ddu_tf.data import dirty_mnist, ood_sets
from ddu_tf.data.pipeline import (load, register_source, registered_sources, tfds_builder,
                                  unregister_source)

# MNIST / Fashion-MNIST from verified IDX files; Dirty- and Ambiguous-MNIST with the official
# Ambiguous-MNIST files or the regenerated (`generated`) set. All normalised with the MNIST
# statistics and with the fixed per-sample noise of the original loaders.
register_source("mnist", dirty_mnist.mnist_source)
register_source("fashion_mnist", dirty_mnist.fashion_mnist_source)
register_source("dirty_mnist", dirty_mnist.dirty_mnist_source)
register_source("ambiguous_mnist", dirty_mnist.ambiguous_mnist_source)
register_source("dirty_mnist_generated",
                functools.partial(dirty_mnist.dirty_mnist_source, variant="generated"))
register_source("dirty_mnist_generated_tiny",
                functools.partial(dirty_mnist.dirty_mnist_source, variant="generated_tiny"))
register_source("ambiguous_mnist_generated",
                functools.partial(dirty_mnist.ambiguous_mnist_source, variant="generated"))

__all__ = ["dirty_mnist", "ood_sets", "load", "register_source", "registered_sources",
           "tfds_builder", "unregister_source"]
