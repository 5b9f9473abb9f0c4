"""Wide-ResNet-28-10 (pre-activation), as in DDU ``net/wide_resnet.py``.

    conv 16@3x3 (stem)                                 -> [batch, 32, 32, 16]
    3 groups of n = (depth - 4) / 6 WideBasic blocks,
        widths 16k, 32k, 64k, strides 1, 2, 2         -> [batch, 8, 8, 64k]
    BN, act, global average pool (layer "features")    -> [batch, 64k] (640 for k = 10)
    dense num_classes (layer "logits", never SN)       -> [batch, num_classes]

``WideBasic``: ``BN -> act -> conv3x3(stride) -> BN -> act -> dropout -> conv3x3 -> + shortcut``
(no activation after the addition). The shortcut is the identity when shapes agree, else a
1x1 strided conv *without* BN (matrix SN with ``-sn``), or with ``mod`` an average pool plus
zero channels. BatchNorm momentum 0.01 in PyTorch terms (Keras 0.99), epsilon 1e-5;
dropout 0.3; convolutions have no bias. Initialisation as the original: every conv and the
classifier kernel ``kaiming_normal_(mode="fan_out")`` (gain sqrt(2)), classifier bias 0.
WRN-28-10: 36,479,194 trainable parameters on CIFAR-10 (36,220,634 with ``mod``).

The original hard-codes 32x32 inputs; here any input size works, and the ``mod`` shortcut
uses the ResNet rule (``avg_pool(1, stride)`` for odd sizes) so odd maps (e.g. MNIST's 7x7)
also line up; for 32x32 this is exactly the original.
"""
import keras

from ddu_tf.models import blocks

WRN_BN_MOMENTUM = 0.01
"""BatchNorm momentum of DDU's WRN in PyTorch terms (Keras momentum 0.99)."""


def wide_basic(x, out_channels, stride, *, dropout_rate, mod, sn_kwargs, name):
    """Pre-activation wide residual block.

    Args:
        x: ``[batch, H, W, C]`` input.
        out_channels: output channels.
        stride: stride of the first conv and of the shortcut.
        dropout_rate: dropout between the two convolutions (0 disables it).

    Returns:
        ``[batch, ceil(H / stride), ceil(W / stride), out_channels]``.
    """
    init = blocks.kaiming_normal_fan_out()
    out = blocks.batch_norm(x, torch_momentum=WRN_BN_MOMENTUM, name=name + "_bn1")
    out = blocks.activation(out, mod=mod, name=name + "_act1")
    out = blocks.conv(out, out_channels, 3, stride, kernel_initializer=init, name=name + "_conv1",
                      **sn_kwargs)
    out = blocks.batch_norm(out, torch_momentum=WRN_BN_MOMENTUM, name=name + "_bn2")
    out = blocks.activation(out, mod=mod, name=name + "_act2")
    if dropout_rate > 0:
        out = keras.layers.Dropout(dropout_rate, name=name + "_dropout")(out)
    out = blocks.conv(out, out_channels, 3, 1, kernel_initializer=init, name=name + "_conv2",
                      **sn_kwargs)
    if stride == 1 and int(x.shape[-1]) == out_channels:
        shortcut = x
    elif mod:
        shortcut = blocks.AvgPoolShortcut(stride, out_channels, name=name + "_shortcut_avgpool")(x)
    else:
        shortcut = blocks.conv(x, out_channels, 1, stride, kernel_initializer=init,
                               name=name + "_shortcut_conv", **sn_kwargs)
    return keras.layers.Add(name=name + "_add")([out, shortcut])


def wide_resnet(num_classes=10, input_shape=(32, 32, 3), spectral_normalization=False, coeff=3.0,
                mod=False, power_iterations=1, depth=28, widen_factor=10, dropout_rate=0.3,
                **kwargs):
    """Wide-ResNet-``depth``-``widen_factor`` mapping images to logits.

    Args:
        num_classes: number of logits.
        input_shape: ``(H, W, C)``, ``(32, 32, 3)`` in DDU.
        spectral_normalization: soft SN on every convolution (operator SN for 3x3, matrix
            SN for 1x1 shortcuts).
        coeff: SN bound (default 3.0).
        mod: LeakyReLU(0.01) + average-pool shortcuts.
        power_iterations: SN power iterations per training step.
        depth: ``6n + 4`` (28 in DDU).
        widen_factor: width multiplier k (10 in DDU).
        dropout_rate: dropout inside each block, in [0, 1) (0.3 in DDU).
        **kwargs: ignored (uniform ``get_model`` signature).

    Returns:
        Functional ``keras.Model``: ``[batch, H, W, C]`` -> ``[batch, num_classes]``; the layer
        ``"features"`` outputs ``[batch, 64 * widen_factor]`` (640 for WRN-28-10).

    Example:
        >>> model = wide_resnet(num_classes=10, spectral_normalization=True, mod=True)
    """
    sn_kwargs = blocks.sn_kwargs(num_classes, spectral_normalization, coeff, power_iterations)
    if depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(f"Expected depth = 6n + 4 with n >= 1. Received: depth={depth}")
    if int(widen_factor) < 1:
        raise ValueError(f"Expected widen_factor >= 1. Received: widen_factor={widen_factor}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"Expected 0 <= dropout_rate < 1. Received: dropout_rate={dropout_rate}")
    input_shape = blocks.image_shape(input_shape)
    n = (depth - 4) // 6
    k = int(widen_factor)
    init = blocks.kaiming_normal_fan_out()
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = blocks.conv(inputs, 16, 3, 1, kernel_initializer=init, name="stem_conv", **sn_kwargs)
    for group, (width, stride) in enumerate(zip((16 * k, 32 * k, 64 * k), (1, 2, 2)), 1):
        for index in range(n):
            x = wide_basic(x, width, stride if index == 0 else 1, dropout_rate=dropout_rate,
                           mod=mod, sn_kwargs=sn_kwargs, name=f"group{group}_block{index + 1}")
    x = blocks.batch_norm(x, torch_momentum=WRN_BN_MOMENTUM, name="final_bn")
    x = blocks.activation(x, mod=mod, name="final_act")
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    logits = blocks.classifier(features, num_classes, kernel_initializer=init,
                               bias_initializer="zeros")
    return keras.Model(inputs, logits, name=f"wide_resnet_{depth}_{k}")
