"""Cost of DDU's soft spectral normalisation: ResNet-18 train step with and without SN.

Builds ``ddu_tf.models.get_model("resnet18", input_shape=(28, 28, 1), mod=...)`` twice, with
``spectral_normalization=False`` (the reference) and ``True`` (coeff 3, operator SN on every
3x3 conv, one power iteration per training step), compiles both with DDU's optimiser
(``ddu_tf.training.make_optimizer("sgd")``: TorchSGD, lr 0.1, momentum 0.9, coupled decay
5e-4) and times ``train_on_batch`` on one fixed random batch. The two models' steps are
interleaved (plain, SN, plain, SN, ...) so that load from other processes hits both alike;
warm-up steps (tracing, compilation) are not timed. Also timed: inference
(``predict_on_batch``; SN does no power iteration there) and the SN-only work of a
training step (power iteration and sigma of every wrapped layer, one compiled function).

FLOP bound: 3 x the forward Conv/Dense FLOPs (``ddu_tf.active_learning.model_flops`` of
the plain model, the same convolutions as the SN one) x batch, at the float32 matmul peak
measured in the same run.

Usage:
    python bench/sn_overhead.py [--batch-size 128] [--steps 3] [--warmup 1] [--no-mod] [--jit]

Writes ``results/bench/sn_overhead.json``.
"""
import argparse

import common  # bench/common.py: puts this checkout first on sys.path

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ddu_tf.active_learning import model_flops  # noqa: E402
from ddu_tf.layers import SpectralNormalization  # noqa: E402
from ddu_tf.models import get_model  # noqa: E402
from ddu_tf.training import make_optimizer  # noqa: E402


def build(spectral_normalization, mod, jit):
    model = get_model("resnet18", num_classes=10, input_shape=(28, 28, 1),
                      spectral_normalization=spectral_normalization, coeff=3.0, mod=mod)
    model.compile(optimizer=make_optimizer("sgd", lr=0.1, momentum=0.9, weight_decay=5e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model")
    parser.add_argument("--no-mod", dest="mod", action="store_false",
                        help="plain ResNet (ReLU, 1x1-conv shortcuts); default: -mod "
                             "(LeakyReLU, average-pool shortcuts), as DDU's SN runs")
    parser.add_argument("--jit", action="store_true", help="compile with XLA")
    args = parser.parse_args(argv)
    machine = common.machine_info()
    peaks = common.matmul_peaks()

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=(args.batch_size,)).astype("int32")
    plain, sn = build(False, args.mod, args.jit), build(True, args.mod, args.jit)
    sn_layers = [layer for layer in sn.layers if isinstance(layer, SpectralNormalization)]
    # The SN-only work of one training step: power iteration + sigma for every layer.
    sn_only = tf.function(lambda: [layer.normalized_kernel(training=True)
                                   for layer in sn_layers], jit_compile=args.jit)
    timings = common.time_interleaved({
        "train_plain": lambda: plain.train_on_batch(x, y),
        "train_sn": lambda: sn.train_on_batch(x, y),
        "infer_plain": lambda: plain.predict_on_batch(x),
        "infer_sn": lambda: sn.predict_on_batch(x),
        "sn_only": lambda: [k.numpy() for k in sn_only()],
    }, args.steps, warmup=args.warmup)
    forward = model_flops(plain)
    layout = f"ResNet-18{'-mod' if args.mod else ''}, 28x28x1, batch {args.batch_size}"
    overhead = timings["train_sn"]["wall_s"]["min"] / timings["train_plain"]["wall_s"]["min"]
    cpu_overhead = timings["train_sn"]["cpu_s"]["min"] / timings["train_plain"]["cpu_s"]["min"]
    infer = timings["infer_sn"]["wall_s"]["min"] / timings["infer_plain"]["wall_s"]["min"]
    sn_share = timings["sn_only"]["wall_s"]["min"] / timings["train_plain"]["wall_s"]["min"]
    rows = [
        common.row(f"{layout}: train step with SN (coeff 3) vs without", "with SN",
                   timings["train_sn"], "without SN", timings["train_plain"],
                   3 * forward * args.batch_size, peaks["float32"],
                   note=f"SN overhead {overhead:.3f}x wall, {cpu_overhead:.3f}x CPU time "
                        "(target <= 1.3)"),
        common.row(f"{layout}: inference with SN vs without", "with SN", timings["infer_sn"],
                   "without SN", timings["infer_plain"], forward * args.batch_size,
                   peaks["float32"], note=f"ratio {infer:.3f}x"),
    ]
    print(f"{len(sn_layers)} SN-wrapped layers; SN state update alone "
          f"{timings['sn_only']['wall_s']['min'] * 1e3:.1f} ms = {sn_share:.3f} of a plain step")
    common.write_result("sn_overhead", {
        "config": vars(args), "sn_layers": len(sn_layers), "forward_flop_per_image": forward,
        "train_overhead_wall": overhead, "train_overhead_cpu": cpu_overhead,
        "inference_ratio_wall": infer, "sn_update_share_of_plain_step": sn_share,
        "timings": timings, "rows": rows}, machine, peaks, argv)


if __name__ == "__main__":
    main()
