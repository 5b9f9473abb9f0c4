"""VGG-16 with BatchNorm for 28x28 (MNIST) and 32x32 (CIFAR) inputs, as in DDU ``net/vgg.py``.

Each conv entry is ``conv 3x3 (no bias, PyTorch padding 1) -> BN -> ReLU`` (LeakyReLU(0.01)
with ``mod``); ``"M"`` is a 2x2/stride-2 max-pool. The original uses a different layer list
for MNIST (its first max-pool is dropped so 28x28 ends at 1x1):

    CIFAR (32x32): 64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M
    MNIST (28x28): 64 64 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M

Both end in a ``[batch, 1, 1, 512]`` map, flattened by the layer ``"features"`` to
``[batch, 512]``, followed by a dense classifier (never SN). BatchNorm has PyTorch's
defaults (Keras momentum 0.9, epsilon 1e-5). VGG has no residual connections, so ``mod`` only
changes the activation. Trainable parameters equal PyTorch's (CIFAR-10: 14,724,042; MNIST: 14,722,890).
"""
import keras

from ddu_tf.models import blocks

VGG16_CIFAR = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG16_MNIST = (64, 64, 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16(num_classes=10, input_shape=(28, 28, 1), spectral_normalization=False, coeff=3.0,
          mod=False, power_iterations=1, **kwargs):
    """VGG-16-BN mapping images to logits; 512-d features.

    The layer list is chosen like the original's ``mnist`` flag: the MNIST list when the
    input has a single channel, the CIFAR list otherwise.

    Args:
        num_classes: number of logits.
        input_shape: ``(H, W, C)``: ``(28, 28, 1)`` or ``(32, 32, 3)`` (any size whose final
            map is 1x1 gives 512-d features).
        spectral_normalization: operator soft SN on every 3x3 convolution.
        coeff: SN bound (default 3.0).
        mod: LeakyReLU(0.01) instead of ReLU.
        power_iterations: SN power iterations per training step.
        **kwargs: ignored (uniform ``get_model`` signature).

    Returns:
        Functional ``keras.Model``: ``[batch, H, W, C]`` -> ``[batch, num_classes]``; the
        layer ``"features"`` outputs ``[batch, 512]`` for 28x28 and 32x32 inputs.
    """
    sn_kwargs = blocks.sn_kwargs(num_classes, spectral_normalization, coeff, power_iterations)
    input_shape = blocks.image_shape(input_shape)
    cfg = VGG16_MNIST if input_shape[-1] == 1 else VGG16_CIFAR
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    conv_index = pool_index = 0
    for entry in cfg:
        if entry == "M":
            pool_index += 1
            x = keras.layers.MaxPooling2D(2, strides=2, name=f"pool{pool_index}")(x)
            continue
        conv_index += 1
        x = blocks.conv(x, entry, 3, 1, name=f"conv{conv_index}", **sn_kwargs)
        x = blocks.batch_norm(x, name=f"bn{conv_index}")
        x = blocks.activation(x, mod=mod, name=f"act{conv_index}")
    features = keras.layers.Flatten(name="features")(x)
    logits = blocks.classifier(features, num_classes)
    return keras.Model(inputs, logits, name="vgg16")
