"""Everything that runs under ``tf.distribute``: strategies (ddu_tf.distribute), the
trainer's split batches, the sharded predictor, the distributed GMM statistics.

Multi-device checks run in subprocesses (``tests/distribute_worker.py``), since the logical
CPU devices and the multi-worker collectives must be configured before TensorFlow
initialises: 2 logical CPUs under MirroredStrategy (2 replicas), and 2 localhost workers
(TF_CONFIG, free 127.0.0.1 ports) under MultiWorkerMirroredStrategy. Each compares with the
single-device result computed in the same process from the same weights and data.
The in-process tests use the default strategy (one replica, the same code path).
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from ddu_tf import distribute
from ddu_tf.active_learning import CompiledTrainer
from ddu_tf.density import (ClassConditionalGaussians, ClassStatistics,
                            distributed_class_statistics)
from experiment_scripts import subprocess_env

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distribute_worker.py")
TIMEOUT = 600  # seconds per worker process (the CI machine is shared and slow)


# ----------------------------------------------------------------------------- in-process
def test_get_strategy_default_and_errors(monkeypatch):
    assert distribute.get_strategy("default") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="name='horovod'"):
        distribute.get_strategy("horovod")
    with pytest.raises(ValueError, match="devices"):
        distribute.get_strategy("default", devices=["/cpu:0"])
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG unset"):
        distribute.get_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG to be JSON"):
        distribute.get_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {}}))
    with pytest.raises(ValueError, match="'cluster' and 'task'"):
        distribute.get_strategy("multiworker")
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(ValueError, match="tpu=None"):
        distribute.get_strategy("tpu")


def test_strategy_argument():
    parser = distribute.add_strategy_argument(argparse.ArgumentParser())
    args = parser.parse_args([])
    assert (args.strategy, args.tpu) == ("default", None)
    assert parser.parse_args(["--strategy", "mirrored"]).strategy == "mirrored"
    with pytest.raises(SystemExit):
        parser.parse_args(["--strategy", "gpus"])
    assert distribute.strategy_from_args(args) is tf.distribute.get_strategy()
    assert distribute.is_chief(tf.distribute.get_strategy())
    assert distribute.worker_directory(tf.distribute.get_strategy(), "out") == "out"


def test_distributed_class_statistics_default_strategy():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(41, 4)) + 1e3).astype(np.float64)
    y = np.arange(41) % 3

    def dataset_fn(context):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(6)

    stats = distributed_class_statistics(tf.distribute.get_strategy(), lambda f: f,
                                         dataset_fn, 3)
    gmm = ClassConditionalGaussians.from_statistics(stats)
    ref = ClassConditionalGaussians.fit(x, y, 3)
    np.testing.assert_array_equal(stats.counts.numpy(), np.bincount(y))
    np.testing.assert_allclose(gmm.means.numpy(), ref.means.numpy(), rtol=1e-14)
    np.testing.assert_allclose(gmm.covariances.numpy(), ref.covariances.numpy(), rtol=1e-10)
    assert gmm.jitter == ref.jitter
    with pytest.raises(ValueError, match="num_classes"):
        distributed_class_statistics(tf.distribute.get_strategy(), lambda f: f, dataset_fn, 0)
    with pytest.raises(ValueError, match="empty dataset"):
        distributed_class_statistics(tf.distribute.get_strategy(), lambda f: f,
                                     lambda c: dataset_fn(c).take(0), 3)
    assert isinstance(stats, ClassStatistics)


def test_trainer_step_under_a_strategy_equals_plain_step():
    """The trainer's strategy path (``strategy.run`` + the optimiser's all-reduce) with one
    replica takes the step of a plain Keras step on the same batch."""
    import keras

    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 4)).astype(np.float32)
    y = np.arange(7) % 3

    def build():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])

    trainer = CompiledTrainer(build, epochs=1, batch_size=7, strategy=tf.distribute.get_strategy(),
                              optimizer=lambda: keras.optimizers.SGD(0.1))
    loss = trainer.fit(x, y, seed=0)
    keras.utils.set_random_seed(0)
    reference = build()
    with tf.GradientTape() as tape:
        ref_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            y, reference(x, training=True))
    grads = tape.gradient(ref_loss, reference.trainable_variables)
    keras.optimizers.SGD(0.1).apply_gradients(zip(grads, reference.trainable_variables))
    np.testing.assert_allclose(loss, float(ref_loss), rtol=1e-6)
    for got, want in zip(trainer.model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="labels"):
        trainer.fit(x, y[:3], seed=0)


# ----------------------------------------------------------------------------- subprocesses
def _check(path, fit=True):
    """Distributed results of one worker file equal its single-device results."""
    data = np.load(path)
    assert int(data["num_replicas"]) == 2
    weights = [k for k in data.files if re.fullmatch(r"ref/weight\d+", k)]
    assert len(weights) == (12 if fit else 0)  # 2 SN layers x (u, v, sigma, W, b) + dense
    for key in weights:  # one model.fit step: the SN state and the parameters
        np.testing.assert_allclose(data["dist/" + key[4:]], data[key], rtol=1e-5, atol=1e-7,
                                   err_msg=key)
    trained = [k for k in data.files if re.fullmatch(r"ref/trainer\d+", k)]
    assert len(trained) == 12
    for key in trained + ["ref/trainer_loss"]:  # 2 epochs of the compiled trainer
        # float32 gradients summed over 2 replicas vs one batch: rounding of order 1e-6
        np.testing.assert_allclose(data["dist/" + key[4:]], data[key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)
    np.testing.assert_array_equal(data["dist/gmm_counts"], data["ref/gmm_counts"])
    assert data["dist/gmm_jitter"] == data["ref/gmm_jitter"]
    np.testing.assert_allclose(data["dist/gmm_means"], data["ref/gmm_means"], rtol=1e-13)
    np.testing.assert_allclose(data["dist/gmm_covariances"], data["ref/gmm_covariances"],
                               rtol=1e-9, atol=1e-12)
    for key in ("pool_features", "pool_logits", "ds_logits"):  # same chunks: same kernels
        np.testing.assert_allclose(data["dist/" + key], data["ref/" + key], rtol=1e-6,
                                   atol=1e-7, err_msg=key)
    np.testing.assert_array_equal(data["dist/ds_labels"], data["ref/ds_labels"])
    np.testing.assert_allclose(data["dist/net_gmm_log_density"], data["ref/net_gmm_log_density"],
                               rtol=1e-6)
    np.testing.assert_allclose(data["dist/bald"], data["ref/bald"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data["dist/bald_consistent"], data["ref/bald_consistent"],
                               rtol=1e-5, atol=1e-6)


def test_mirrored_two_logical_cpus(tmp_path):
    out = tmp_path / "mirrored.npz"
    result = subprocess.run([sys.executable, WORKER, "mirrored", str(out)], env=subprocess_env(),
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-4000:]
    _check(out)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # ~40 s: two worker processes; the 2-replica mirrored tests stay in make test
def test_multiworker_two_localhost_workers(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        log = open(tmp_path / f"worker{index}.log", "w")
        processes.append((subprocess.Popen(
            [sys.executable, WORKER, "multiworker", str(tmp_path / f"worker{index}.npz")],
            env=subprocess_env(TF_CONFIG=json.dumps(config)), stdout=log, stderr=subprocess.STDOUT), log))
    try:
        codes = [p.wait(timeout=TIMEOUT) for p, _ in processes]
    finally:
        for process, log in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
    assert codes == [0, 0], logs
    for index in range(2):
        _check(tmp_path / f"worker{index}.npz", fit=False)


# ----------------------------------------------------------------------------- evaluate.py
@pytest.mark.slow  # ~22 s; test_evaluate.py::test_cli_sharded_code_path_matches_default keeps the path
def test_evaluate_cli_with_two_replicas_matches_default(tmp_path, two_replicas):
    """``--strategy mirrored`` on 2 logical CPUs (sharded passes, distributed GMM statistics)
    gives the single-device metrics."""
    single = evaluate_cli_under(str(tmp_path / "single"), "default")
    mirrored = two_replicas("test_evaluate:evaluate_cli_under", str(tmp_path / "mirrored"),
                            "mirrored")
    assert mirrored["replicas"] == 2 and mirrored["info"]["strategy"] == "mirrored"
    for key, value in single["mean"].items():
        assert mirrored["mean"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


from test_evaluate import evaluate_cli_under  # noqa: E402
