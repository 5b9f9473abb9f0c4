"""Benchmark: training throughput (images/s) of DDU's ResNet-18 + SN + mod train step.

Four ddu_tf configurations of one train step (28x28x1 images, batch 128, 10 classes,
``get_model("resnet18", spectral_normalization=True, coeff=3, mod=True)``, DDU's optimiser
``ddu_tf.training.make_optimizer("sgd")`` = TorchSGD lr 0.1, momentum 0.9, coupled decay
5e-4, ``train_on_batch`` on a fixed random batch):

- float32 and ``mixed_bfloat16`` (Keras global policy when the model is built),
- each without and with XLA (``compile(jit_compile=...)``),

against a PyTorch CPU ResNet-18-mod of the same layout in the same run (stem 3x3 conv 64,
BasicBlocks [2, 2, 2, 2] with 64/128/256/512 planes, BatchNorm, LeakyReLU(0.01),
average-pool + zero-channel shortcuts, global average pool, linear; soft spectral
normalisation ``W / max(1, sigma / 3)`` of every conv with one power iteration per
training forward on the reshaped ``[out, in * k * k]`` kernel, via
``torch.nn.utils.parametrize``; ``torch.optim.SGD`` with the same settings). All five are
timed interleaved after warm-up steps (tracing, XLA compilation).

FLOP bound: 3 x the forward Conv/Dense FLOPs per image (``model_flops`` of the same
layout without SN) x batch, at the float32 matmul peak measured in the same run (also
used for bfloat16: this bound is what the hardware does in float32).

Usage: ``python bench/train_throughput.py [--steps 2 --bf16-steps 1 --warmup 1]``.
Writes ``results/bench/train_throughput.json``.
"""
import argparse
import os

import common  # bench/common.py: puts this checkout first on sys.path

import keras  # noqa: E402
import numpy as np  # noqa: E402

from ddu_tf.active_learning import model_flops  # noqa: E402
from ddu_tf.models import get_model  # noqa: E402
from ddu_tf.training import make_optimizer  # noqa: E402

CONFIGS = (("float32", False), ("float32", True), ("mixed_bfloat16", False),
           ("mixed_bfloat16", True))


def build_keras(policy, jit, batch_size):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = get_model("resnet18", num_classes=10, input_shape=(28, 28, 1),
                          spectral_normalization=True, coeff=3.0, mod=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(optimizer=make_optimizer("sgd", lr=0.1, momentum=0.9, weight_decay=5e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    return model


def torch_resnet18_mod(num_classes=10, coeff=3.0):
    """PyTorch ResNet-18-mod with soft SN on every conv, the layout of ddu_tf's."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.nn.utils import parametrize

    class SoftSpectralNorm(nn.Module):
        """``W / max(1, sigma / coeff)`` with one power iteration per training call."""

        def __init__(self, weight):
            super().__init__()
            rows = weight.shape[0]
            self.register_buffer("u", F.normalize(torch.randn(rows), dim=0))

        def forward(self, weight):
            matrix = weight.reshape(weight.shape[0], -1)
            if self.training:
                with torch.no_grad():
                    v = F.normalize(matrix.t() @ self.u, dim=0)
                    self.u.copy_(F.normalize(matrix @ v, dim=0))
            v = F.normalize(matrix.t() @ self.u, dim=0).detach()
            sigma = self.u @ matrix @ v
            return weight / torch.clamp(sigma / coeff, min=1.0)

    def conv(c_in, c_out, stride):
        layer = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        parametrize.register_parametrization(layer, "weight", SoftSpectralNorm(layer.weight))
        return layer

    class Shortcut(nn.Module):
        def __init__(self, stride, c_in, c_out):
            super().__init__()
            self.stride, self.extra = stride, c_out - c_in

        def forward(self, x):
            size = 1 if x.shape[2] % 2 else self.stride
            x = F.avg_pool2d(x, size, self.stride)
            return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    class Block(nn.Module):
        def __init__(self, c_in, planes, stride):
            super().__init__()
            self.conv1, self.bn1 = conv(c_in, planes, stride), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = conv(planes, planes, 1), nn.BatchNorm2d(planes)
            self.shortcut = (Shortcut(stride, c_in, planes)
                             if stride != 1 or c_in != planes else nn.Identity())

        def forward(self, x):
            out = F.leaky_relu(self.bn1(self.conv1(x)), 0.01)
            out = self.bn2(self.conv2(out))
            return F.leaky_relu(out + self.shortcut(x), 0.01)

    layers, c_in = [conv(1, 64, 1), nn.BatchNorm2d(64), nn.LeakyReLU(0.01)], 64
    for planes, stride in zip((64, 128, 256, 512), (1, 2, 2, 2)):
        layers += [Block(c_in, planes, stride), Block(planes, planes, 1)]
        c_in = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    torch.manual_seed(0)
    return nn.Sequential(*layers)


def torch_step(batch_x, batch_y):
    import torch
    model = torch_resnet18_mod().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    images = torch.from_numpy(np.transpose(batch_x, (0, 3, 1, 2)).copy())
    labels = torch.from_numpy(batch_y.astype(np.int64))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())
    return step, sum(p.numel() for p in model.parameters())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2, help="timed float32 and torch steps")
    parser.add_argument("--bf16-steps", type=int, default=1,
                        help="timed bfloat16 steps (slow without AVX512-BF16)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed steps of each (tracing, XLA compilation)")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    machine = common.machine_info()
    peaks = common.matmul_peaks()

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=(args.batch_size,)).astype("int32")
    fns, repeats, params = {}, {}, {}
    for policy, jit in CONFIGS:
        label = f"{policy}{'_xla' if jit else ''}"
        model = build_keras(policy, jit, args.batch_size)
        params[label] = model.count_params()
        fns[label] = (lambda m: lambda: m.train_on_batch(x, y))(model)
        repeats[label] = args.steps if policy == "float32" else args.bf16_steps
    fns["torch"], params["torch"] = torch_step(x, y)
    repeats["torch"] = args.steps
    timings = common.time_interleaved(fns, repeats, warmup=args.warmup)

    plain = get_model("resnet18", num_classes=10, input_shape=(28, 28, 1), mod=True)
    step_flop = 3 * model_flops(plain) * args.batch_size
    rows, throughput = [], {}
    for label, timing in timings.items():
        throughput[label] = args.batch_size / timing["wall_s"]["min"]
    for label in (key for key in timings if key != "torch"):
        policy, jit = label.replace("_xla", ""), label.endswith("_xla")
        rows.append(common.row(
            f"ResNet-18 + SN + mod train step, 28x28x1, batch {args.batch_size}, {policy}"
            f"{', XLA' if jit else ''}", "ddu_tf (Keras)", timings[label],
            f"PyTorch {torch.__version__} CPU (float32)", timings["torch"], step_flop,
            peaks["float32"], note=f"{throughput[label]:.0f} images/s vs torch "
                                   f"{throughput['torch']:.0f}"))
    for label, value in throughput.items():
        print(f"{label:22s} {value:7.1f} images/s  ({timings[label]['wall_s']['min']:.3f} s "
              f"per step, median {timings[label]['wall_s']['median']:.3f})")
    common.write_result("train_throughput", {
        "config": vars(args), "torch_threads": torch.get_num_threads(),
        "step_flop": step_flop, "images_per_s": throughput, "parameters": params,
        "timings": timings, "rows": rows,
        "readme_notes": [
            "Training throughput (images/s, batch " + str(args.batch_size) + "): " + ", ".join(
                f"{label} {value:.1f}" for label, value in throughput.items())
            + f"; bound {args.batch_size / (step_flop / peaks['float32']):.1f} images/s "
              f"({step_flop / 1e9:.0f} GFLOP per step at the float32 peak)."]},
        machine, peaks, argv)


if __name__ == "__main__":
    main()
