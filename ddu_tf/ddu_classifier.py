"""DDU for any Keras classifier: logits + softmax entropy (aleatoric) + feature density (epistemic).

:func:`fit_ddu` takes a trained classifier that the package did not build -- functional,
``Sequential`` or subclassed -- and where its features are (a layer name, a method name of a
subclassed model, or a features function), fits a feature-space detector
(:mod:`ddu_tf.density.detectors`) on a ``tf.data`` dataset of ``(x, y)`` batches, and returns a
:class:`DDUClassifier`: a ``keras.Model`` whose call returns a dict

* ``"logits"``: ``[batch, classes]``, the classifier's own output;
* ``"entropy"``: ``[batch]`` softmax entropy in nats (DDU's aleatoric score,
  :func:`ddu_tf.uncertainty.softmax_entropy`);
* ``"density"``: ``[batch]`` float64 detector score, higher = more in-distribution (DDU's
  epistemic score; for the default ``"gmm"`` the log-density ``logsumexp_c log q(z|c)`` of
  Mukhoti et al. 2021, in nats).

The detector's parameters are non-trainable weights of a :class:`DensityScore` layer, so the
wrapper saves and loads as one ``.keras`` file (``model.save`` / ``keras.models.load_model``)
and exports for serving (``model.export``) with identical scores.

Fitting streams the dataset: the Gaussian detectors merge per-batch float64 sufficient
statistics (:func:`ddu_tf.density.distributed_class_statistics`: memory
``O(classes * dim^2)``, per replica and merged exactly under a ``tf.distribute`` strategy);
the kNN detector keeps the L2-normalised features.

Example (a small CNN on Fashion-MNIST)::

    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(32, 3, activation="relu")(inputs)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    cnn = keras.Model(inputs, keras.layers.Dense(10)(h))
    ...  # cnn.compile(...); cnn.fit(train_ds)
    ddu = fit_ddu(cnn, train_ds, features="pool")      # density="shared_gaussian" / "knn"
    out = ddu(test_images)        # {"logits", "entropy", "density"}
    ddu.save("ddu.keras")         # keras.models.load_model("ddu.keras") after `import ddu_tf`
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ddu_tf import uncertainty
from ddu_tf.density import distributed_class_statistics, get_detector_class


@keras.saving.register_keras_serializable(package="ddu_tf")
class DensityScore(keras.layers.Layer):
    """A fitted feature detector as a layer: ``features [batch, dim] -> score [batch]``
    (float64, higher = more in-distribution).

    Args:
        kind: detector kind, a key of :data:`ddu_tf.density.DETECTORS`.
        state_shapes: name -> shape of the detector's state arrays (the weights).
        options: the detector's hyperparameters (``detector.config()``, e.g. ``{"k": 50}``).

    The weights are created with zeros at construction; :meth:`set_detector` assigns a
    fitted detector's state (``keras.models.load_model`` assigns the saved one).
    """

    def __init__(self, kind, state_shapes, options=None, **kwargs):
        kwargs.setdefault("dtype", "float64")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.detector_class = get_detector_class(kind)
        self.kind = kind
        self.state_shapes = {k: tuple(int(d) for d in v) for k, v in state_shapes.items()}
        self.options = dict(options or {})
        self.state_weights = {}
        for name, shape in sorted(self.state_shapes.items()):
            dtype = "float32" if name == "bank" else "float64"
            self.state_weights[name] = self.add_weight(
                name=name, shape=shape, dtype=dtype, initializer="zeros", trainable=False)
        self.built = True

    @classmethod
    def from_detector(cls, detector, **kwargs) -> "DensityScore":
        """A layer holding a fitted :class:`ddu_tf.density.FeatureDetector`."""
        state = detector.state()
        layer = cls(detector.kind, {k: v.shape for k, v in state.items()}, detector.config(),
                    **kwargs)
        layer.set_detector(detector)
        return layer

    def set_detector(self, detector):
        """Assign ``detector``'s state (same kind and shapes) to the weights."""
        state = detector.state()
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        if detector.kind != self.kind or shapes != self.state_shapes:
            raise ValueError(f"Expected a {self.kind!r} detector with state shapes "
                             f"{self.state_shapes}. Received: {detector.kind!r} with {shapes}.")
        for name, value in state.items():
            self.state_weights[name].assign(value)

    def call(self, features):
        state = {k: tf.convert_to_tensor(v) for k, v in self.state_weights.items()}
        return self.detector_class.score_state(state, features, **self.options)

    def compute_output_spec(self, features):
        return keras.KerasTensor(features.shape[:1], dtype="float64")

    def get_config(self):
        config = super().get_config()
        config.update({"kind": self.kind,
                       "state_shapes": {k: list(v) for k, v in self.state_shapes.items()},
                       "options": self.options})
        return config


def _is_graph_model(model) -> bool:
    """Functional or Sequential model with known symbolic inputs/outputs."""
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False


@keras.saving.register_keras_serializable(package="ddu_tf")
class DDUClassifier(keras.Model):
    """A classifier plus a fitted feature detector: ``x -> {"logits", "entropy", "density"}``.

    Build it with :func:`fit_ddu`. Args:
        classifier: the Keras classifier, ``x -> logits [batch, classes]``.
        features: where the ``[batch, dim]`` features are: the name of a layer of a functional
            or Sequential ``classifier`` (one forward pass gives features and logits), the name
            of a method of a subclassed ``classifier`` (``x -> features``; a second pass gives
            the logits), or a callable ``x -> features`` (a bound method of ``classifier`` is
            stored by name; any other callable works but cannot be saved).
        density: a :class:`DensityScore` layer (fitted).
        input_shape: shape of one input (without the batch axis); the model is built with it.
    """

    def __init__(self, classifier, features, density, input_shape, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.density = density
        self.input_shape_ = tuple(int(d) for d in input_shape)
        self._features_fn, self.features_name = None, None
        object.__setattr__(self, "_extractor", None)
        if callable(features) and not isinstance(features, str):
            if getattr(features, "__self__", None) is classifier:
                self.features_name = features.__name__
            self._features_fn = features
        elif isinstance(features, str):
            self.features_name = features
            layer_names = ([layer.name for layer in classifier.layers]
                           if _is_graph_model(classifier) else [])
            if features in layer_names:
                inputs = classifier.inputs[0] if len(classifier.inputs) == 1 \
                    else classifier.inputs
                # Not tracked: the weights are tracked (and saved) once, via classifier.
                object.__setattr__(self, "_extractor", keras.Model(
                    inputs, [classifier.get_layer(features).output, classifier.outputs[0]]))
            elif callable(getattr(classifier, features, None)):
                self._features_fn = getattr(classifier, features)
            else:
                raise ValueError(
                    f"Expected features to name a layer of a functional/Sequential classifier "
                    f"or a method of a subclassed one. Received: features={features!r}; layers "
                    f"{layer_names or 'unknown (subclassed model)'}.")
        else:
            raise ValueError("Expected features to be a layer name, a method name or a "
                             f"callable. Received: features={features!r}.")
        # One call on a zero input builds every part (a subclassed classifier included) and
        # records the input signature that ``model.export`` needs.
        self(tf.zeros([1, *self.input_shape_]))

    def features_and_logits(self, x, training=False):
        """``(features [batch, dim], logits [batch, classes])`` of ``x``."""
        if self._extractor is not None:
            features, logits = self._extractor(x, training=training)
        else:
            features = self._features_fn(x)
            logits = self.classifier(x, training=training)
        if features.shape.rank != 2:
            raise ValueError(f"Expected features of shape [batch, dim]. Received: "
                             f"{features.shape} from features={self.features_name or 'fn'}; "
                             "choose a layer after pooling/flattening.")
        return features, logits

    def call(self, x, training=False):
        features, logits = self.features_and_logits(x, training=False)
        return {"logits": logits,
                "entropy": uncertainty.softmax_entropy(logits),
                "density": self.density(features)}

    def get_config(self):
        if self.features_name is None:
            raise ValueError("Expected features given as a layer or method name to save a "
                             "DDUClassifier. Received a features function that is not a method "
                             "of the classifier; pass its name (features='embed') instead.")
        return {"name": self.name,
                "classifier": keras.saving.serialize_keras_object(self.classifier),
                "features": self.features_name,
                "density": keras.saving.serialize_keras_object(self.density),
                "input_shape": list(self.input_shape_)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        classifier = keras.saving.deserialize_keras_object(config.pop("classifier"),
                                                           custom_objects=custom_objects)
        density = keras.saving.deserialize_keras_object(config.pop("density"),
                                                        custom_objects=custom_objects)
        return cls(classifier, config.pop("features"), density, config.pop("input_shape"),
                   **config)


def _feature_fn(wrapper):
    return lambda x: wrapper.features_and_logits(x, training=False)[0]


def _dataset_fn(data):
    return lambda ctx: data.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)


def _gather_features(strategy, feature_fn, data):
    """All features ``[n, dim]`` (float32) of ``data``'s ``(x, y)`` batches, per replica and
    gathered (row order across replicas is not kept: the kNN bank is a set)."""
    dist = strategy.distribute_datasets_from_function(_dataset_fn(data))

    @tf.function
    def step(x):
        per_replica = strategy.run(lambda xb: tf.cast(feature_fn(xb), tf.float32), args=(x,))
        return strategy.gather(per_replica, axis=0)

    parts = [step(x).numpy() for x, _ in dist]
    if not parts:
        raise ValueError("Expected a dataset with at least one (x, y) batch. Received none.")
    return np.concatenate(parts)


def fit_ddu(classifier, data, *, features, density="gmm", num_classes=None, strategy=None,
            **options) -> DDUClassifier:
    """Wrap ``classifier`` and fit a feature detector on ``data``.

    Args:
        classifier: a trained Keras classifier ``x [batch, ...] -> logits [batch, classes]``
            (functional, Sequential or subclassed), built under ``strategy.scope()`` when a
            strategy is given.
        data: ``tf.data.Dataset`` of ``(x, y)`` batches (integer labels ``[batch]``), usually
            the training set without augmentation; under a strategy the batches are
            per replica.
        features: layer name, method name or callable (see :class:`DDUClassifier`).
        density: ``"gmm"`` (DDU's class-conditional Gaussians), ``"shared_gaussian"``
            (Mahalanobis) or ``"knn"`` (:mod:`ddu_tf.density.detectors`).
        num_classes: number of classes (default: the width of the classifier's logits).
        strategy: a ``tf.distribute.Strategy`` to shard the fit across replicas, or None.
        **options: detector options (``k`` for ``"knn"``, ``ladder`` for the Gaussians).

    Returns:
        A built :class:`DDUClassifier` (under ``strategy.scope()`` when given).
    """
    if not isinstance(data, tf.data.Dataset):
        raise ValueError("Expected data to be a tf.data.Dataset of (x, y) batches. Received: "
                         f"{type(data).__name__}; use tf.data.Dataset.from_tensor_slices("
                         "(x, y)).batch(256).")
    detector_class = get_detector_class(density)
    strategy = strategy or tf.distribute.get_strategy()
    x0 = next(iter(data))[0]
    if x0.shape.rank < 2:
        raise ValueError(f"Expected batched inputs [batch, ...]. Received: x.shape={x0.shape}; "
                         "call .batch() on the dataset.")
    with strategy.scope():
        placeholder = DensityScore("gmm", {"centre": [1], "weight": [1, 1], "offset": [1],
                                           "log_det": [1], "log_priors": [1]})
        wrapper = DDUClassifier(classifier, features, placeholder, x0.shape[1:])
    if num_classes is None:
        num_classes = int(wrapper.features_and_logits(x0[:1])[1].shape[-1])
    feature_fn = _feature_fn(wrapper)
    if detector_class.fitted_on == "statistics":
        stats = distributed_class_statistics(strategy, feature_fn, _dataset_fn(data),
                                             num_classes)
        detector = detector_class.from_statistics(stats, **options)
    else:
        detector = detector_class.from_features(_gather_features(strategy, feature_fn, data),
                                                **options)
    with strategy.scope():
        return DDUClassifier(classifier, features, DensityScore.from_detector(detector),
                             x0.shape[1:])


__all__ = ["DDUClassifier", "DensityScore", "fit_ddu"]
