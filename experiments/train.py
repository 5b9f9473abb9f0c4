"""Train one network for DDU (the TensorFlow counterpart of omegafragger/DDU ``train.py``).

Example (the paper's WRN-28-10 + SN + mod on CIFAR-10, 350 epochs):

    python experiments/train.py --seed 1 --dataset cifar10 --model wide_resnet -sn -mod \\
        --coeff 3.0 --save-path runs/wrn/

Flags and defaults follow the original's ``utils/args.py`` (SGD, lr 0.1, momentum 0.9,
weight decay 5e-4 (coupled L2, as ``torch.optim.SGD``), batch 128, lr x0.1 at epochs 150 and
250, augmentation on), except ``-e`` defaults to 350 (the paper) instead of the file's 1.

Data (``ddu_tf.experiment_data``, shared with ``evaluate.py``): 10% of the training split is
held out for validation with the original's seeded permutation (``np.random.seed(seed);
np.random.shuffle(indices)``; the first 10% are validation); ``--dataset`` accepts the DDU
README's spelling ``dirty-mnist``. Dirty-MNIST and MNIST use the "validation" split of ``ddu_tf.data`` instead
(10% of the MNIST images only, with that module's fixed seed, as the Dirty-MNIST guidance
asks; the original's Dirty-MNIST loader held out 10% of all 120k MNIST + ambiguous
samples with the run's seed -- a deliberate difference). CIFAR-10/100 and SVHN are
normalised with the CIFAR-10 statistics like the original; random crop (4-px padding) +
horizontal flip are applied to CIFAR-10/100 training images (the original's SVHN and MNIST
loaders do not augment).

Outputs in ``--save-path`` (names from ``ddu_tf.training.checkpoint_name``):

* ``{model}[_sn_{coeff}][_mod]_{seed}_{epochs}.keras`` -- the final model;
* ``..._{seed}_best.keras`` (best validation accuracy) and ``..._{seed}_{k}.keras`` every
  ``--save-interval`` epochs;
* ``..._{seed}_history.json`` -- per-epoch losses/accuracies of the whole run (epochs
  restored from the backup included);
* ``stats_logging/{run}/`` TensorBoard logs; ``backup/{run}/`` resume state
  (``ddu_tf.training.ResumableBackup``): rerunning the same command after an interruption --
  even a ``SIGKILL`` -- continues from the last completed epoch and ends with the weights,
  checkpoints and history of the uninterrupted run (epoch ``e`` shuffles and augments as a
  pure function of ``(seed, e)``). Every file is written atomically.

Watching the feature density while training (issue 17 item 5, off by default):
``--density-callback-every N`` adds ``ddu_tf.training.FeatureDensityMonitor``: after every
N-th epoch it fits the class-conditional GMM on ``--density-callback-samples`` training
examples and logs the AUROCs of GMM density and softmax entropy for validation vs the test
split of ``--density-callback-ood`` (default fashion_mnist; an error before training when it
cannot be read offline), plus the per-class feature spread (``within_class_std``,
``between_class_std``, ``within_between_ratio``), to History (the JSON lists their epochs as
``density_callback_epochs``) and to TensorBoard (``stats_logging/{run}/feature_density``).

Multi-GPU / multi-worker / TPU: ``--strategy {default,mirrored,multiworker,tpu}``
(``ddu_tf.distribute``, docs/distributed.md). The model, its SN state and the optimiser are
built under ``strategy.scope()``; ``-b`` is the GLOBAL batch size (split across replicas,
gradients summed), so the paper's settings carry over unchanged. ``multiworker`` is refused:
Keras 3's ``model.fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585).
"""
import argparse
import json
import math
import os

import keras

import ddu_tf  # noqa: F401  (registers the TFDS builders, e.g. mnist1d)
from ddu_tf import cli, distribute, training
from ddu_tf.io.atomic import atomic_write, atomic_write_text
from ddu_tf.experiment_data import (DATASETS, dataset_key, density_monitor_data, seeded_subset,
                                    train_validation_arrays, training_pipelines)
from ddu_tf.models import MODELS, get_model

SEQUENCE_MODELS = ("resnet1d", "logistic", "mlp", "cnn1d", "gru")
"""Models for ``[batch, length]`` inputs (MNIST-1D); the others take images."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _positive_float(text):
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0, got 0")
    return value


def _fraction(text):
    value = _non_negative_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {value}")
    return value


def build_parser():
    """The command line of the original ``training_args()`` plus a few run-control flags."""
    parser = argparse.ArgumentParser(
        description="Train a DDU network (softmax / SN / mod variants).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seed", type=int, required=True, help="seed (also of the validation split)")
    parser.add_argument("--dataset", default="cifar10", type=dataset_key, choices=sorted(DATASETS),
                        help="training set ('-' may replace '_', e.g. dirty-mnist)")
    parser.add_argument("--dataset-root", dest="dataset_root", default=None,
                        help="data directory: the manual directory of the MNIST-family sources "
                             "(default $DDU_TF_DATA_DIR) or the TFDS data_dir")
    parser.add_argument("--data-aug", dest="data_aug", action=argparse.BooleanOptionalAction,
                        default=True, help="random crop + flip (CIFAR-10/100 only)")
    parser.add_argument("-b", "--batch-size", dest="train_batch_size", type=_positive_int,
                        default=128, help="global training batch size (split across replicas)")
    parser.add_argument("-tb", "--test-batch-size", dest="test_batch_size", type=_positive_int,
                        default=128, help="validation batch size")
    parser.add_argument("--model", default="resnet50", choices=sorted(MODELS), help="network")
    parser.add_argument("-sn", "--sn", dest="sn", action="store_true",
                        help="spectral normalisation of the convolutions")
    parser.add_argument("--coeff", type=_positive_float, default=3.0, help="SN coefficient")
    parser.add_argument("--power-iterations", dest="power_iterations", type=_positive_int,
                        default=1, help="SN power iterations per training step")
    parser.add_argument("-mod", "--mod", dest="mod", action="store_true",
                        help="LeakyReLU + average-pool shortcuts")
    parser.add_argument("-e", "--epoch", dest="epoch", type=_positive_int, default=350,
                        help="number of training epochs")
    parser.add_argument("--lr", dest="learning_rate", type=_positive_float, default=0.1,
                        help="initial learning rate")
    parser.add_argument("--mom", dest="momentum", type=_fraction, default=0.9, help="SGD momentum")
    parser.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    parser.add_argument("--decay", dest="weight_decay", type=_non_negative_float, default=5e-4,
                        help="coupled L2 weight decay (as torch.optim)")
    parser.add_argument("--opt", dest="optimiser", default="sgd", choices=training.OPTIMIZERS,
                        help="optimiser")
    parser.add_argument("--loss", dest="loss_function", default="cross_entropy",
                        choices=["cross_entropy"], help="training loss")
    parser.add_argument("--first-milestone", dest="first_milestone", type=_positive_float,
                        default=150, help="epoch of the first lr x0.1 (fractions allowed: 0.5)")
    parser.add_argument("--second-milestone", dest="second_milestone", type=_positive_float,
                        default=250, help="epoch of the second lr x0.1 (fractions allowed)")
    parser.add_argument("--save-interval", dest="save_interval", type=_positive_int, default=25,
                        help="save the model every this many epochs")
    parser.add_argument("--save-path", dest="save_loc", default="./", help="output directory")
    parser.add_argument("--val-size", dest="val_size", type=_fraction, default=0.1,
                        help="held-out fraction of the training split")
    parser.add_argument("--max-train-samples", dest="max_train_samples", type=_positive_int,
                        default=None,
                        help="use only N training examples, a seeded random subset (smoke runs)")
    parser.add_argument("--max-val-samples", dest="max_val_samples", type=_positive_int,
                        default=None, help="use only the first N validation examples")
    parser.add_argument("--jit", action=argparse.BooleanOptionalAction, default=False,
                        help="XLA-compile the train step. Off by default: on the 2-core "
                             "AVX-512 CPU, ResNet-18+SN+mod at batch 128 trains at 107.5 img/s "
                             "without XLA and 77.8 with it (results/bench/train_throughput.json; "
                             "an earlier AVX2 machine favoured XLA: measure yours with "
                             "bench/train_throughput.py)")
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"),
                        help="Keras dtype policy; mixed_bfloat16 trains at 133.8 img/s vs "
                             "107.5 in float32 on the AVX512-BF16 CPU (same file), but rounds "
                             "activations to 8-bit mantissas: float32 stays the faithful default")
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1,
                        help="Keras fit verbosity (1 = progress bar, 2 = one line per epoch)")
    parser.add_argument("--progress-every", dest="progress_every", type=_positive_int,
                        default=None,
                        help="with --verbose 2, also print a progress line (running loss and "
                             "accuracy, examples/s, epoch ETA) every N train steps (default: "
                             "every 5%% of an epoch)")
    parser.add_argument("--density-callback-every", dest="density_every", type=_positive_int,
                        default=None,
                        help="every N epochs fit the feature GMM on a training sample and log "
                             "OoD AUROCs (GMM density, softmax entropy) and the per-class "
                             "feature spread to History and TensorBoard (off by default)")
    parser.add_argument("--density-callback-ood", dest="density_ood", default="fashion_mnist",
                        type=dataset_key, choices=sorted(DATASETS),
                        help="OoD test set of --density-callback-every (same input shape as "
                             "--dataset; must be readable offline)")
    parser.add_argument("--density-callback-samples", dest="density_samples",
                        type=_positive_int, default=1000,
                        help="examples of each set (train sample for the GMM, validation, OoD) "
                             "of --density-callback-every")
    distribute.add_strategy_argument(parser)
    return parser


def parse_args(argv=None):
    """Parse and cross-check the flags; inconsistent combinations exit via ``parser.error``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.first_milestone > args.second_milestone:
        parser.error(f"--first-milestone ({args.first_milestone}) must not exceed "
                     f"--second-milestone ({args.second_milestone})")
    sequence_data = len(DATASETS[args.dataset].input_shape) == 1
    if sequence_data != (args.model in SEQUENCE_MODELS):
        kind = "sequence models " + ", ".join(SEQUENCE_MODELS) if sequence_data else "image models"
        parser.error(f"--model {args.model} does not fit --dataset {args.dataset} "
                     f"(input shape {DATASETS[args.dataset].input_shape}); use one of the {kind}")
    if args.strategy == "multiworker":
        parser.error("--strategy multiworker: Keras 3's model.fit does not support "
                     "MultiWorkerMirroredStrategy (keras-team/keras#20585); use --strategy "
                     "mirrored (all GPUs of one machine) or tpu")
    if args.model == "lenet" and (args.sn or args.mod):
        parser.error("--model lenet has no spectral-normalised (-sn) or modified (-mod) variant; "
                     "use resnet18, vgg16 or wide_resnet")
    return args


def run(args, extra_callbacks=()):
    """Train as configured by ``args`` (from :func:`parse_args`).

    Args:
        args: parsed flags.
        extra_callbacks: further Keras callbacks (run after the standard ones).

    Returns:
        ``(model, history, final_path)``.
    """
    strategy = distribute.strategy_from_args(args)  # first: multi-worker needs it at startup
    save_loc = distribute.worker_directory(strategy, args.save_loc)
    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_dtype_policy(args.precision)
    spec = DATASETS[args.dataset]
    train_arrays, val_arrays = train_validation_arrays(
        spec, seed=args.seed, val_size=args.val_size, data_dir=args.dataset_root)
    train_arrays = seeded_subset(train_arrays, args.max_train_samples, args.seed)
    if args.max_val_samples:
        val_arrays = tuple(a[:args.max_val_samples] for a in val_arrays)
    run_name = training.checkpoint_name(args.model, args.sn, args.mod, args.coeff, args.seed,
                                        extension="")
    callbacks = training.make_callbacks(save_loc, run_name, save_interval=args.save_interval)
    backup = next(c for c in callbacks if isinstance(c, training.ResumableBackup))
    train_ds, val_ds = training_pipelines(spec, train_arrays, val_arrays,
                                          batch_size=args.train_batch_size,
                                          val_batch_size=args.test_batch_size, seed=args.seed,
                                          augment=args.data_aug, epochs=args.epoch,
                                          initial_epoch=backup.initial_epoch)
    steps_per_epoch = math.ceil(len(train_arrays[0]) / args.train_batch_size)
    monitor = None
    if args.density_every:  # its data are read before training: a missing OoD set fails now
        monitor = training.FeatureDensityMonitor(
            *density_monitor_data(args.dataset, args.density_ood, train_arrays, val_arrays,
                                  samples=args.density_samples, seed=args.seed,
                                  batch_size=args.test_batch_size, data_dir=args.dataset_root),
            spec.num_classes, every=args.density_every,
            log_dir=os.path.join(save_loc, "stats_logging", run_name, "feature_density"))

    # Seeded again right before the model: its initial weights must not depend on whether
    # loading the data consumed random numbers (a first TFDS build does, a cached one not).
    keras.utils.set_random_seed(args.seed)
    with strategy.scope():  # mirrored weights, SN state and optimiser slots
        model = get_model(args.model, num_classes=spec.num_classes,
                          input_shape=spec.input_shape, spectral_normalization=args.sn,
                          coeff=args.coeff, mod=args.mod, power_iterations=args.power_iterations)
        schedule = training.lr_schedule(args.first_milestone, args.second_milestone,
                                        lr=args.learning_rate, steps_per_epoch=steps_per_epoch)
        optimizer = training.make_optimizer(args.optimiser, lr=schedule, momentum=args.momentum,
                                            weight_decay=args.weight_decay,
                                            nesterov=args.nesterov)
        training.compile_model(model, optimizer, jit_compile=args.jit)

    if args.verbose == 2:  # fit prints only at epoch ends: a line every 5% of an epoch
        callbacks.append(training.StepProgress(
            args.progress_every or max(1, steps_per_epoch // 20), steps_per_epoch,
            args.train_batch_size, args.epoch))
    if monitor is not None:  # after TensorBoard (which would log its keys a second time),
        # before the backup (which records the epoch's logs, the monitor's included)
        callbacks.insert(callbacks.index(backup), monitor)
    print(f"Training {run_name}: {len(train_arrays[0])} train / {len(val_arrays[0])} validation "
          f"examples, {steps_per_epoch} steps per epoch, {model.count_params()} parameters, "
          f"{strategy.num_replicas_in_sync} replica(s)"
          + (f"; resuming after epoch {backup.initial_epoch}" if backup.initial_epoch else ""))
    history = model.fit(train_ds, validation_data=val_ds, epochs=args.epoch,
                        steps_per_epoch=steps_per_epoch,
                        callbacks=[*callbacks, *extra_callbacks], verbose=args.verbose,
                        shuffle=False)  # the tf.data pipeline shuffles (stateless, per epoch)

    final_path = os.path.join(save_loc, training.checkpoint_name(
        args.model, args.sn, args.mod, args.coeff, args.seed, epoch=args.epoch))
    atomic_write(final_path, model.save)
    logged = {"epochs": backup.epochs, "history": backup.history, "args": vars(args)}
    if monitor is not None:  # the epochs of the monitor's keys (shorter lists when N > 1)
        logged["density_callback_epochs"] = [
            e for e in backup.epochs if (e + 1) % args.density_every == 0]
    atomic_write_text(os.path.join(save_loc, f"{run_name}_history.json"),
                      json.dumps(logged, indent=2))
    print(f"Model saved to {final_path}")
    return model, history, final_path


def main(argv=None):
    run(parse_args(argv))


if __name__ == "__main__":
    cli.run(main)
