"""A CPU-scale residual network with DDU's switches (soft SN, ``-mod``) for 28x28 inputs.

    stem: conv ``width``@3x3 stride 1, BN, act               -> [batch, 28, 28, w]
    stages 1..3: one BasicBlock each, ``w``, ``2w``, ``4w`` planes, strides 1, 2, 2
    global average pool (layer "features")                  -> [batch, 4w]
    dense num_classes (layer "logits", never SN)            -> [batch, num_classes]

The blocks are those of :func:`ddu_tf.models.resnet.resnet18` (soft spectral normalisation on
the convolutions, LeakyReLU + average-pool shortcuts with ``mod``) at about 1/60 of its
compute with ``width=16``: what the CPU-scale DDU active-learning runs use to test DDU's
inductive bias (``results/ddu_active_learning``).
"""
import keras

from ddu_tf.models import blocks, resnet


def small_resnet(num_classes=10, input_shape=(28, 28, 1), spectral_normalization=False,
                 coeff=3.0, mod=False, power_iterations=1, width=16):
    """Build the small ResNet: ``[batch, *input_shape]`` -> ``[batch, num_classes]`` logits.

    Args:
        num_classes: number of logits.
        input_shape: ``(height, width, channels)`` of one image.
        spectral_normalization: DDU's soft SN on the convolutions (``coeff``,
            ``power_iterations``).
        coeff: SN bound (> 0).
        mod: LeakyReLU + average-pool shortcuts.
        power_iterations: SN power iterations per training step.
        width: channels of the first stage (>= 1); features are ``4 * width``-d.

    Returns:
        Functional ``keras.Model`` named ``"small_resnet"`` with a ``"features"`` layer.
    """
    sn_kwargs = blocks.sn_kwargs(num_classes, spectral_normalization, coeff, power_iterations)
    input_shape = blocks.image_shape(input_shape)
    if int(width) < 1:
        raise ValueError(f"Expected width >= 1. Received: width={width}")
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = blocks.conv(inputs, width, 3, 1, name="stem_conv", **sn_kwargs)
    x = blocks.activation(blocks.batch_norm(x, name="stem_bn"), mod=mod, name="stem_act")
    for stage, (planes, stride) in enumerate(((width, 1), (2 * width, 2), (4 * width, 2)), 1):
        x = resnet.basic_block(x, planes, stride, mod=mod, sn_kwargs=sn_kwargs,
                               name=f"stage{stage}_block1")
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, blocks.classifier(features, num_classes), name="small_resnet")
