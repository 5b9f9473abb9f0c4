"""Readers and generators with no TensorFlow model code: the bottom layer of the package.

* :mod:`ddu_tf.io.mnist_idx` -- IDX files of MNIST / Fashion-MNIST (verified by SHA-256),
  the manual directory (``$DDU_TF_DATA_DIR``) and downloads;
* :mod:`ddu_tf.io.torch_pickle` -- torch ``.pt`` tensors without torch and without executing
  pickled code;
* :mod:`ddu_tf.io.mnist1d` -- the MNIST-1D generator, bit-exact with the reference package.

``tfds_builders`` import this package only; ``ddu_tf.data`` (pipelines) sits above both.
"""
