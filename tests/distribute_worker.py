"""Worker process of tests/test_distribute.py: distributed results next to single-device ones.

Run as ``python tests/distribute_worker.py {mirrored,multiworker} OUT.npz``:

* ``mirrored``: splits the CPU into 2 logical devices (before TensorFlow initialises) and
  uses ``get_strategy("mirrored")``, i.e. ``MirroredStrategy`` over both;
* ``multiworker``: ``MultiWorkerMirroredStrategy`` configured by ``TF_CONFIG`` (one CPU
  replica per process); every worker runs the same program.

The same process also computes every result on one device, on the same initial weights and
data, and writes both to ``OUT.npz`` (keys ``ref/...`` and ``dist/...``) with the number of
replicas, so the test compares them:

1. one ``model.fit`` step (TorchSGD, global batch 8) of a small SN conv net built under
   ``strategy.scope()``: all weights, including the SN state ``u``, ``v``, ``sigma`` (not in
   multi-worker mode: Keras 3's ``fit`` does not support MultiWorkerMirroredStrategy);
2. two epochs of :class:`ddu_tf.active_learning.CompiledTrainer` (TorchAdam with coupled
   decay plus an L2 penalty on the classifier; 8 examples in batches of 5 + 3, each split
   over the replicas: 2 + 3 and 1 + 2 rows);
3. DDU's GMM from :func:`ddu_tf.density.distributed_class_statistics` (uneven shards,
   float64 features with a large common offset, so that only the statistics can differ) vs
   ``ClassConditionalGaussians.fit``;
4. a sharded :class:`ddu_tf.inference.Predictor`: pool features and logits, dataset logits
   and labels, and :func:`ddu_tf.inference.fit_gmm` on a dataset, vs one device;
5. MC-dropout BALD scores of an SN + dropout net, ``MCDropoutPredictor(strategy=...)`` vs
   one device, with per-example masks and with consistent masks (folded into the kernel).
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_CLASSES = 3
INPUT_SHAPE = (6, 6, 1)
POOL_SIZE = 37
GMM_SIZE = 50
OFFSET = 100.0


def make_strategy(mode):
    """The strategy of ``mode``; for "mirrored", 2 logical CPUs are configured first."""
    from ddu_tf.distribute import get_strategy

    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        return get_strategy("mirrored")
    if mode == "multiworker":
        return get_strategy("multiworker")
    raise ValueError(f"Expected mode 'mirrored' or 'multiworker'. Received: mode={mode!r}")


def sn_model(dropout=False):
    """Small SN conv net ``[b, 6, 6, 1] -> [b, 3]`` with a ``"features"`` layer ``[b, 8]``."""
    import keras

    from ddu_tf.layers import SpectralNormalization

    inputs = keras.Input(INPUT_SHAPE)
    x = SpectralNormalization(keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                              coeff=0.5)(inputs)
    x = keras.layers.Flatten()(x)
    x = SpectralNormalization(keras.layers.Dense(8, activation="tanh"), coeff=0.5,
                              name="features")(x)
    if dropout:
        x = keras.layers.Dropout(0.5)(x)
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, name="logits")(x))


def training_step(strategy, initial_weights, x, y):
    """Weights after one ``fit`` step on the global batch ``(x, y)`` under ``strategy``."""
    from ddu_tf import training

    with strategy.scope():
        model = sn_model()
        model.set_weights(initial_weights)
        training.compile_model(model, training.make_optimizer("sgd", lr=0.1, momentum=0.9,
                                                              weight_decay=5e-4))
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
    model.fit(data, epochs=1, verbose=0)
    return model, [np.asarray(w) for w in model.get_weights()]


def run(strategy, prefix, out, models, data, use_fit=True):
    """All checks under ``strategy`` (None: one device); results in ``out`` under ``prefix/``.

    ``use_fit=False`` skips the ``model.fit`` check: Keras 3's ``fit`` fails under
    ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), so multi-worker training goes
    through :class:`ddu_tf.active_learning.CompiledTrainer`.
    """
    import keras

    from ddu_tf.active_learning import CompiledTrainer, PermutationSampler, get_acquisition
    from ddu_tf.density import ClassConditionalGaussians, distributed_class_statistics
    from ddu_tf.inference import MCDropoutPredictor, Predictor, fit_gmm
    from ddu_tf.training import TorchAdam

    x_train, y_train, x_gmm, y_gmm, pool = data
    if use_fit:
        model, weights = training_step(strategy or tf.distribute.get_strategy(),
                                       models["initial"], x_train, y_train)
        for i, w in enumerate(weights):
            out[f"{prefix}/weight{i}"] = w
        out[f"{prefix}/weight_names"] = np.array([w.path for w in model.weights])

    # The active-learning trainer: TorchAdam + an L2 penalty, uneven splits of the batches.
    trainer = CompiledTrainer(sn_model, epochs=2, batch_size=5, decay_layers=["logits"],
                              optimizer=lambda: TorchAdam(1e-2, coupled_weight_decay=5e-4),
                              sampler=PermutationSampler(), strategy=strategy)
    out[f"{prefix}/trainer_loss"] = np.float64(
        trainer.fit(x_train, y_train, seed=3, weight_decay=0.05))
    for i, w in enumerate(trainer.model.get_weights()):
        out[f"{prefix}/trainer{i}"] = np.asarray(w)

    projection = tf.constant(models["projection"])

    def feature_fn(x):
        # float64 features with a large common offset: any difference from the reference
        # comes from the distributed statistics, not from float32 kernels.
        flat = tf.reshape(tf.cast(x, tf.float64), [-1, int(np.prod(INPUT_SHAPE))])
        return tf.matmul(flat, projection) + OFFSET

    if strategy is None:
        features = np.concatenate([feature_fn(x_gmm[i:i + 8]).numpy()
                                   for i in range(0, GMM_SIZE, 8)])
        gmm = ClassConditionalGaussians.fit(features, y_gmm, NUM_CLASSES)
    else:
        def dataset_fn(context):
            ds = tf.data.Dataset.from_tensor_slices((x_gmm, y_gmm)).batch(8)
            return ds.shard(context.num_input_pipelines, context.input_pipeline_id)

        stats = distributed_class_statistics(strategy, feature_fn, dataset_fn, NUM_CLASSES)
        gmm = ClassConditionalGaussians.from_statistics(stats)
    out[f"{prefix}/gmm_means"] = gmm.means.numpy()
    out[f"{prefix}/gmm_covariances"] = gmm.covariances.numpy()
    out[f"{prefix}/gmm_counts"] = gmm.counts.numpy()
    out[f"{prefix}/gmm_jitter"] = np.float64(gmm.jitter)

    # The one predictor, sharded: pool passes, a dataset pass, the GMM from a dataset.
    with (strategy or tf.distribute.get_strategy()).scope():
        net = sn_model()
        net.set_weights(models["initial"])
    predictor = Predictor(net, chunk_size=8, strategy=strategy)
    features, logits = predictor.features_and_logits(pool)
    out[f"{prefix}/pool_features"], out[f"{prefix}/pool_logits"] = features, logits
    ds = tf.data.Dataset.from_tensor_slices((x_gmm, y_gmm)).batch(8)
    out[f"{prefix}/ds_logits"], out[f"{prefix}/ds_labels"] = predictor.dataset_logits(ds)
    net_gmm = fit_gmm(predictor, ds, NUM_CLASSES)
    out[f"{prefix}/net_gmm_log_density"] = net_gmm.log_density(
        np.asarray(features, np.float64)).numpy()

    with (strategy or tf.distribute.get_strategy()).scope():
        mc_model = sn_model(dropout=True)
        mc_model.set_weights(models["mc"])
    mc = MCDropoutPredictor(mc_model, num_samples=5, seed=7, chunk_size=4, strategy=strategy)
    out[f"{prefix}/bald"] = mc.reduce(pool, get_acquisition("bald")).numpy()
    # consistent masks: the dropout is folded into the logits' kernel (built per replica)
    folded = MCDropoutPredictor(mc_model, num_samples=5, seed=7, chunk_size=4,
                                consistent_masks=True, strategy=strategy)
    assert len(folded._folds) == 1
    out[f"{prefix}/bald_consistent"] = folded.reduce(pool, get_acquisition("bald")).numpy()
    keras.backend.clear_session()


def main(mode, path):
    strategy = make_strategy(mode)
    import keras

    rng = np.random.default_rng(0)
    x_train = rng.normal(size=(8, *INPUT_SHAPE)).astype(np.float32)
    y_train = np.arange(8) % NUM_CLASSES
    x_gmm = rng.normal(size=(GMM_SIZE, *INPUT_SHAPE)).astype(np.float32)
    y_gmm = np.arange(GMM_SIZE) % NUM_CLASSES
    pool = rng.normal(size=(POOL_SIZE, *INPUT_SHAPE)).astype(np.float32)
    keras.utils.set_random_seed(1)
    models = {"initial": [np.asarray(w) for w in sn_model().get_weights()],
              "mc": [np.asarray(w) for w in sn_model(dropout=True).get_weights()]}
    models["projection"] = rng.normal(size=(int(np.prod(INPUT_SHAPE)), 8))
    data = (x_train, y_train, x_gmm, y_gmm, pool)
    out = {"num_replicas": np.int64(strategy.num_replicas_in_sync)}
    use_fit = mode != "multiworker"
    run(None, "ref", out, models, data, use_fit)
    run(strategy, "dist", out, models, data, use_fit)
    np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
