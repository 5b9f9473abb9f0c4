"""Bayesian CNN of Gal, Islam & Ghahramani (ICML 2017), the Keras model of their code.

Layers (28x28x1 MNIST input)::

    conv 32@4x4 valid, relu            -> [batch, 25, 25, 32]
    conv 32@4x4 valid, relu            -> [batch, 22, 22, 32]
    maxpool 2x2                        -> [batch, 11, 11, 32]
    dropout 0.25                       (MC dropout: the first stochastic layer)
    flatten                            -> [batch, 3872]
    dense 128, relu  (layer "features") -> [batch, 128]
    dropout 0.5
    dense num_classes                  -> [batch, num_classes] logits

``dropout=False`` gives the deterministic twin (no dropout layers) of Experiment 2.
``kernel_size``, ``pool_size`` and ``dense_units`` default to the paper's 4 / 2 / 128; the
authors' Keras script (``Dropout_Bald_Q10_N1000_Paper.py``) uses 3 / 5 / 256
(``AUTHORS_CODE_SHAPE``: conv 32@3x3, conv 32@3x3 -> [batch, 24, 24, 32], maxpool 5 ->
[batch, 4, 4, 32], flatten 512, dense 256).
Weight decay goes on the first dense layer only by default, as in the authors' Keras code
(``AUTHORS_DECAY_LAYERS``); ``decay_layers=ALL_DECAY_LAYERS`` puts it on every kernel.
"""
import keras

from ddu_tf.models.blocks import image_shape

AUTHORS_DECAY_LAYERS = ("features",)
ALL_DECAY_LAYERS = ("conv1", "conv2", "features", "logits")
PAPER_SHAPE = {"kernel_size": 4, "pool_size": 2, "dense_units": 128}
AUTHORS_CODE_SHAPE = {"kernel_size": 3, "pool_size": 5, "dense_units": 256}


def bayesian_cnn(num_classes=10, input_shape=(28, 28, 1), dropout=True, weight_decay=0.0,
                 decay_layers=AUTHORS_DECAY_LAYERS, kernel_size=4, pool_size=2, dense_units=128,
                **kwargs):
    """Build the Bayesian CNN (MC-dropout CNN).

    Args:
        num_classes: number of output logits (>= 1).
        input_shape: ``(height, width, channels)``, e.g. ``(28, 28, 1)``.
        dropout: keep the two dropout layers (True) or build the deterministic twin.
        weight_decay: L2 coefficient ``lambda`` (>= 0) added as ``lambda * sum(w^2)``
            per kernel of ``decay_layers``; 0 disables it.
        decay_layers: names of the layers with the L2 penalty, a subset of
            ``ALL_DECAY_LAYERS``.
        kernel_size: side of both (valid) convolution kernels, >= 1.
        pool_size: side of the max-pooling window (stride = window), >= 1.
        dense_units: width of the ``"features"`` dense layer, >= 1.
        **kwargs: accepted for a uniform ``get_model`` signature (``spectral_normalization``
            must be falsy; ``coeff``, ``mod`` and others are ignored).

    Returns:
        Functional ``keras.Model`` ``[batch, *input_shape] -> [batch, num_classes]`` logits;
        the ``dense_units``-d post-ReLU penultimate tensor is the output of the layer
        ``"features"``.

    Example:
        >>> model = bayesian_cnn()
        >>> model.output_shape
        (None, 10)
    """
    if kwargs.get("spectral_normalization"):
        raise ValueError("The Bayesian CNN has no spectral-normalised variant. Received: "
                         "spectral_normalization=True.")
    if int(num_classes) < 1:
        raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes}")
    input_shape = image_shape(input_shape)
    if weight_decay < 0:
        raise ValueError(f"Expected weight_decay >= 0. Received: weight_decay={weight_decay}")
    shape = {"kernel_size": kernel_size, "pool_size": pool_size, "dense_units": dense_units}
    if any(int(v) < 1 for v in shape.values()):
        raise ValueError(f"Expected kernel_size, pool_size, dense_units >= 1. Received: {shape}")
    unknown = sorted(set(decay_layers) - set(ALL_DECAY_LAYERS))
    if unknown:
        raise ValueError(f"Expected decay_layers among {ALL_DECAY_LAYERS}. Received: {unknown}")

    def regularizer(name):
        if weight_decay > 0 and name in decay_layers:
            return keras.regularizers.L2(weight_decay)
        return None

    inputs = keras.Input(tuple(input_shape), name="images")
    x = keras.layers.Conv2D(32, int(kernel_size), activation="relu",
                            kernel_regularizer=regularizer("conv1"),
                            name="conv1")(inputs)
    x = keras.layers.Conv2D(32, int(kernel_size), activation="relu",
                            kernel_regularizer=regularizer("conv2"),
                            name="conv2")(x)
    x = keras.layers.MaxPooling2D(int(pool_size), name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(0.25, name="dropout1")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(int(dense_units), activation="relu",
                           kernel_regularizer=regularizer("features"),
                           name="features")(x)
    if dropout:
        x = keras.layers.Dropout(0.5, name="dropout2")(x)
    logits = keras.layers.Dense(int(num_classes), kernel_regularizer=regularizer("logits"),
                                name="logits")(x)
    name = "bayesian_cnn" if dropout else "deterministic_cnn"
    return keras.Model(inputs, logits, name=name)
