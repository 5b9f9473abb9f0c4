"""Data: MNIST-1D generation and one loader from data-set names to ``tf.data`` pipelines.

    >>> from ddu_tf import data
    >>> ds = data.load("mnist1d", "train", batch_size=100)       # TFDS builder, fixed order
    >>> arrays = data.mnist1d.make_dataset()                     # reference-exact float64

Other data-set modules plug into :func:`load` with :func:`register_source`.
"""
from ddu_tf.data import mnist1d
from ddu_tf.data.pipeline import load, register_source, registered_sources, unregister_source

__all__ = ["load", "mnist1d", "register_source", "registered_sources", "unregister_source"]
