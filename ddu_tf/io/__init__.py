"""Readers and generators with no TensorFlow model code: the bottom layer of the package.

* :mod:`ddu_tf.io.mnist_idx` -- IDX files of MNIST / Fashion-MNIST (verified by SHA-256),
  the manual directory (``$DDU_TF_DATA_DIR``) and downloads;
* :mod:`ddu_tf.io.safe_pickle` -- restricted, size-bounded unpickling of foreign files (plain
  data and numeric NumPy arrays; the base of the ``.pt`` reader);
* :mod:`ddu_tf.io.torch_pickle` -- torch ``.pt`` tensors without torch, without executing
  pickled code, and with every declared size checked before reading;
* :mod:`ddu_tf.io.mnist1d` -- the MNIST-1D generator, bit-exact with the reference package,
  its transformation steps, and a reader of the published ``mnist1d_data.pkl``;
* :mod:`ddu_tf.io.atomic` -- the package's one all-or-nothing file writer (temporary file +
  ``os.replace``; temporaries of killed writers are removed by the next write).

``tfds_builders`` import this package only; ``ddu_tf.data`` (pipelines) sits above both.
"""
