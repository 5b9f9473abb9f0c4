"""Compiled inference passes shared by evaluation and active learning.

One ``tf.function`` per model and output kind, with a fixed ``[None, *input_shape]`` float32
signature, cached for the model's lifetime: scoring a pool, a validation set and a test set
every active-learning round traces once as long as the model object is reused.
"""
from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from ddu_tf.models import features_and_logits

_FORWARD_CACHE = weakref.WeakKeyDictionary()


def compiled_forward(model: keras.Model, with_features: bool = True):
    """The compiled inference pass of ``model``: ``[b, *input_shape]`` -> logits or (features, logits).

    One ``tf.function`` with a ``[None, *input_shape]`` float32 signature per model and
    output kind, cached for the model's lifetime, so scoring a pool, a validation set and a
    test set every round traces once as long as the model object is reused (re-initialise
    weights instead of rebuilding it).
    """
    cache = _FORWARD_CACHE.setdefault(model, {})
    if with_features not in cache:
        net = features_and_logits(model) if with_features else model
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)

        @tf.function(input_signature=[spec])
        def forward(images):
            return net(images, training=False)

        cache[with_features] = forward
    return cache[with_features]


def predict_features_and_logits(model: keras.Model, images, *, batch_size: int = 512,
                                with_features: bool = True):
    """Run ``model`` in inference mode over ``images`` in chunks of ``batch_size``.

    Args:
      model: a functional model from :func:`ddu_tf.models.get_model` (layer ``"features"``).
      images: ``[N, *input_shape]`` float32.
      batch_size: chunk size (>= 1); bounds peak memory.
      with_features: also return the ``"features"`` output.

    Returns:
      ``(features [N, d] float32, logits [N, C] float32)`` if ``with_features`` else
      ``logits [N, C]``.
    """
    if int(batch_size) < 1:
        raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(f"Expected a non-empty batch of images [N, ...]. Received: images.shape={images.shape}")
    outputs = _compiled_chunked_forward(model, with_features, int(batch_size))(
        tf.constant(images))
    if with_features:
        return outputs[0].numpy(), outputs[1].numpy()
    return outputs.numpy()


def _compiled_chunked_forward(model, with_features, chunk):
    """One ``tf.function`` over the whole array: pad to a multiple of ``chunk``, run the
    chunks through ``tf.map_fn`` (memory bounded by one chunk's activations) and trim; the
    results reach the host once, not once per chunk. Cached per model, kind and chunk."""
    cache = _FORWARD_CACHE.setdefault(model, {})
    key = ("chunked", with_features, chunk)
    if key not in cache:
        net = features_and_logits(model) if with_features else model
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        out_specs = tuple(tf.TensorSpec([chunk, *t.shape[1:]], tf.float32)
                          for t in (net.outputs if with_features else net.outputs[:1]))

        @tf.function(input_signature=[spec])
        def forward(images):
            n = tf.shape(images)[0]
            n_chunks = (n + chunk - 1) // chunk
            padding = [[0, n_chunks * chunk - n]] + [[0, 0]] * (images.shape.rank - 1)
            chunks = tf.reshape(tf.pad(images, padding),
                                tf.concat([[n_chunks, chunk], tf.shape(images)[1:]], axis=0))

            def body(xb):
                out = net(xb, training=False)
                out = out if with_features else [out]
                return tuple(tf.cast(o, tf.float32) for o in out)

            outs = tf.map_fn(body, chunks, fn_output_signature=out_specs,
                             parallel_iterations=1)
            outs = [tf.reshape(o, tf.concat([[-1], tf.shape(o)[2:]], axis=0))[:n]
                    for o in outs]
            return tuple(outs) if with_features else outs[0]

        cache[key] = forward
    return cache[key]
