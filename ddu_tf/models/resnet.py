"""ResNet-18 / ResNet-50 for 28x28 (MNIST) and 32x32 (CIFAR) inputs, as in DDU ``net/resnet.py``.

Architecture (He et al. 2016, CIFAR variant used by DDU):

    stem: conv 64@3x3 stride 1 (no max-pool), BN, act      -> [batch, H, W, 64]
    stage 1..4: blocks with 64/128/256/512 planes, strides 1/2/2/2
    global average pool (layer "features")                  -> [batch, 512 * expansion]
    dense num_classes (layer "logits", never SN)            -> [batch, num_classes]

ResNet-18: ``BasicBlock`` [2, 2, 2, 2], 512-d features; ResNet-50: ``Bottleneck``
[3, 4, 6, 3], 2048-d features. Convolutions have no bias; BatchNorm uses PyTorch's defaults
(momentum 0.1 in PyTorch terms = Keras 0.9, epsilon 1e-5), as the original does.

Switches:
    spectral_normalization: soft SN (``coeff``, ``power_iterations``) on every convolution
        (operator SN for 3x3, matrix SN for the 1x1 ones); BN and the classifier are not SN'd.
    mod: LeakyReLU(0.01) instead of ReLU, and the downsampling shortcut is
        :class:`~ddu_tf.models.blocks.AvgPoolShortcut` instead of 1x1 conv + BN.

The original's final ``avg_pool2d(out, 4)`` sees a 4x4 map for both 28x28 and 32x32 inputs,
so it equals the global average pool used here. Trainable parameter counts equal PyTorch's
(ResNet-18 CIFAR-10: 11,173,962; with ``mod``: 11,000,138).
"""
import keras

from ddu_tf.models import blocks

_STAGE_PLANES = (64, 128, 256, 512)
_STAGE_STRIDES = (1, 2, 2, 2)


def _shortcut(x, out_channels, stride, *, mod, sn_kwargs, name, rank=2):
    """Identity, or the downsampling shortcut when stride > 1 or channels change."""
    if stride == 1 and int(x.shape[-1]) == out_channels:
        return x
    if mod:
        return blocks.AvgPoolShortcut(stride, out_channels, name=name + "_avgpool")(x)
    y = blocks.conv(x, out_channels, 1, stride, rank=rank, name=name + "_conv", **sn_kwargs)
    return blocks.batch_norm(y, name=name + "_bn")


def basic_block(x, planes, stride, *, mod, sn_kwargs, name, rank=2):
    """BasicBlock (expansion 1): two 3x3 convs with BN, residual add, activation.

    Args:
        x: ``[batch, H, W, C]`` input (``[batch, L, C]`` with ``rank=1``).
        planes: output channels.
        stride: stride of the first conv and of the shortcut.
        rank: 2 for images, 1 for sequences (Conv1D, used by ``resnet1d``).

    Returns:
        ``[batch, ceil(H / stride), ceil(W / stride), planes]`` (``[batch, ceil(L / stride),
        planes]`` with ``rank=1``).
    """
    out = blocks.conv(x, planes, 3, stride, rank=rank, name=name + "_conv1", **sn_kwargs)
    out = blocks.activation(blocks.batch_norm(out, name=name + "_bn1"), mod=mod, name=name + "_act1")
    out = blocks.conv(out, planes, 3, 1, rank=rank, name=name + "_conv2", **sn_kwargs)
    out = blocks.batch_norm(out, name=name + "_bn2")
    out = keras.layers.Add(name=name + "_add")(
        [out, _shortcut(x, planes, stride, mod=mod, sn_kwargs=sn_kwargs, name=name + "_shortcut",
                        rank=rank)])
    return blocks.activation(out, mod=mod, name=name + "_out")


def bottleneck_block(x, planes, stride, *, mod, sn_kwargs, name):
    """Bottleneck (expansion 4): 1x1 -> 3x3 (strided) -> 1x1 convs with BN, residual add.

    Args:
        x: ``[batch, H, W, C]`` input.
        planes: width of the 3x3 conv; the output has ``4 * planes`` channels.
        stride: stride of the 3x3 conv and of the shortcut.

    Returns:
        ``[batch, ceil(H / stride), ceil(W / stride), 4 * planes]``.
    """
    out = blocks.conv(x, planes, 1, 1, name=name + "_conv1", **sn_kwargs)
    out = blocks.activation(blocks.batch_norm(out, name=name + "_bn1"), mod=mod, name=name + "_act1")
    out = blocks.conv(out, planes, 3, stride, name=name + "_conv2", **sn_kwargs)
    out = blocks.activation(blocks.batch_norm(out, name=name + "_bn2"), mod=mod, name=name + "_act2")
    out = blocks.conv(out, 4 * planes, 1, 1, name=name + "_conv3", **sn_kwargs)
    out = blocks.batch_norm(out, name=name + "_bn3")
    out = keras.layers.Add(name=name + "_add")(
        [out, _shortcut(x, 4 * planes, stride, mod=mod, sn_kwargs=sn_kwargs, name=name + "_shortcut")])
    return blocks.activation(out, mod=mod, name=name + "_out")


def _resnet(block, num_blocks, *, num_classes, input_shape, spectral_normalization, coeff,
            mod, power_iterations, name):
    sn_kwargs = blocks.sn_kwargs(num_classes, spectral_normalization, coeff, power_iterations)
    input_shape = blocks.image_shape(input_shape)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = blocks.conv(inputs, 64, 3, 1, name="stem_conv", **sn_kwargs)
    x = blocks.activation(blocks.batch_norm(x, name="stem_bn"), mod=mod, name="stem_act")
    for stage, (planes, stride, count) in enumerate(zip(_STAGE_PLANES, _STAGE_STRIDES, num_blocks), 1):
        for index in range(count):
            x = block(x, planes, stride if index == 0 else 1, mod=mod, sn_kwargs=sn_kwargs,
                      name=f"stage{stage}_block{index + 1}")
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    logits = blocks.classifier(features, num_classes)
    return keras.Model(inputs, logits, name=name)


def resnet18(num_classes=10, input_shape=(28, 28, 1), spectral_normalization=False, coeff=3.0,
             mod=False, power_iterations=1, **kwargs):
    """ResNet-18 (BasicBlock [2, 2, 2, 2]) mapping images to logits; 512-d features.

    Args:
        num_classes: number of logits.
        input_shape: ``(H, W, C)``, e.g. ``(28, 28, 1)`` (MNIST) or ``(32, 32, 3)`` (CIFAR).
        spectral_normalization: soft SN on every convolution.
        coeff: SN bound (default 3.0, as in DDU).
        mod: LeakyReLU + average-pool shortcuts.
        power_iterations: SN power iterations per training step.
        **kwargs: ignored (uniform ``get_model`` signature).

    Returns:
        Functional ``keras.Model``: ``[batch, H, W, C]`` -> ``[batch, num_classes]``; the
        layer ``"features"`` outputs ``[batch, 512]``.

    Example:
        >>> model = resnet18(num_classes=10, input_shape=(32, 32, 3), spectral_normalization=True, mod=True)
    """
    return _resnet(basic_block, [2, 2, 2, 2], num_classes=num_classes, input_shape=input_shape,
                   spectral_normalization=spectral_normalization, coeff=coeff, mod=mod,
                   power_iterations=power_iterations, name="resnet18")


def resnet50(num_classes=10, input_shape=(28, 28, 1), spectral_normalization=False, coeff=3.0,
             mod=False, power_iterations=1, **kwargs):
    """ResNet-50 (Bottleneck [3, 4, 6, 3]) mapping images to logits; 2048-d features.

    Arguments as :func:`resnet18`. The layer ``"features"`` outputs ``[batch, 2048]``.
    """
    return _resnet(bottleneck_block, [3, 4, 6, 3], num_classes=num_classes,
                   input_shape=input_shape, spectral_normalization=spectral_normalization,
                   coeff=coeff, mod=mod, power_iterations=power_iterations, name="resnet50")
