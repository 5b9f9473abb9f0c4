"""``tf.distribute`` strategies for the experiment scripts: creation by name and the
``--strategy {default,mirrored,multiworker,tpu}`` flag.

Create the strategy FIRST (before any other TensorFlow op: ``MultiWorkerMirroredStrategy``
must configure the collective ops at program start), then build the model, the SN wrapper's
state and the optimiser under ``strategy.scope()``. Batch sizes are GLOBAL: a step splits
each batch across the ``strategy.num_replicas_in_sync`` replicas and all-reduces (sums) the
gradients of the batch-mean loss, so one step equals a single-device step on the same global
batch (BatchNorm statistics excepted: they are computed per replica unless the layer is
``synchronized=True``).

What runs under a strategy lives with what it computes:

* training: ``model.fit`` (``experiments/train.py``; Keras 3's ``fit`` does not support
  ``MultiWorkerMirroredStrategy``, keras-team/keras#20585) and
  :class:`ddu_tf.active_learning.CompiledTrainer` (``strategy=``; a custom loop);
* inference: :class:`ddu_tf.inference.Predictor` / ``MCDropoutPredictor`` (``strategy=``:
  work sharded across replicas with the single-device results);
* DDU's GMM statistics: :func:`ddu_tf.density.distributed_class_statistics`.

Example::

    strategy = get_strategy("mirrored")          # all local GPUs (the CPU(s) if none)
    with strategy.scope():
        model = get_model("resnet18", num_classes=10, spectral_normalization=True, mod=True)
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
"""Names accepted by :func:`get_strategy` and the ``--strategy`` flag."""


# ----------------------------------------------------------------------------- strategies
def _check_tf_config():
    """Parse ``TF_CONFIG`` for a multi-worker run; ValueError with an example when unusable."""
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "Expected the TF_CONFIG environment variable for --strategy multiworker. Received: "
            f"TF_CONFIG unset. Set it on every worker, e.g. {example} (index = this worker), "
            "or pass cluster_resolver=.")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"Expected TF_CONFIG to be JSON. Received: TF_CONFIG={raw!r} "
                         f"({error}). Example: {example}") from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise ValueError("Expected TF_CONFIG with 'cluster' and 'task' keys. Received: "
                         f"TF_CONFIG={raw!r}. Example: {example}")
    return config


def get_strategy(name="default", *, devices=None, tpu=None, cluster_resolver=None):
    """A ``tf.distribute.Strategy`` by name.

    Args:
      name: one of :data:`STRATEGIES`:
        ``"default"`` -- ``tf.distribute.get_strategy()``, the no-op single-device strategy;
        ``"mirrored"`` -- ``tf.distribute.MirroredStrategy(devices)``: synchronous data
        parallelism over the GPUs of this machine (all visible GPUs by default; when there is
        none, the logical CPU devices if the CPU was split into several with
        ``tf.config.set_logical_device_configuration``, else the CPU);
        ``"multiworker"`` -- ``tf.distribute.MultiWorkerMirroredStrategy``: synchronous data
        parallelism over several machines, configured by the ``TF_CONFIG`` environment
        variable (or ``cluster_resolver``); must be created before any other TF op;
        ``"tpu"`` -- ``tf.distribute.TPUStrategy`` on the TPU named by ``tpu`` (or
        ``$TPU_NAME``; ``"local"`` on a Cloud TPU VM).
      devices: device strings for ``"mirrored"`` (e.g. ``["/gpu:0", "/gpu:1"]``).
      tpu: TPU name or ``grpc://host:port`` address for ``"tpu"``.
      cluster_resolver: a ``tf.distribute.cluster_resolver.ClusterResolver`` for
        ``"multiworker"`` (e.g. ``SlurmClusterResolver()``) instead of ``TF_CONFIG``.

    Returns:
      The strategy; ``strategy.num_replicas_in_sync`` is the number of replicas.

    Raises:
      ValueError: unknown ``name``; ``devices`` given for a strategy other than mirrored;
        ``"multiworker"`` without a usable ``TF_CONFIG``; ``"tpu"`` without an address or
        when the TPU cannot be reached.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy. Expected one of {STRATEGIES}. Received: name={name!r}")
    if devices is not None and name != "mirrored":
        raise ValueError("Expected devices only with name='mirrored'. Received: "
                         f"devices={devices!r} with name={name!r}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if devices is None and not tf.config.list_logical_devices("GPU"):
            cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
            devices = cpus if len(cpus) > 1 else None  # CPU split into logical devices
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        if cluster_resolver is None:
            _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster_resolver)
    address = tpu if tpu is not None else os.environ.get("TPU_NAME")
    if not address:
        raise ValueError(
            "Expected a TPU address for --strategy tpu. Received: tpu=None and TPU_NAME unset. "
            "Pass --tpu local on a Cloud TPU VM, or the TPU name / grpc://host:port.")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise ValueError(f"Expected a reachable TPU. Received: tpu={address!r}, which failed "
                         f"with {type(error).__name__}: {error}") from error
    return tf.distribute.TPUStrategy(resolver)


def add_strategy_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--strategy {default,mirrored,multiworker,tpu}`` and ``--tpu`` to a CLI parser.

    Use :func:`strategy_from_args` on the parsed namespace. Returns ``parser``.
    """
    parser.add_argument(
        "--strategy", default="default", choices=STRATEGIES,
        help="tf.distribute strategy: default (one device), mirrored (all local GPUs), "
             "multiworker (machines listed in TF_CONFIG) or tpu. Batch sizes are global "
             "(split across replicas).")
    parser.add_argument("--tpu", default=None,
                        help="TPU name or grpc://host:port for --strategy tpu ('local' on a "
                             "Cloud TPU VM; default $TPU_NAME)")
    return parser


def strategy_from_args(args):
    """The strategy chosen by the flags of :func:`add_strategy_argument`."""
    return get_strategy(args.strategy, tpu=getattr(args, "tpu", None))


def is_chief(strategy) -> bool:
    """Whether this process should write outputs (always True except on non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def worker_directory(strategy, directory: str) -> str:
    """``directory`` on the chief; a private temporary directory on other workers.

    Every worker of a multi-worker run executes the same program, including
    ``model.save`` and the checkpoint / TensorBoard callbacks; pointing the non-chief
    workers elsewhere keeps them from overwriting the chief's files.
    """
    if is_chief(strategy):
        return directory
    task = strategy.cluster_resolver
    return tempfile.mkdtemp(prefix=f"ddu_tf_{task.task_type}{task.task_id}_")


__all__ = ["STRATEGIES", "add_strategy_argument", "get_strategy", "is_chief",
           "strategy_from_args", "worker_directory"]
