"""Data-set generation recipes that train models: they sit above `ddu_tf.models`.

* :mod:`ddu_tf.generation.ambiguous_mnist` -- Ambiguous-MNIST regenerated from MNIST (VAE
  mixtures filtered by a LeNet ensemble), streamed at scale and written to the file that
  `ddu_tf.io.ambiguous_mnist` reads.
"""
