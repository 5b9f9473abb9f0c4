"""Cost of DDU's soft spectral normalisation: ResNet-18 train step with and without SN.

Builds ``ddu_tf.models.get_model("resnet18", input_shape=(28, 28, 1), mod=...)`` twice, with
``spectral_normalization=False`` and ``True`` (operator SN on every 3x3 conv, one power
iteration per training step), compiles both the same way and times ``train_on_batch`` on one
fixed random batch. The two models' steps are interleaved (plain, SN, plain, SN, ...) so
that load from other processes hits both alike; warm-up steps (tracing, compilation) are
excluded and the median over ``--steps`` steps is reported, in wall time and in process CPU
time (less sensitive to other processes on a shared machine), with the ratio (target
<= 1.3). Also timed: inference (``predict_on_batch``; SN does no power iteration there, so
its ratio should be close to 1) and the SN-only work of a training step (power iteration
and sigma of every wrapped layer, one compiled function), as a fraction of a plain step.

Usage:
    python bench/sn_overhead.py [--batch-size 128] [--steps 10] [--warmup 2] [--mod] [--jit]
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ddu_tf.layers import SpectralNormalization  # noqa: E402
from ddu_tf.models import get_model  # noqa: E402


def build(spectral_normalization, mod, jit):
    model = get_model("resnet18", num_classes=10, input_shape=(28, 28, 1),
                      spectral_normalization=spectral_normalization, mod=mod)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    return model


def time_call(fn):
    """(wall seconds, process CPU seconds over all threads) of one call of ``fn``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--mod", action="store_true", help="the -mod ResNet (LeakyReLU, "
                        "average-pool shortcuts); default: 1x1-conv shortcuts")
    parser.add_argument("--jit", action="store_true", help="compile with XLA")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=(args.batch_size,)).astype("int32")
    models = {"plain": build(False, args.mod, args.jit), "sn": build(True, args.mod, args.jit)}
    sn_layers = [layer for layer in models["sn"].layers
                 if isinstance(layer, SpectralNormalization)]
    # The SN-only work of one training step: power iteration + sigma for every layer.
    sn_only = tf.function(lambda: [layer.normalized_kernel(training=True)
                                   for layer in sn_layers], jit_compile=args.jit)
    runs = {"train": lambda m: m.train_on_batch(x, y), "infer": lambda m: m.predict_on_batch(x)}
    times = {(kind, key): [] for kind in runs for key in models}
    times["sn_only", "sn"] = []
    for i in range(args.warmup + args.steps):
        for key, model in models.items():
            for kind, run in runs.items():
                t = time_call(lambda: run(model))
                if i >= args.warmup:
                    times[kind, key].append(t)
        t = time_call(sn_only)
        if i >= args.warmup:
            times["sn_only", "sn"].append(t)

    def med(kind, key, which):
        return statistics.median(t[which] for t in times[kind, key])

    print(f"ResNet-18 on 28x28x1, batch {args.batch_size}, mod={args.mod}, jit={args.jit}, "
          f"{len(sn_layers)} SN-wrapped layers, median of {args.steps} steps "
          f"(after {args.warmup} warm-up), interleaved; wall and process-CPU time")
    for which, label in ((0, "wall"), (1, "cpu ")):
        for kind in runs:
            plain, sn = med(kind, "plain", which), med(kind, "sn", which)
            target = "   (target <= 1.3)" if kind == "train" else ""
            print(f"{label} {kind:5s} without SN: {plain * 1e3:8.1f} ms   with SN: "
                  f"{sn * 1e3:8.1f} ms   ratio: {sn / plain:.3f}{target}")
        print(f"{label} SN state update alone (all layers): "
              f"{med('sn_only', 'sn', which) * 1e3:8.1f} ms = "
              f"{med('sn_only', 'sn', which) / med('train', 'plain', which):.3f} of a plain "
              "train step")


if __name__ == "__main__":
    main()
