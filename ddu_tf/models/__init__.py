"""Networks for DDU and Bayesian active learning, behind one registry.

Every model is a functional ``keras.Model`` mapping inputs to **logits**; the penultimate
feature tensor is the output of the layer named ``"features"``.

Example:
    >>> from ddu_tf.models import get_model, features_and_logits
    >>> model = get_model("resnet18", num_classes=10, input_shape=(32, 32, 3),
    ...                   spectral_normalization=True, mod=True, coeff=3.0)
    >>> features, logits = features_and_logits(model)(images)   # [batch, 512], [batch, 10]
"""
import importlib
import inspect

import keras

FEATURES_LAYER = "features"
"""Name of the layer whose output is the penultimate feature tensor of every model."""

MODELS = {
    "lenet": ("ddu_tf.models.lenet", "lenet"),
    "vgg16": ("ddu_tf.models.vgg", "vgg16"),
    "resnet18": ("ddu_tf.models.resnet", "resnet18"),
    "resnet50": ("ddu_tf.models.resnet", "resnet50"),
    "small_resnet": ("ddu_tf.models.small_resnet", "small_resnet"),
    "wide_resnet": ("ddu_tf.models.wide_resnet", "wide_resnet"),
    "resnet1d": ("ddu_tf.models.resnet1d", "resnet1d"),
    "bayesian_cnn": ("ddu_tf.models.bayesian_cnn", "bayesian_cnn"),
    "logistic": ("ddu_tf.models.mnist1d_models", "logistic"),
    "mlp": ("ddu_tf.models.mnist1d_models", "mlp"),
    "cnn1d": ("ddu_tf.models.mnist1d_models", "cnn1d"),
    "gru": ("ddu_tf.models.mnist1d_models", "gru"),
}
"""Model name -> (module path, builder function); modules are imported on first use."""


def get_builder(name):
    """Return the builder function registered under ``name`` (imports its module lazily).

    Raises:
        ValueError: if ``name`` is not a registered model.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model. Expected one of {sorted(MODELS)}. Received: name={name!r}")
    module_path, function = MODELS[name]
    return getattr(importlib.import_module(module_path), function)


def get_model(name, *, num_classes=10, input_shape=None, spectral_normalization=False,
              coeff=3.0, mod=False, power_iterations=1, **kwargs):
    """Build a registered model.

    Args:
        name: one of ``MODELS`` ("lenet", "vgg16", "resnet18", "resnet50", "small_resnet",
            "wide_resnet", "resnet1d", "bayesian_cnn", "logistic", "mlp", "cnn1d", "gru").
        num_classes: number of logits.
        input_shape: shape of one input without the batch axis, e.g. ``(28, 28, 1)``,
            ``(32, 32, 3)`` or ``(40,)``; None uses the builder's default ((28, 28, 1) for
            the image models except WRN's (32, 32, 3), (40,) for the MNIST-1D models).
        spectral_normalization: DDU's soft SN (the ``-sn`` flag).
        coeff: SN bound (``--coeff``, default 3.0).
        mod: LeakyReLU + average-pool shortcuts (the ``-mod`` flag).
        power_iterations: SN power iterations per training step.
        **kwargs: passed to the builder (e.g. ``dropout_rate`` for "wide_resnet").

    Returns:
        Functional ``keras.Model``: ``[batch, *input_shape]`` -> ``[batch, num_classes]``
        logits, with a layer named ``"features"``.

    Raises:
        ValueError: unknown ``name``; or a builder that has no ``spectral_normalization`` /
            ``mod`` switch was asked for it (the switch would otherwise be silently dropped).
    """
    builder = get_builder(name)
    arguments = {"num_classes": num_classes, "spectral_normalization": spectral_normalization,
                 "coeff": coeff, "mod": mod, "power_iterations": power_iterations, **kwargs}
    if input_shape is not None:
        arguments["input_shape"] = tuple(input_shape)
    parameters = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        for switch, value in (("spectral_normalization", spectral_normalization), ("mod", mod)):
            if value and switch not in parameters:
                raise ValueError(f"Model {name!r} has no {switch} variant. Received: {switch}={value}")
        arguments = {key: value for key, value in arguments.items()
                     if key in parameters or key in kwargs}
    return builder(**arguments)


def features_and_logits(model):
    """A model computing ``(features, logits)`` of ``model`` in one forward pass.

    The returned model shares all layers and weights with ``model`` (no copy, no global
    state); call it with ``training=False`` for evaluation (BatchNorm statistics, no
    dropout, no SN power iteration).

    Args:
        model: a functional model from :func:`get_model` (it has a layer ``"features"``).

    Returns:
        ``keras.Model``: ``[batch, *input_shape]`` -> ``([batch, d], [batch, num_classes])``.

    Raises:
        ValueError: if ``model`` has no layer named ``"features"``.
    """
    names = [layer.name for layer in model.layers]
    if FEATURES_LAYER not in names:
        raise ValueError(f"Expected a model with a layer named {FEATURES_LAYER!r}. Received: "
                         f"model={model.name!r} with layers {names}")
    features = model.get_layer(FEATURES_LAYER).output
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, [features, model.outputs[0]],
                       name=f"{model.name}_features_and_logits")


__all__ = ["FEATURES_LAYER", "MODELS", "features_and_logits", "get_builder", "get_model"]
