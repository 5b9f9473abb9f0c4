"""Building blocks shared by the DDU networks (VGG, ResNet, WideResNet, ResNet-1D).

The helpers reproduce the PyTorch originals (omegafragger/DDU ``net/*.py``) in Keras 3:

* :func:`conv` -- a bias-free 1-D/2-D convolution with PyTorch padding
  (``padding = (k - 1) // 2`` on every side), optionally wrapped in DDU's soft spectral
  normalisation :class:`ddu_tf.layers.SpectralNormalization` (operator SN for ``k > 1``,
  matrix SN for ``k == 1``, as the wrapper decides from the kernel size).
* :func:`batch_norm` -- BatchNorm with PyTorch's epsilon (1e-5) and momentum given in
  PyTorch terms (``keras_momentum = 1 - torch_momentum``).
* :func:`activation` -- ReLU, or LeakyReLU(0.01) for the ``-mod`` variant.
* :class:`AvgPoolShortcut` -- the ``-mod`` downsampling shortcut: average pooling followed
  by zero-padding of the extra channels.
* :func:`torch_kernel_initializer` / :func:`torch_bias_initializer` -- PyTorch's default
  ``nn.Conv``/``nn.Linear`` initialisation, used where the original relies on it.

Stride-1 convolutions use Keras ``"same"`` padding, which for odd kernels is exactly
PyTorch's symmetric padding (and lets the SN wrapper see the true operator). A strided
``k > 1`` convolution is preceded by an explicit ``ZeroPadding`` of ``(k - 1) // 2`` and run
with ``"valid"`` padding: Keras ``"same"`` would pad asymmetrically (0 before, 1 after) on
even inputs and sample a grid shifted by one pixel from PyTorch's. With SN, the operator
norm is then estimated for the convolution on the padded input; zero padding is an
isometric embedding, so the resulting Lipschitz bound still holds (it is at most
slightly conservative at the border).
"""
import math

import keras

BN_EPSILON = 1e-5
"""BatchNorm epsilon of PyTorch (Keras defaults to 1e-3)."""

LEAKY_RELU_SLOPE = 0.01
"""Negative slope of ``F.leaky_relu`` / ``nn.LeakyReLU`` defaults used by ``-mod``."""


def torch_kernel_initializer():
    """PyTorch's default conv/linear weight init, ``kaiming_uniform_(a=sqrt(5))``.

    Equals ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, i.e. Keras ``VarianceScaling`` with
    ``scale=1/3``, ``mode="fan_in"``, ``distribution="uniform"``.
    """
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in",
                                              distribution="uniform")


def torch_bias_initializer(fan_in):
    """PyTorch's default bias init ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    Args:
        fan_in: number of inputs to one output unit (``in_channels * prod(kernel_size)``
            for a convolution, ``in_features`` for a dense layer); > 0.
    """
    if int(fan_in) < 1:
        raise ValueError(f"Expected fan_in >= 1. Received: fan_in={fan_in}")
    bound = 1.0 / math.sqrt(int(fan_in))
    return keras.initializers.RandomUniform(-bound, bound)


def kaiming_normal_fan_out():
    """``nn.init.kaiming_normal_(w, mode="fan_out")`` for ReLU/LeakyReLU(a=0): N(0, 2/fan_out).

    With ``a=0`` (the default, which the WRN original keeps) the gain is sqrt(2) for both
    ``nonlinearity="relu"`` and ``"leaky_relu"``.
    """
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out",
                                              distribution="untruncated_normal")


def _check_rank(rank):
    if rank not in (1, 2):
        raise ValueError(f"Expected rank 1 (Conv1D) or 2 (Conv2D). Received: rank={rank}")


def conv(x, filters, kernel_size, stride=1, *, rank=2, spectral_normalization=False,
         coeff=3.0, power_iterations=1, kernel_initializer=None, name):
    """Bias-free convolution with PyTorch padding, optionally spectrally normalised.

    Args:
        x: input tensor ``[batch, length, channels]`` (rank 1) or
            ``[batch, height, width, channels]`` (rank 2).
        filters: output channels.
        kernel_size: odd kernel size (3 or 1 in the DDU networks).
        stride: stride (same along every spatial axis).
        rank: 1 for ``Conv1D``, 2 for ``Conv2D``.
        spectral_normalization: wrap the convolution in
            ``ddu_tf.layers.SpectralNormalization(coeff, power_iterations)``.
        coeff: SN upper bound on the operator norm (> 0).
        power_iterations: power-iteration steps per training forward pass.
        kernel_initializer: Keras initializer; PyTorch's default when None.
        name: layer name (the SN wrapper, when used, is called ``name + "_sn"``).

    Returns:
        Output tensor ``[batch, ceil(L / stride), filters]`` (rank 1) or
        ``[batch, ceil(H / stride), ceil(W / stride), filters]`` (rank 2).
    """
    _check_rank(rank)
    if kernel_size % 2 != 1:
        raise ValueError(f"Expected an odd kernel_size. Received: kernel_size={kernel_size}")
    pad = (kernel_size - 1) // 2
    if stride > 1 and pad > 0:
        padding_cls = keras.layers.ZeroPadding1D if rank == 1 else keras.layers.ZeroPadding2D
        x = padding_cls(pad, name=name + "_pad")(x)
        padding = "valid"
    else:
        padding = "same" if pad > 0 else "valid"
    conv_cls = keras.layers.Conv1D if rank == 1 else keras.layers.Conv2D
    layer = conv_cls(filters, kernel_size, strides=stride, padding=padding, use_bias=False,
                     kernel_initializer=kernel_initializer or torch_kernel_initializer(),
                     name=name)
    if spectral_normalization:
        from ddu_tf.layers import SpectralNormalization

        layer = SpectralNormalization(layer, coeff=coeff, power_iterations=power_iterations,
                                      name=name + "_sn")
    return layer(x)


def batch_norm(x, *, torch_momentum=0.1, name):
    """BatchNorm over the last (channel) axis with PyTorch's defaults.

    Args:
        x: input tensor ``[batch, ..., channels]``.
        torch_momentum: momentum in PyTorch's convention (weight of the new batch
            statistic; 0.1 is ``nn.BatchNorm2d``'s default, DDU's WRN uses 0.01).
        name: layer name.

    Returns:
        Tensor of the same shape as ``x``.
    """
    if not 0.0 < torch_momentum < 1.0:
        raise ValueError(f"Expected 0 < torch_momentum < 1. Received: torch_momentum={torch_momentum}")
    return keras.layers.BatchNormalization(momentum=1.0 - torch_momentum, epsilon=BN_EPSILON,
                                           name=name)(x)


def activation(x, *, mod, name):
    """ReLU, or LeakyReLU with slope 0.01 when ``mod`` (the DDU ``-mod`` variant)."""
    if mod:
        return keras.layers.LeakyReLU(negative_slope=LEAKY_RELU_SLOPE, name=name)(x)
    return keras.layers.ReLU(name=name)(x)


@keras.saving.register_keras_serializable(package="ddu_tf")
class AvgPoolShortcut(keras.layers.Layer):
    """The ``-mod`` residual shortcut: average pool, then zero-pad the new channels.

    As in DDU's ``AvgPoolShortCut``: if the first spatial size is odd, the pool is
    ``avg_pool(1, stride)`` (strided subsampling, e.g. 7 -> 4, matching the 3x3/stride-2
    convolution of the residual branch); otherwise ``avg_pool(stride, stride)``. The
    ``out_channels - in_channels`` extra channels are zeros. It has no weights, so it is
    1-Lipschitz and needs no spectral normalisation.

    Input shape: ``[batch, *spatial, in_channels]`` (1 or 2 spatial axes).
    Output shape: ``[batch, *ceil(spatial / stride), out_channels]``.

    Args:
        stride: spatial stride (>= 1).
        out_channels: channels of the output (>= input channels).

    Example:
        >>> y = AvgPoolShortcut(2, 128)(keras.ops.ones((2, 8, 8, 64)))
        >>> tuple(y.shape)
        (2, 4, 4, 128)
    """

    def __init__(self, stride, out_channels, **kwargs):
        super().__init__(**kwargs)
        if int(stride) < 1:
            raise ValueError(f"Expected stride >= 1. Received: stride={stride}")
        self.stride = int(stride)
        self.out_channels = int(out_channels)

    def build(self, input_shape):
        if len(input_shape) not in (3, 4):
            raise ValueError("Expected input [batch, length, channels] or "
                             f"[batch, height, width, channels]. Received: input_shape={input_shape}")
        if input_shape[-1] is None or input_shape[-1] > self.out_channels:
            raise ValueError(f"Expected known input channels <= out_channels={self.out_channels}. "
                             f"Received: input_shape={input_shape}")
        self._spatial_rank = len(input_shape) - 2
        odd = input_shape[1] is not None and input_shape[1] % 2 != 0
        self._pool_size = 1 if odd else self.stride
        self._extra = self.out_channels - input_shape[-1]

    def call(self, x):
        if self.stride > 1 or self._pool_size > 1:
            x = keras.ops.average_pool(x, self._pool_size, strides=self.stride, padding="valid")
        if self._extra:
            x = keras.ops.pad(x, [[0, 0]] * (self._spatial_rank + 1) + [[0, self._extra]])
        return x

    def compute_output_shape(self, input_shape):
        spatial = [None if s is None else (s - self._pool_size) // self.stride + 1
                   for s in input_shape[1:-1]]
        return (input_shape[0], *spatial, self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update({"stride": self.stride, "out_channels": self.out_channels})
        return config


def sn_kwargs(num_classes, spectral_normalization, coeff, power_iterations):
    """Validate the arguments every DDU network takes; return the SN keywords of `conv`/`dense`.

    Returns:
        ``{"spectral_normalization": bool, "coeff": float, "power_iterations": int}``.

    Raises:
        ValueError naming the bad argument (num_classes < 1, coeff <= 0, power_iterations < 1).
    """
    if int(num_classes) < 1:
        raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes}")
    if not coeff > 0:
        raise ValueError(f"Expected coeff > 0. Received: coeff={coeff}")
    if int(power_iterations) < 1:
        raise ValueError(f"Expected power_iterations >= 1. Received: power_iterations={power_iterations}")
    return {"spectral_normalization": bool(spectral_normalization), "coeff": float(coeff),
            "power_iterations": int(power_iterations)}


def image_shape(input_shape):
    """``input_shape`` as a ``(height, width, channels)`` tuple; ValueError for another rank."""
    if len(tuple(input_shape)) != 3:
        raise ValueError("Expected input_shape=(height, width, channels). "
                         f"Received: input_shape={input_shape}")
    return tuple(input_shape)


def classifier(features, num_classes, *, kernel_initializer=None, bias_initializer=None):
    """Final (never spectrally normalised) dense layer named ``"logits"``.

    Args:
        features: ``[batch, d]`` tensor, the output of the ``"features"`` layer.
        num_classes: number of logits.
        kernel_initializer, bias_initializer: PyTorch ``nn.Linear`` defaults when None.

    Returns:
        ``[batch, num_classes]`` logits.
    """
    fan_in = int(features.shape[-1])
    return keras.layers.Dense(
        int(num_classes),
        kernel_initializer=kernel_initializer or torch_kernel_initializer(),
        bias_initializer=bias_initializer or torch_bias_initializer(fan_in),
        name="logits")(features)
