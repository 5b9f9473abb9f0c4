"""Soft spectral normalisation (DDU, Mukhoti et al. 2021; Gouk et al. 2018) as a Keras 3 wrapper.

The wrapped layer ``f(x) = act(A_W x + b)`` is evaluated with the rescaled kernel

    W_sn = W / max(1, sigma(W) / coeff),

where ``sigma(W)`` is a power-iteration estimate of the operator norm ``||A_W||_2`` of the
linear map ``A_W``. Layers whose norm is already below ``coeff`` are left unchanged; larger
ones are scaled down to norm ``coeff``. ``sigma`` is a differentiable function of ``W``
(``sigma = <u, A_W v>`` with the power-iteration vectors ``u``, ``v`` held constant), so the
gradient of the loss flows through the normalisation, as in ``torch.nn.utils.spectral_norm``
and the original ``omegafragger/DDU`` code.

Which linear map ``A_W``:

* ``Dense`` (kernel ``[n_in, n_out]``): ``A_W x = W^T x``, ``||A_W|| = ||W||_2``.
* ``Conv1D``/``Conv2D`` with every kernel dimension 1: the convolution applies the matrix
  ``W[0, .., 0] : [c_in, c_out]`` at each kept pixel, so ``||A_W|| = ||W[0,..,0]||_2`` for any
  stride (a stride only drops pixels; a unit input at one kept pixel attains the norm). Matrix
  power iteration is exact here and needs no input shape.
* ``Conv1D``/``Conv2D`` with a larger kernel: ``A_W`` is the convolution operator on the
  layer's actual input shape ``[*spatial, c_in]`` (stride, padding and dilation included), and
  the power iteration runs on the operator itself (Gouk et al. 2018)::

      v <- normalize(A_W^T u)   (the convolution's vector-Jacobian product at the input shape)
      u <- normalize(A_W v)     (the layer's own convolution)
      sigma = <u, A_W v>

  Reshaping the kernel to a ``[k*k*c_in, c_out]`` matrix (what ``keras.layers.
  SpectralNormalization`` does) does not bound this operator norm.

Differences from the PyTorch original, on purpose:

* The original divides by ``max(1, sigma/coeff) + 1e-5``. The denominator is already
  ``>= 1``, so the ``1e-5`` adds no stability; we drop it, so that a layer below ``coeff`` is
  exactly unchanged. Outputs differ from the original by the factor ``1 + 1e-5`` only.
* The kernel variable of the wrapped layer is never overwritten: the normalised kernel is
  computed in the forward pass and fed to the layer's own operation, so the optimiser always
  updates the raw ``W``.

Training-mode calls do ``power_iterations`` steps, store the new ``u``, ``v`` and ``sigma`` in
non-trainable variables and normalise with the new ``sigma``. Inference calls do no power
iteration: they use the stored ``u``, ``v`` and compute ``sigma = <u, A_W v>`` with the current
kernel (as ``torch.nn.utils.spectral_norm`` does in eval mode), which costs one batch-1
convolution and equals the stored ``sigma`` whenever the kernel has not changed since the
last training call.
"""
import numbers

import keras
import tensorflow as tf
from keras import ops
# Keras 3 has no public way to read a float32 variable un-cast inside a mixed-precision
# layer call; this scope is what keras' own layers use for that.
from keras.src.backend.common.variables import AutocastScope

_SUPPORTED = "keras.layers.Dense, keras.layers.Conv1D or keras.layers.Conv2D"


def _normalize(x, eps):
    """``x / max(||x||_2, eps)`` over all entries (as ``torch.nn.functional.normalize``)."""
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x))), eps)


def _unit_normal(shape, dtype=None):
    """Initializer: a standard normal sample scaled to unit Euclidean norm."""
    x = keras.random.normal(shape, dtype=dtype)
    return x / ops.sqrt(ops.sum(ops.square(x)))


@keras.saving.register_keras_serializable(package="ddu_tf")
class SpectralNormalization(keras.layers.Wrapper):
    """Soft spectral normalisation ``W_sn = W / max(1, sigma(W) / coeff)`` of a wrapped layer.

    Args:
        layer: a ``keras.layers.Dense``, ``keras.layers.Conv1D`` or ``keras.layers.Conv2D``
            (channels_last, ``groups=1``, padding ``"same"`` or ``"valid"``). Convolutions with
            a kernel larger than 1 need a fully known input shape (except the batch size) at
            build time, e.g. ``keras.Input((28, 28, 1))``.
        coeff: upper bound on the operator norm of the normalised layer (> 0). DDU uses 3.
        power_iterations: power-iteration steps per training-mode call (>= 1).
        eps: lower bound on vector norms when normalising (> 0), as in torch.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Input shape: that of the wrapped layer, e.g. ``[batch, n_in]`` (Dense) or
    ``[batch, height, width, c_in]`` (Conv2D). Output shape: that of the wrapped layer.

    State (non-trainable, float32 or the kernel's dtype, saved with the model):
        ``u``: ``[n_out]`` (matrix case) or the layer's output shape without batch (operator);
        ``v``: ``[n_in]`` (matrix case) or the layer's input shape without batch (operator);
        ``sigma``: ``[]``, the estimate ``<u, A_W v>`` from the last training-mode call (0
        before the first one).

    Under mixed precision the power iteration runs in the kernel variable's dtype (float32)
    and only ``W_sn`` is cast to the compute dtype. Under ``tf.distribute`` strategies the
    state uses ``"only_first_replica"`` aggregation: all replicas compute identical ``u``,
    ``v``, ``sigma`` (they depend on the weights only, not on the data).

    Example:
        >>> inputs = keras.Input((28, 28, 1))
        >>> conv = SpectralNormalization(keras.layers.Conv2D(8, 3, padding="same"), coeff=3.0)
        >>> conv(inputs).shape
        (None, 28, 28, 8)
    """

    def __init__(self, layer, coeff=3.0, power_iterations=1, eps=1e-12, **kwargs):
        if not isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)):
            raise ValueError(
                f"Expected layer to be a {_SUPPORTED}. Received: layer={layer!r} "
                f"of type {type(layer).__name__}."
            )
        if layer.quantization_mode is not None:
            raise ValueError(
                "Expected a float (not quantized) layer. Received: layer with "
                f"quantization_mode={layer.quantization_mode!r}. Spectral normalisation needs "
                "the float kernel: do not quantize the wrapped layer."
            )
        if isinstance(layer, keras.layers.Conv1D | keras.layers.Conv2D):
            if layer.data_format != "channels_last":
                raise ValueError(
                    "Expected a channels_last convolution. Received: layer with "
                    f"data_format={layer.data_format!r}; build it with "
                    "data_format='channels_last'."
                )
            if layer.groups != 1:
                raise ValueError(
                    "Expected a convolution with groups=1. Received: layer with "
                    f"groups={layer.groups}."
                )
            if layer.padding not in ("same", "valid"):
                raise ValueError(
                    "Expected a convolution with padding 'same' or 'valid'. Received: layer "
                    f"with padding={layer.padding!r}."
                )
        if isinstance(coeff, bool) or not isinstance(coeff, numbers.Real) or not coeff > 0:
            raise ValueError(f"Expected coeff > 0. Received: coeff={coeff}")
        if isinstance(power_iterations, bool) \
                or not isinstance(power_iterations, numbers.Integral) or power_iterations < 1:
            raise ValueError(
                "Expected power_iterations to be an integer >= 1. "
                f"Received: power_iterations={power_iterations}"
            )
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
            raise ValueError(f"Expected eps > 0. Received: eps={eps}")
        super().__init__(layer, **kwargs)
        # Keras checks every call's inputs against input_spec before building or calling, so
        # a wrong rank (here) or feature/channel count (set in build) is a ValueError naming
        # the layer and both shapes, not a failing matmul / convolution inside TensorFlow.
        self.input_spec = self._inputs_spec()
        self.coeff = float(coeff)
        self.power_iterations = int(power_iterations)
        self.eps = float(eps)

    def _inputs_spec(self, channels=None):
        """``[batch, ..., n_in]`` (rank >= 2) for Dense, ``[batch, *spatial, c_in]`` (rank
        ``len(kernel_size) + 2``) for a convolution; ``channels`` fixes the last axis."""
        axes = None if channels is None else {-1: int(channels)}
        if isinstance(self.layer, keras.layers.Dense):
            return keras.layers.InputSpec(min_ndim=2, axes=axes)
        return keras.layers.InputSpec(ndim=len(self.layer.kernel_size) + 2, axes=axes)

    @property
    def uses_operator_norm(self):
        """True when ``sigma`` is the norm of the convolution operator (kernel > 1)."""
        return isinstance(self.layer, keras.layers.Conv1D | keras.layers.Conv2D) and any(
            k != 1 for k in self.layer.kernel_size)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        super().build(input_shape)
        kernel = self.layer.kernel
        self.input_spec = self._inputs_spec(channels=kernel.shape[-2])
        if self.uses_operator_norm:
            spatial = input_shape[1:]
            if len(spatial) != len(self.layer.kernel_size) + 1 or any(d is None for d in spatial):
                raise ValueError(
                    "Expected a fully known input shape (all but the batch dimension) for "
                    "operator spectral normalisation of a convolution with kernel_size="
                    f"{self.layer.kernel_size}. Received: input_shape={input_shape}. Give the "
                    "model a fixed input size, e.g. keras.Input((28, 28, 1))."
                )
            self._input_shape_nb = tuple(int(d) for d in spatial)
            out_shape = self.layer.compute_output_shape((1,) + self._input_shape_nb)
            u_shape, v_shape = tuple(out_shape[1:]), self._input_shape_nb
        else:
            u_shape, v_shape = (kernel.shape[-1],), (kernel.shape[-2],)
        dtype = kernel.dtype
        self.u = self.add_weight(name="u", shape=u_shape, dtype=dtype, initializer=_unit_normal,
                                 trainable=False, autocast=False,
                                 aggregation="only_first_replica")
        self.v = self.add_weight(name="v", shape=v_shape, dtype=dtype, initializer=_unit_normal,
                                 trainable=False, autocast=False,
                                 aggregation="only_first_replica")
        self.sigma = self.add_weight(name="sigma", shape=(), dtype=dtype, initializer="zeros",
                                     trainable=False, autocast=False,
                                     aggregation="only_first_replica")
        self.built = True

    # ----- the linear map A_W and its adjoint, on single (unbatched) vectors -----

    def _apply(self, kernel, v):
        """``A_W v``: ``v`` has the shape of ``self.v``; the result that of ``self.u``."""
        if self.uses_operator_norm:
            return self.layer.convolution_op(v[None], kernel)[0]
        return ops.matmul(v[None], self._matrix(kernel))[0]

    def _apply_transpose(self, kernel, u):
        """``A_W^T u``: ``u`` has the shape of ``self.u``; the result that of ``self.v``."""
        if self.uses_operator_norm:
            # The vector-Jacobian product of the linear map: d<u, A_W x>/dx at any x. Same op
            # as tf.nn.conv_transpose for dilation 1, and unlike it also runs dilated
            # convolutions on CPU (their gradient goes through space-to-batch).
            x = tf.zeros((1,) + self._input_shape_nb, u.dtype)
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = self.layer.convolution_op(x, kernel)
            return tape.gradient(y, x, output_gradients=u[None])[0]
        return ops.matmul(self._matrix(kernel), u[:, None])[:, 0]

    def _matrix(self, kernel):
        """The kernel as a ``[n_in, n_out]`` matrix (Dense, or a conv with all-1 kernel)."""
        return ops.reshape(kernel, (kernel.shape[-2], kernel.shape[-1]))

    def normalized_kernel(self, training=False):
        """``W_sn = W / max(1, sigma / coeff)`` in the kernel variable's dtype.

        Args:
            training: if True, run ``power_iterations`` steps first and store the new
                ``u``, ``v`` and ``sigma``; if False, use the stored ``u``, ``v``.

        Returns:
            A tensor of the kernel's shape, differentiable w.r.t. the kernel (through
            ``sigma = <u, A_W v>`` as well as through ``W``).
        """
        with AutocastScope(None):
            kernel = self.layer.kernel  # a variable, or a tensor when LoRA is enabled
            if isinstance(kernel, keras.Variable):
                kernel = kernel.value
            u, v = self.u.value, self.v.value
        if training:
            # Power iteration on the constant kernel (no gradient through u, v). The last
            # A_W v is computed with the live kernel and reused for sigma, saving one op.
            w = ops.stop_gradient(kernel)
            for _ in range(self.power_iterations - 1):
                v = _normalize(self._apply_transpose(w, u), self.eps)
                u = _normalize(self._apply(w, v), self.eps)
            v = _normalize(self._apply_transpose(w, u), self.eps)
            kernel_v = self._apply(kernel, v)
            u = ops.stop_gradient(_normalize(kernel_v, self.eps))
        else:
            kernel_v = self._apply(kernel, v)
        sigma = ops.sum(u * kernel_v)  # gradient d sigma / dW = u v^T, as in torch
        if training:
            self.u.assign(u)
            self.v.assign(v)
            self.sigma.assign(ops.stop_gradient(sigma))
        return kernel / ops.maximum(ops.cast(1.0, kernel.dtype), sigma / self.coeff)

    def call(self, inputs, training=False):
        """Apply the wrapped layer with ``W_sn`` in place of its kernel.

        Args:
            inputs: the wrapped layer's input, e.g. ``[batch, height, width, c_in]``.
            training: Python bool; True updates ``u``, ``v``, ``sigma`` by power iteration.

        Returns:
            ``act(A_{W_sn} inputs + b)`` in the compute dtype, of the wrapped layer's output
            shape.
        """
        layer = self.layer
        self._check_input_shape(inputs.shape)
        kernel = ops.cast(self.normalized_kernel(training=bool(training)), self.compute_dtype)
        inputs = ops.cast(inputs, self.compute_dtype)
        if isinstance(layer, keras.layers.Dense):
            outputs = ops.matmul(inputs, kernel)
        else:
            outputs = layer.convolution_op(inputs, kernel)
        if layer.use_bias:
            outputs = outputs + ops.cast(layer.bias, self.compute_dtype)
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return outputs

    def _check_input_shape(self, shape):
        """The operator norm is of the build-time input size: refuse another size."""
        if not (self.built and self.uses_operator_norm):
            return
        spatial = tuple(shape[1:])
        if len(spatial) != len(self._input_shape_nb) or any(
                d is not None and int(d) != want
                for d, want in zip(spatial, self._input_shape_nb)):
            raise ValueError(
                f"Expected inputs of shape [batch, {', '.join(map(str, self._input_shape_nb))}]"
                f" (the input size whose convolution operator {self.name!r} normalises). "
                f"Received: inputs.shape={tuple(shape)}. Build a model for this input size "
                "(the operator norm depends on it).")

    def compute_output_shape(self, input_shape):
        self._check_input_shape(input_shape)
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"coeff": self.coeff, "power_iterations": self.power_iterations,
                       "eps": self.eps})
        return config
