"""A small 1-D residual CNN for MNIST-1D with DDU's ``-sn`` / ``-mod`` switches.

Not in the DDU paper: it is the MNIST-1D counterpart of the ResNet-18 used there, built
from the same :func:`~ddu_tf.models.resnet.basic_block` with ``Conv1D`` layers:

    input [batch, 40] (or [batch, 40, 1]) -> reshape          -> [batch, 40, 1]
    stem: conv1d 32@3, BN, act                               -> [batch, 40, 32]
    BasicBlock 32, stride 1                                  -> [batch, 40, 32]
    BasicBlock 64, stride 2                                  -> [batch, 20, 64]
    BasicBlock 64, stride 2                                  -> [batch, 10, 64]
    global average pool (layer "features")                   -> [batch, 64]
    [dropout, only with dropout_rate > 0]                    -> [batch, 64]
    dense num_classes (layer "logits", never SN)             -> [batch, num_classes]

With ``spectral_normalization`` every Conv1D is wrapped in
:class:`ddu_tf.layers.SpectralNormalization` (operator SN for k=3, matrix SN for the 1x1
shortcut convs); ``mod`` switches to LeakyReLU(0.01) and average-pool shortcuts.
57,002 trainable parameters (50,602 with ``mod``) for 10 classes.
"""
import keras

from ddu_tf.models import blocks
from ddu_tf.models.resnet import basic_block

_STAGES = ((32, 1), (64, 2), (64, 2))


def resnet1d(num_classes=10, input_shape=(40,), spectral_normalization=False, coeff=3.0,
             mod=False, power_iterations=1, stages=_STAGES, stem_channels=32, dropout_rate=0.0,
             **kwargs):
    """1-D residual CNN mapping ``[batch, length]`` signals to logits.

    Args:
        num_classes: number of logits.
        input_shape: ``(length,)`` or ``(length, channels)``; ``(40,)`` for MNIST-1D.
        spectral_normalization: soft SN on every Conv1D.
        coeff: SN bound (default 3.0).
        mod: LeakyReLU(0.01) + average-pool shortcuts.
        power_iterations: SN power iterations per training step.
        stages: ``((planes, stride), ...)``, one BasicBlock per entry; the last ``planes``
            is the feature dimension.
        stem_channels: channels of the stem convolution.
        dropout_rate: if > 0, a ``Dropout`` between the features and the classifier, the
            stochastic layer that MC-dropout scoring samples (``ddu_tf.active_learning``).
        **kwargs: ignored (uniform ``get_model`` signature).

    Returns:
        Functional ``keras.Model``: ``[batch, *input_shape]`` -> ``[batch, num_classes]``;
        the layer ``"features"`` outputs ``[batch, stages[-1][0]]`` (64 by default).

    Example:
        >>> model = resnet1d(num_classes=10, input_shape=(40,), spectral_normalization=True, mod=True)
    """
    sn_kwargs = blocks.sn_kwargs(num_classes, spectral_normalization, coeff, power_iterations)
    input_shape = tuple(input_shape)
    if len(input_shape) not in (1, 2):
        raise ValueError("Expected input_shape=(length,) or (length, channels). "
                         f"Received: input_shape={input_shape}")
    if not 0.0 <= float(dropout_rate) < 1.0:
        raise ValueError(f"Expected 0 <= dropout_rate < 1. Received: dropout_rate={dropout_rate}")
    if not stages:
        raise ValueError(f"Expected at least one (planes, stride) stage. Received: stages={stages}")
    inputs = keras.Input(shape=input_shape, name="signals")
    x = inputs
    if len(input_shape) == 1:
        x = keras.layers.Reshape((input_shape[0], 1), name="add_channel")(x)
    x = blocks.conv(x, int(stem_channels), 3, 1, rank=1, name="stem_conv", **sn_kwargs)
    x = blocks.activation(blocks.batch_norm(x, name="stem_bn"), mod=mod, name="stem_act")
    for index, (planes, stride) in enumerate(stages, 1):
        x = basic_block(x, int(planes), int(stride), mod=mod, sn_kwargs=sn_kwargs,
                        name=f"block{index}", rank=1)
    features = keras.layers.GlobalAveragePooling1D(name="features")(x)
    if dropout_rate > 0:
        features = keras.layers.Dropout(float(dropout_rate), name="dropout")(features)
    logits = blocks.classifier(features, num_classes)
    return keras.Model(inputs, logits, name="resnet1d")
