"""Evaluate trained DDU networks (TensorFlow counterpart of omegafragger/DDU ``evaluate.py``).

Example (DDU = WRN-28-10 + SN + mod with a GMM on its features, CIFAR-10 vs SVHN, 5 runs):

    python experiments/evaluate.py --seed 1 --dataset cifar10 --ood_dataset svhn \\
        --model wide_resnet -sn -mod --coeff 3.0 --model-type gmm --runs 5 --load-path runs/wrn/

Flags follow the original's ``eval_args``: ``--seed --dataset --ood_dataset --load-path
--model --runs -sn -mod --coeff --ensemble --model-type {softmax,ensemble,gmm} -b``, plus
``--dataset-root`` (data directory passed to ``ddu_tf.data.load``), ``-e/--epoch`` (which
checkpoint: an epoch count or ``best``; the original hard-codes it), ``--val-size``,
``--output-dir`` and ``--strategy {default,mirrored,multiworker,tpu}``
(``ddu_tf.distribute``). The original's ``--no-gpu`` and ``--data-aug`` are not offered
(TensorFlow places ops itself; the GMM is fitted on un-augmented training features, the original's
default).

Models come from ``experiments/train.py``: run ``i`` (0-based) of a ``softmax`` / ``gmm``
evaluation loads the network trained with seed ``seed + i``; run ``i`` of an ``ensemble``
loads members with the consecutive seeds ``seed + ensemble * i + j``, ``j < ensemble``. Each
file ``checkpoint_name(model, sn, mod, coeff, seed, epoch)`` is looked up in
``load-path/Run{i+1}/`` (the original's layout) and then in ``load-path/``.

Data (``ddu_tf.experiment_data``, shared with ``experiments/train.py``): the test split of
``--dataset`` (in-distribution) and of ``--ood_dataset``; the validation split (for
temperature scaling) and the training split (for the GMM) are those ``experiments/train.py``
used for that seed. Metrics per run: see ``ddu_tf.evaluation``
(m1/m2 semantics per model type); the JSON file
``res_{checkpoint stem}_{model_type}_{dataset}_{ood_dataset}.json`` has the original's
layout ``{"mean", "std" (standard error), "values", "info"}``.

The JSON also aggregates every ``split/metric`` key of the run dicts: ``test/nll``,
``test/brier``, ``ood/m1_fpr95``, ``ood/m2_fpr95`` always, and with ``--protocol
dirty_mnist`` the Dirty-MNIST table of issue 14 (``ddu_tf.evaluation.dirty_mnist_protocol``):
the network's features of the training split of ``--dataset`` (the split it was trained on)
fit the GMM; MNIST test, Ambiguous-MNIST test (``--ambiguous-variant``, one pair per image) and
the OoD sets ``--ood-sets`` (``ddu_tf.data.ood_sets``: Fashion-MNIST, MNIST rotated 90
degrees, sklearn digits, uniform noise) all get the same transform (normalisation + fixed
N(0, ``--eval-noise-std``) noise); keys ``mnist/accuracy|ece|nll|brier`` and
``{mnist,ambiguous,dirty}_vs_{ood}/{entropy,log_density}_{auroc,auprc,fpr95}``. With
``--protocol-only`` the JSON holds those keys alone (the test / OoD passes of the original
layout are skipped). The per-set
scores are saved as ``scores_{checkpoint stem}_{model_type}.npz`` (for
``experiments/plot_uncertainty.py --scores``) and, unless ``--no-tensorboard``, written next
to the training run's TensorBoard logs (``{model dir}/stats_logging/{stem}/evaluation_{type}``):
histograms ``{set}/entropy`` and ``{set}/log_density`` and every metric as a scalar, at step
``--epoch`` (0 for ``best``).

Distributed evaluation (``--strategy mirrored|multiworker|tpu``, see ``docs/distributed.md``):
the models are loaded under ``strategy.scope()``; logits and features come from a sharded
``ddu_tf.inference.Predictor`` (batches of ``-b`` rows per replica, gathered back in
data-set order) and the GMM from ``ddu_tf.inference.fit_gmm`` on it (per-replica float64
moments merged exactly, ``ddu_tf.density.distributed_class_statistics``), so the metrics
equal the single-device ones up to floating-point rounding. Only the chief worker writes the
JSON file.
"""
import argparse
import json
import os

import keras
import numpy as np
import tensorflow as tf

import ddu_tf  # noqa: F401  (registers the TFDS builders and the Keras objects)
import ddu_tf.models
from ddu_tf import cli, distribute, evaluation, training
from ddu_tf.data import ood_sets
from ddu_tf.experiment_data import (DATASETS, dataset_key, evaluation_pipeline,
                                    load_test_split, seeded_subset, train_validation_arrays)
from ddu_tf.inference import Predictor, fit_gmm
from ddu_tf.io.atomic import atomic_write_text


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _epoch(text):
    if text == "best":
        return text
    return _positive_int(text)


def build_parser():
    parser = argparse.ArgumentParser(
        description="Evaluate DDU models (accuracy, ECE, OoD AUROC/AUPRC) and write JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seed", type=int, required=True, help="seed of the first run's model")
    parser.add_argument("--dataset", default="cifar10", type=dataset_key, choices=sorted(DATASETS),
                        help="in-distribution data set ('-' may replace '_')")
    parser.add_argument("--ood_dataset", default="svhn", type=dataset_key,
                        choices=sorted(DATASETS),
                        help="OoD data set for the given training data set")
    parser.add_argument("--dataset-root", dest="dataset_root", default=None,
                        help="data directory passed to ddu_tf.data.load")
    parser.add_argument("-b", type=_positive_int, default=128, dest="batch_size", help="batch size")
    parser.add_argument("--load-path", dest="load_loc", default="./",
                        help="directory with the models saved by experiments/train.py")
    parser.add_argument("--model", default="resnet50", choices=sorted(ddu_tf.models.MODELS),
                        help="network name used for training")
    parser.add_argument("--runs", type=_positive_int, default=5, help="models to aggregate over")
    parser.add_argument("-sn", "--sn", dest="sn", action="store_true",
                        help="the models use spectral normalisation")
    parser.add_argument("--coeff", type=float, default=3.0, help="SN coefficient of the models")
    parser.add_argument("-mod", "--mod", dest="mod", action="store_true",
                        help="the models use the architectural modifications")
    parser.add_argument("--ensemble", type=_positive_int, default=5,
                        help="number of models in an ensemble")
    parser.add_argument("--model-type", dest="model_type", default="softmax",
                        choices=evaluation.MODEL_TYPES, help="type of model to evaluate")
    parser.add_argument("-e", "--epoch", dest="epoch", type=_epoch, default=350,
                        help="checkpoint to load: epochs trained, or 'best'")
    parser.add_argument("--val-size", dest="val_size", type=float, default=0.1,
                        help="validation fraction held out by train.py")
    parser.add_argument("--max-train-samples", dest="max_train_samples", type=_positive_int,
                        default=None,
                        help="fit the GMM on the seeded random subset of N training examples "
                             "that experiments/train.py --max-train-samples N used")
    parser.add_argument("--output-dir", dest="output_dir", default="./",
                        help="directory of the JSON result")
    parser.add_argument("--protocol", default="original", choices=("original", "dirty_mnist"),
                        help="dirty_mnist: add the Dirty-MNIST table (MNIST / Ambiguous / Dirty "
                             "vs each OoD set, entropy and GMM density) to the JSON")
    parser.add_argument("--protocol-only", dest="protocol_only", action="store_true",
                        help="with --protocol dirty_mnist: write only the protocol's keys, "
                             "skipping the original layout's passes over the test and OoD "
                             "splits (70k images for Dirty-MNIST)")
    parser.add_argument("--ambiguous-variant", dest="ambiguous_variant", default=None,
                        help="Ambiguous-MNIST of the protocol (official, generated, "
                             "generated_tiny); default: that of --dataset")
    parser.add_argument("--ood-sets", dest="ood_sets", nargs="+", default=list(ood_sets.OOD_SETS),
                        choices=sorted(ood_sets.OOD_SETS), help="OoD sets of the protocol")
    parser.add_argument("--eval-noise-std", dest="eval_noise_std", type=float,
                        default=ood_sets.dirty_mnist.NOISE_STD,
                        help="fixed noise std added to every protocol set (0: none)")
    parser.add_argument("--max-eval-samples", dest="max_eval_samples", type=_positive_int,
                        default=None, help="protocol: first N images of each set (smoke runs)")
    parser.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                        help="protocol: write score histograms and metrics to TensorBoard next "
                             "to the training logs")
    distribute.add_strategy_argument(parser)
    return parser


def load_model(path, strategy=None):
    """A saved model, built under ``strategy.scope()`` when a strategy is given."""
    if strategy is None:
        return keras.models.load_model(path)
    with strategy.scope():
        return keras.models.load_model(path)


def train_val_datasets(args, seed):
    """Training and validation pipelines of the split train.py used for ``seed``."""
    spec = DATASETS[args.dataset]
    train_arrays, val_arrays = train_validation_arrays(
        spec, seed=seed, val_size=args.val_size, data_dir=args.dataset_root)
    train_arrays = seeded_subset(train_arrays, getattr(args, "max_train_samples", None), seed)
    return (evaluation_pipeline(spec, train_arrays, args.batch_size),
            evaluation_pipeline(spec, val_arrays, args.batch_size))


def model_path(args, run, seed):
    """Path of the checkpoint trained with ``seed``; ``Run{run+1}/`` first, then the root."""
    name = training.checkpoint_name(args.model, args.sn, args.mod, args.coeff, seed, args.epoch)
    candidates = [os.path.join(args.load_loc, f"Run{run + 1}", name),
                  os.path.join(args.load_loc, name)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise ValueError(f"Expected a model saved by experiments/train.py at one of {candidates}. "
                     "Check --load-path, --model, -sn, -mod, --coeff, --seed and --epoch.")


def protocol_datasets(args):
    """The Dirty-MNIST protocol's evaluation sets as batched datasets (same transform)."""
    variant = args.ambiguous_variant or {"dirty_mnist": "official"}.get(
        args.dataset, "generated")
    sets = ood_sets.evaluation_sets(variant, args.ood_sets, data_dir=args.dataset_root,
                                    noise_std=args.eval_noise_std,
                                    max_per_set=args.max_eval_samples)
    return {name: tf.data.Dataset.from_tensor_slices(xy).batch(args.batch_size)
            for name, xy in sets.items()}


def write_tensorboard(log_dir, scores, result, step):
    """Score histograms per set and every metric of ``result`` as scalars, at ``step``."""
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        for name, per_set in scores.items():
            for key in ("entropy", "log_density"):
                tf.summary.histogram(f"{name}/{key}", per_set[key], step=step)
        for key, value in result.items():
            if isinstance(value, float):
                tf.summary.scalar(key if "/" in key else f"evaluation/{key}", value, step=step)
    writer.close()


def run_protocol(args, run, network, gmm, protocol_sets, path):
    """Protocol metrics of one network; saves its scores (npz) and TensorBoard summaries."""
    print(f"  protocol: scoring {', '.join(protocol_sets)}", flush=True)
    scores = evaluation.set_scores(network, gmm, protocol_sets)
    result = evaluation.dirty_mnist_protocol(scores, args.ood_sets)
    stem = os.path.basename(path)[:-len(".keras")]
    evaluation.save_scores(
        os.path.join(args.output_dir, f"scores_{stem}_{args.model_type}.npz"), scores)
    if args.tensorboard:
        run_name = training.checkpoint_name(args.model, args.sn, args.mod, args.coeff,
                                            args.seed + run, extension="")
        log_dir = os.path.join(os.path.dirname(path), "stats_logging", run_name,
                               f"evaluation_{args.model_type}")
        write_tensorboard(log_dir, scores, result, args.epoch if args.epoch != "best" else 0)
    return result


def evaluate_run(args, run, test_ds, ood_ds, strategy=None, protocol_sets=None):
    """Metric dict of run ``run`` (see ``ddu_tf.evaluation``); ``strategy``: shard the
    network passes and the GMM statistics across its replicas (None: one device);
    ``protocol_sets``: add the Dirty-MNIST protocol's keys (:func:`protocol_datasets`)."""
    num_classes = DATASETS[args.dataset].num_classes

    def predictor(seed):
        model = load_model(model_path(args, run, seed), strategy)
        return Predictor(model, chunk_size=args.batch_size, strategy=strategy)

    if args.model_type == "ensemble":
        seeds = [args.seed + args.ensemble * run + j for j in range(args.ensemble)]
        test_logits, ood_logits, val_logits, val_labels = [], [], [], []
        for seed in seeds:
            member = predictor(seed)
            _, val_ds = train_val_datasets(args, seed)
            logits, test_labels = member.dataset_logits(test_ds)
            test_logits.append(logits)
            ood_logits.append(member.dataset_logits(ood_ds)[0])
            v_logits, v_labels = member.dataset_logits(val_ds)
            val_logits.append(v_logits)
            val_labels.append(v_labels)
        return evaluation.ensemble_metrics(np.stack(test_logits), test_labels,
                                           np.stack(ood_logits), val_logits, val_labels)

    seed = args.seed + run
    network = predictor(seed)
    train_ds, val_ds = train_val_datasets(args, seed)
    val_logits, val_labels = network.dataset_logits(val_ds)
    gmm = None
    if protocol_sets is not None or args.model_type == "gmm":
        print("  fitting the GMM on the training split's features", flush=True)
        gmm = fit_gmm(network, train_ds, num_classes)
    protocol = {} if protocol_sets is None else run_protocol(
        args, run, network, gmm, protocol_sets, model_path(args, run, seed))
    if getattr(args, "protocol_only", False):
        return protocol
    if args.model_type == "softmax":
        test_logits, test_labels = network.dataset_logits(test_ds)
        ood_logits, _ = network.dataset_logits(ood_ds)
        return {**evaluation.softmax_metrics(test_logits, test_labels, ood_logits,
                                             val_logits, val_labels), **protocol}
    print("  scoring the test and OoD splits", flush=True)
    test_features, test_logits, test_labels = network.dataset_features_and_logits(test_ds)
    ood_features, _, _ = network.dataset_features_and_logits(ood_ds)
    result = evaluation.gmm_metrics(
        test_logits, test_labels,
        gmm.class_log_densities(test_features).numpy(),
        gmm.class_log_densities(ood_features).numpy(),
        val_logits, val_labels,
    )
    result["jitter"] = gmm.jitter
    return {**result, **protocol}


def output_path(args, output_dir=None):
    """Path of the JSON result in ``output_dir`` (default ``args.output_dir``)."""
    stem = training.checkpoint_name(args.model, args.sn, args.mod, args.coeff, args.seed,
                                    extension="")
    name = f"res_{stem}_{args.model_type}_{args.dataset}_{args.ood_dataset}.json"
    return os.path.join(args.output_dir if output_dir is None else output_dir, name)


def main(argv=None):
    args = build_parser().parse_args(argv)
    strategy = distribute.strategy_from_args(args)  # first: multi-worker needs it at startup
    sharding = None if args.strategy == "default" else strategy
    keras.utils.set_random_seed(args.seed)
    test_ds = load_test_split(args.dataset, args.batch_size, args.dataset_root)
    ood_ds = load_test_split(args.ood_dataset, args.batch_size, args.dataset_root)
    protocol_sets = None
    if args.protocol_only and args.protocol != "dirty_mnist":
        raise ValueError("Expected --protocol dirty_mnist with --protocol-only (only that "
                         f"protocol has keys of its own). Received: --protocol {args.protocol}.")
    if args.protocol == "dirty_mnist":
        if args.model_type == "ensemble":
            raise ValueError("Expected --model-type softmax or gmm with --protocol dirty_mnist "
                             "(it scores one network's entropy and GMM density). Received: "
                             "--model-type ensemble.")
        protocol_sets = protocol_datasets(args)
    runs = []
    for run in range(args.runs):
        print(f"Evaluating run {run + 1}/{args.runs}", flush=True)
        runs.append(evaluate_run(args, run, test_ds, ood_ds, sharding, protocol_sets))
        print({key: round(float(value), 4) for key, value in runs[-1].items()
               if key in evaluation.METRIC_KEYS or "/" in key}, flush=True)
    result = evaluation.summarize(runs)
    result["info"] = vars(args)
    output_dir = distribute.worker_directory(strategy, args.output_dir)
    os.makedirs(output_dir, exist_ok=True)
    path = output_path(args, output_dir)
    atomic_write_text(path, json.dumps(result, indent=2))
    print(f"Results written to {path}")
    return result


if __name__ == "__main__":
    cli.run(main)
