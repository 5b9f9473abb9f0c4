"""LeNet-5 as used by DDU (omegafragger/DDU ``net/lenet.py``).

Layers (for a 28x28x1 MNIST input)::

    conv 6@5x5 valid, relu, maxpool 2   -> [batch, 12, 12, 6]
    conv 16@5x5 valid, relu, maxpool 2  -> [batch, 4, 4, 16]
    flatten                             -> [batch, 256]
    dense 120, relu                     -> [batch, 120]
    dense 84, relu  (layer "features")  -> [batch, 84]
    dense num_classes                   -> [batch, num_classes] logits

44,426 trainable parameters for MNIST with 10 classes, as in the PyTorch original.
The original never applies spectral normalisation to LeNet; neither does this module.
Weights use PyTorch's default initialisation (the original relies on it).
"""
import keras

from ddu_tf.models.blocks import (classifier, image_shape, torch_bias_initializer,
                                  torch_kernel_initializer)


def _conv(filters, in_channels, name):
    return keras.layers.Conv2D(filters, 5, padding="valid", activation="relu",
                               kernel_initializer=torch_kernel_initializer(),
                               bias_initializer=torch_bias_initializer(in_channels * 25), name=name)


def _dense(units, fan_in, name):
    return keras.layers.Dense(units, activation="relu", kernel_initializer=torch_kernel_initializer(),
                              bias_initializer=torch_bias_initializer(fan_in), name=name)


def lenet(num_classes=10, input_shape=(28, 28, 1), spectral_normalization=False,
          mod=False, **kwargs):
    """Build the DDU LeNet.

    Args:
        num_classes: number of output logits (> 0).
        input_shape: ``(height, width, channels)`` of one image, e.g. ``(28, 28, 1)``.
        spectral_normalization: must be False: LeNet has no SN variant in DDU.
        mod: must be False: LeNet has no residual connections to modify.
        **kwargs: accepted for a uniform ``get_model`` signature (``coeff``,
            ``power_iterations``) and ignored.

    Returns:
        A functional ``keras.Model`` mapping ``[batch, *input_shape]`` images to
        ``[batch, num_classes]`` logits; the 84-d penultimate tensor is the output of
        the layer named ``"features"``.

    Example:
        >>> model = lenet(num_classes=10, input_shape=(28, 28, 1))
        >>> model.output_shape
        (None, 10)
    """
    if spectral_normalization:
        raise ValueError(
            "LeNet has no spectral-normalised variant in DDU. Received: "
            "spectral_normalization=True. Use model='resnet18' or 'wide_resnet' for SN.")
    if mod:
        raise ValueError(
            "LeNet has no residual connections, so the -mod variant does not exist. "
            "Received: mod=True.")
    if int(num_classes) < 1:
        raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes}")
    input_shape = image_shape(input_shape)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = _conv(6, int(input_shape[-1]), "conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = _conv(16, 6, "conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = _dense(120, int(x.shape[-1]), "fc1")(x)
    features = _dense(84, 120, "features")(x)
    logits = classifier(features, num_classes)
    return keras.Model(inputs, logits, name="lenet")
