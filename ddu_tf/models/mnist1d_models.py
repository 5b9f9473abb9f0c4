"""The four MNIST-1D benchmark models of Greydanus (2020), in Keras 3.

Re-built from the reference's ``notebooks/models.py`` (PyTorch): every function returns a
functional ``keras.Model`` mapping signals ``[batch, length]`` (length 40) to logits
``[batch, num_classes]``, with the penultimate tensor produced by a layer named
``"features"``. Published test accuracies (regular / shuffled MNIST-1D): logistic 32 / 32 %,
MLP 68 / 68 %, CNN 94 / 56 %, GRU 91 / 57 %.

By default the weights are initialised like PyTorch's defaults (``torch_init=True``):
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for Dense/Conv1D kernels and biases, and
``U(-1/sqrt(hidden), 1/sqrt(hidden))`` for every GRU weight and bias, so that the reference
recipe (Adam 1e-2, batch 100, 6000 steps) sees the same starting scale. ``torch_init=False``
keeps Keras' defaults (Glorot / orthogonal, zero biases).

Example:
    >>> model = cnn1d()
    >>> model(np.zeros([8, 40], "float32")).shape      # (8, 10)
    >>> model.get_layer("features").output.shape       # (None, 125)
"""
from __future__ import annotations

import math
import numbers

import keras

__all__ = ["logistic", "mlp", "cnn1d", "gru"]


def _check(num_classes, input_shape, **sizes):
    if not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError("Expected num_classes to be an integer >= 1. "
                         f"Received: num_classes={num_classes!r}")
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if (shape is None or len(shape) != 1 or not isinstance(shape[0], numbers.Integral)
            or shape[0] < 1):
        raise ValueError("Expected input_shape to be a 1-D shape (length,) with length >= 1. "
                         f"Received: input_shape={input_shape!r}")
    for name, value in sizes.items():
        if not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"Expected {name} to be an integer >= 1. Received: {name}={value!r}")
    return shape


def _uniform(fan_in, torch_init):
    """PyTorch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, or None for Keras' default."""
    if not torch_init:
        return None
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def _dense(units, fan_in, torch_init, **kwargs):
    init = _uniform(fan_in, torch_init)
    if init is None:
        return keras.layers.Dense(units, **kwargs)
    return keras.layers.Dense(units, kernel_initializer=init,
                              bias_initializer=_uniform(fan_in, True), **kwargs)


def logistic(num_classes: int = 10, input_shape=(40,), *, torch_init: bool = True,
             name: str = "logistic") -> keras.Model:
    """Multinomial logistic regression: ``logits = x W + b`` (reference ``LinearBase``).

    Args:
        num_classes: number of logits.
        input_shape: ``(length,)``; 40 for MNIST-1D.
        torch_init: PyTorch-default initialisation (see module docstring).
        name: model name.

    Returns:
        ``keras.Model`` ``[batch, length] -> [batch, num_classes]``; ``"features"`` is the
        input itself (``[batch, length]``).
    """
    (length,) = _check(num_classes, input_shape)
    inputs = keras.Input((length,), name="signal")
    features = keras.layers.Identity(name="features")(inputs)
    logits = _dense(num_classes, length, torch_init, name="logits")(features)
    return keras.Model(inputs, logits, name=name)


def mlp(num_classes: int = 10, input_shape=(40,), *, hidden_size: int = 100,
        torch_init: bool = True, name: str = "mlp") -> keras.Model:
    """MLP 40-100-100-10 with a residual middle layer (reference ``MLPBase``).

    ``h1 = relu(x W1 + b1)``, ``h2 = h1 + relu(h1 W2 + b2)``, ``logits = h2 W3 + b3``.

    Args:
        num_classes: number of logits.
        input_shape: ``(length,)``; 40 for MNIST-1D.
        hidden_size: width of both hidden layers (100).
        torch_init: PyTorch-default initialisation.
        name: model name.

    Returns:
        ``keras.Model`` ``[batch, length] -> [batch, num_classes]``; ``"features"`` is ``h2``
        ``[batch, hidden_size]``.
    """
    (length,) = _check(num_classes, input_shape, hidden_size=hidden_size)
    inputs = keras.Input((length,), name="signal")
    h1 = _dense(hidden_size, length, torch_init, activation="relu", name="dense1")(inputs)
    r = _dense(hidden_size, hidden_size, torch_init, activation="relu", name="dense2")(h1)
    h2 = keras.layers.Add(name="features")([h1, r])
    logits = _dense(num_classes, hidden_size, torch_init, name="logits")(h2)
    return keras.Model(inputs, logits, name=name)


def _conv(channels, kernel_size, in_channels, torch_init, name):
    fan_in = in_channels * kernel_size
    init = _uniform(fan_in, torch_init)
    kwargs = {} if init is None else {"kernel_initializer": init,
                                      "bias_initializer": _uniform(fan_in, True)}
    return keras.layers.Conv1D(channels, kernel_size, strides=2, padding="valid",
                               activation="relu", name=name, **kwargs)


def cnn1d(num_classes: int = 10, input_shape=(40,), *, channels: int = 25,
          torch_init: bool = True, name: str = "cnn1d") -> keras.Model:
    """Three strided 1-D convolutions and a linear head (reference ``ConvBase``).

    PyTorch ``Conv1d(1, 25, 5, stride=2, padding=1)``, then two ``Conv1d(25, 25, 3,
    stride=2, padding=1)``, ReLU after each: zero-padding by one on both sides followed by a
    'valid' convolution gives the same lengths, ``L -> floor((L + 2 - k) / 2) + 1``:
    40 -> 19 -> 10 -> 5, flattened to 5 * 25 = 125 features, then ``Linear(125, 10)``.
    (Keras flattens position-major, PyTorch channel-major: a fixed permutation of the
    features, immaterial when training from scratch.)

    Args:
        num_classes: number of logits.
        input_shape: ``(length,)``; 40 for MNIST-1D.
        channels: channels of every convolution (25).
        torch_init: PyTorch-default initialisation.
        name: model name.

    Returns:
        ``keras.Model`` ``[batch, length] -> [batch, num_classes]``; ``"features"`` is the
        flattened last convolution, ``[batch, 5 * channels]`` for length 40.

    Raises:
        ValueError: for invalid sizes, or a length too short for three convolutions (< 7).
    """
    (length,) = _check(num_classes, input_shape, channels=channels)
    if length < 7:
        raise ValueError("Expected input length >= 7 for three strided convolutions. "
                         f"Received: input_shape={tuple(input_shape)!r}")
    inputs = keras.Input((length,), name="signal")
    h = keras.layers.Reshape((length, 1), name="add_channel")(inputs)
    in_channels = 1
    for i, kernel_size in enumerate((5, 3, 3), start=1):
        h = keras.layers.ZeroPadding1D(1, name=f"pad{i}")(h)
        h = _conv(channels, kernel_size, in_channels, torch_init, name=f"conv{i}")(h)
        in_channels = channels
    features = keras.layers.Flatten(name="features")(h)
    logits = _dense(num_classes, features.shape[-1], torch_init, name="logits")(features)
    return keras.Model(inputs, logits, name=name)


def gru(num_classes: int = 10, input_shape=(40,), *, hidden_size: int = 6,
        bidirectional: bool = True, torch_init: bool = True, name: str = "gru") -> keras.Model:
    """(Bi)directional GRU over the 40 positions, all outputs flattened (reference ``GRUBase``).

    Each position is a 1-D input; the GRU (PyTorch semantics: reset gate applied after the
    recurrent matrix, ``reset_after=True``) returns ``[batch, length, 2 * hidden_size]``,
    flattened to ``length * 2 * hidden_size`` = 480 features, then a linear head.

    Args:
        num_classes: number of logits.
        input_shape: ``(length,)``; 40 for MNIST-1D.
        hidden_size: GRU units per direction (6).
        bidirectional: forward and backward GRUs concatenated (True in the reference).
        torch_init: PyTorch-default initialisation (every GRU weight ``U(+-1/sqrt(hidden))``).
        name: model name.

    Returns:
        ``keras.Model`` ``[batch, length] -> [batch, num_classes]``; ``"features"`` is
        ``[batch, length * hidden_size * (2 if bidirectional else 1)]``.
    """
    (length,) = _check(num_classes, input_shape, hidden_size=hidden_size)
    inputs = keras.Input((length,), name="signal")
    h = keras.layers.Reshape((length, 1), name="add_channel")(inputs)
    init = _uniform(hidden_size, torch_init)
    kwargs = {} if init is None else {"kernel_initializer": init, "recurrent_initializer": init,
                                      "bias_initializer": init}
    cell = keras.layers.GRU(hidden_size, return_sequences=True, reset_after=True, name="gru",
                            **kwargs)
    if bidirectional:
        cell = keras.layers.Bidirectional(cell, merge_mode="concat", name="bigru")
    h = cell(h)
    features = keras.layers.Flatten(name="features")(h)
    logits = _dense(num_classes, features.shape[-1], torch_init, name="logits")(features)
    return keras.Model(inputs, logits, name=name)
