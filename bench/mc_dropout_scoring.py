"""Benchmark: MC-dropout BALD scoring of a 2000-point pool with T = 100, in the same run.

Three implementations on the Bayesian CNN (Gal et al. 2017), same inputs:

* ours: ``MCDropoutPredictor`` -- conv trunk once per point, dropout suffix T times on
  the tiled trunk output, chunked ``tf.map_fn`` in one ``tf.function``; then ``bald``.
* naive TF: a Python loop of T full passes ``model(x, training=True)``, then ``bald``.
* baal (torch CPU): an equivalent torch CNN, ``baal.bayesian.dropout.patch_module``,
  ``ModelWrapper.predict_on_batch(batch, iterations=T)`` (input replicated T times in
  memory) and ``baal.active.heuristics.BALD``.

FLOP bound: analytic Conv/Dense FLOPs (2 x MACs per layer) of the work each method does,
divided by the peak float32 FLOP/s of this machine measured with a TF matmul in the same
run. ``--round-time`` also measures the parts of one round (training at 20 and 1020
labelled points, BALD on the pool, a 10k MC test evaluation) for ``model.fit`` vs
``CompiledTrainer`` (float32 and bfloat16) and extrapolates one 100-round run.

Usage: ``python bench/mc_dropout_scoring.py [--pool 2000 --T 100 --naive-T 100
--baal-T 100 --round-time]``. ``--naive-T``/``--baal-T`` below ``--T`` time fewer passes, and
``--baal-pool`` fewer points, and scale linearly (printed as such).
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ddu_tf.active_learning import MCDropoutPredictor, bald, model_flops  # noqa: E402
from ddu_tf.models.bayesian_cnn import bayesian_cnn  # noqa: E402


def peak_flops(n=2048, repeats=10):
    """Best float32 matmul FLOP/s (2 n^3 per product) over ``repeats`` timed calls."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n ** 3 / best


def timed(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def naive_tf(model, x, num_samples, batch=500):
    """T full training-mode passes in a Python loop (what most code does)."""
    passes = []
    for _ in range(num_samples):
        logits = tf.concat([model(x[i:i + batch], training=True)
                            for i in range(0, len(x), batch)], axis=0)
        passes.append(tf.nn.log_softmax(logits))
    return bald(tf.stack(passes)).numpy()


def torch_cnn(num_classes=10):
    import torch.nn as nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 4), nn.ReLU(), nn.Conv2d(32, 32, 4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(), nn.Linear(3872, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, num_classes))


def baal_bald(x_nhwc, num_samples, batch):
    import torch
    from baal.active.heuristics import BALD
    from baal.bayesian.dropout import patch_module
    from baal.modelwrapper import ModelWrapper, TrainingArgs

    torch.manual_seed(0)
    model = patch_module(torch_cnn()).eval()
    wrapper = ModelWrapper(model, TrainingArgs(batch_size=batch, use_cuda=False,
                                               replicate_in_memory=True))
    data = torch.from_numpy(np.transpose(x_nhwc, (0, 3, 1, 2)).copy())

    def run():
        probs = []
        for i in range(0, len(data), batch):
            logits = wrapper.predict_on_batch(data[i:i + batch], iterations=num_samples)
            probs.append(torch.softmax(logits, dim=1).numpy())  # [b, C, T]
        return BALD().compute_score(np.concatenate(probs))
    return run


def round_time(images, labels, test_images, pool, num_samples):
    """Seconds of one active-learning round's parts under three recipes.

    ``keras.fit``: the straightforward recipe -- a new model, ``compile`` and ``fit`` every
    round, a new ``MCDropoutPredictor`` (traced again) per round, per-point test masks.
    ``compiled``: ``CompiledTrainer`` (one model reset per round, all epochs in one
    ``tf.function``), predictors traced once, consistent test masks. ``compiled bf16``: the
    same under the ``mixed_bfloat16`` policy. Training at 20 and 1020 labelled points (50
    epochs, batch 128), BALD on the pool, a 10k MC test evaluation (T = ``num_samples``).
    """
    import keras

    from ddu_tf.active_learning import CompiledTrainer, log_mean_prob

    def clock(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    results = {}
    for recipe in ("keras.fit", "compiled", "compiled bf16"):
        keras.mixed_precision.set_global_policy(
            "mixed_bfloat16" if recipe.endswith("bf16") else "float32")
        times, trainer, predictors = {}, None, None
        for n in (20, 1020):
            x, y = images[:n], labels[:n]
            if recipe == "keras.fit":
                def train():
                    model = bayesian_cnn(weight_decay=3.5 / n)
                    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses
                                  .SparseCategoricalCrossentropy(from_logits=True))
                    model.fit(x, y, epochs=50, batch_size=128, verbose=0)
                    return model
                start = time.perf_counter()
                model = train()
                times[f"train_{n}"] = time.perf_counter() - start
                predictors = (MCDropoutPredictor(model, num_samples),
                              MCDropoutPredictor(model, num_samples))
            else:
                if trainer is None:  # built (and traced) once per run, not per round
                    trainer = CompiledTrainer(bayesian_cnn, epochs=50,
                                              decay_layers=["features"])
                    trainer.fit(x[:2], y[:2], seed=0)
                    predictors = (MCDropoutPredictor(trainer.model, num_samples),
                                  MCDropoutPredictor(trainer.model, num_samples,
                                                     consistent_masks=True))
                    for p, fn in zip(predictors, (bald, log_mean_prob)):
                        p.reduce(pool[:8], fn).numpy()
                times[f"train_{n}"] = clock(lambda: trainer.fit(x, y, seed=n,
                                                                weight_decay=3.5 / n))
        times["score"] = clock(lambda: predictors[0].reduce(pool, bald).numpy())
        times["test_eval"] = clock(lambda: predictors[1].reduce(test_images,
                                                                log_mean_prob).numpy())
        sizes = 20 + 10 * np.arange(101)  # steps grow as ceil(n / 128): interpolate in n
        slope = (times["train_1020"] - times["train_20"]) / 1000.0
        times["train_total"] = float(np.sum(times["train_20"] + slope * (sizes - 20)))
        times["total"] = times["train_total"] + 100 * times["score"] + 101 * times["test_eval"]
        results[recipe] = times
    keras.mixed_precision.set_global_policy("float32")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--naive-T", type=int, default=100)
    parser.add_argument("--baal-T", type=int, default=100)
    parser.add_argument("--baal-batch", type=int, default=20)
    parser.add_argument("--baal-pool", type=int, default=None,
                        help="time baal on the first N pool points and scale to --pool")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-baal", action="store_true")
    parser.add_argument("--round-time", action="store_true")
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.pool, 28, 28, 1)).astype(np.float32)
    model = bayesian_cnn()
    predictor = MCDropoutPredictor(model, args.T, chunk_size=args.chunk_size)
    peak = peak_flops()
    print(f"TF {tf.__version__}, devices {[d.device_type for d in tf.config.list_physical_devices()]}, "
          f"intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'auto'}")
    print(f"peak float32 matmul: {peak / 1e9:.1f} GFLOP/s")

    predictor.reduce(x[:predictor.chunk_size], bald).numpy()  # trace + compile
    ours = timed(lambda: predictor.reduce(x, bald).numpy(), args.repeats)
    ours_flops = predictor.flops(args.pool)
    full_flops = args.pool * args.T * model_flops(model)
    print(f"ours   : {ours:8.2f} s  (chunk {predictor.chunk_size}; {ours_flops / 1e9:.1f} GFLOP, "
          f"bound {ours_flops / peak:.2f} s, {ours_flops / ours / 1e9:.1f} GFLOP/s achieved)")

    naive_tf(model, x[:500], 1)  # warm-up
    naive = timed(lambda: naive_tf(model, x, args.naive_T), 1) * args.T / args.naive_T
    scaled = "" if args.naive_T == args.T else f" (measured T={args.naive_T}, scaled)"
    print(f"naiveTF: {naive:8.2f} s{scaled}  (FLOP bound {full_flops / peak:.2f} s) "
          f"-> ours is {naive / ours:.1f}x faster")

    if not args.skip_baal:
        import torch
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        baal_pool = min(args.baal_pool or args.pool, args.pool)
        run = baal_bald(x[:baal_pool], args.baal_T, args.baal_batch)
        baal_time = timed(run, 1) * (args.T / args.baal_T) * (args.pool / baal_pool)
        scaled = ("" if (args.baal_T, baal_pool) == (args.T, args.pool) else
                  f" (measured T={args.baal_T} on {baal_pool} points, scaled linearly)")
        print(f"baal   : {baal_time:8.2f} s{scaled}  (torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads; FLOP bound {full_flops / peak:.2f} s) "
              f"-> ours is {baal_time / ours:.1f}x faster")

    if args.round_time:
        from ddu_tf.io.mnist_idx import load_idx_arrays
        images, labels = load_idx_arrays("mnist", "train")
        test_images, _ = load_idx_arrays("mnist", "test")
        prep = lambda a: (a.astype(np.float32) / 255.0)[..., None]  # noqa: E731
        parts = round_time(prep(images), labels, prep(test_images), x, args.T)
        base = parts["keras.fit"]["total"]
        print(f"one 100-round BALD run (T={args.T}, 50 epochs, {args.pool}-point subset, 10k "
              "MC test every round), extrapolated from its parts:")
        for recipe, t in parts.items():
            print(f"  {recipe:14s} train(20) {t['train_20']:5.2f} s  train(1020) "
                  f"{t['train_1020']:5.1f} s  BALD {t['score']:5.2f} s  10k test "
                  f"{t['test_eval']:5.2f} s  -> {t['total'] / 60:5.1f} min (training "
                  f"{t['train_total'] / 60:4.1f} min), {base / t['total']:.2f}x vs keras.fit")

if __name__ == "__main__":
    main()
