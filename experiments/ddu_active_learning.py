"""DDU active learning on MNIST and Dirty-MNIST (omegafragger/DDU ``active_learning_script.py``).

Each round a network (or a 5-network ensemble) is trained from scratch on the labelled set,
evaluated on MNIST test, and the pool is scored by the chosen ``--al-type``:

* ``softmax``: highest softmax entropy;
* ``ensemble``: highest ensemble predictive entropy, or mutual information with ``-mi``;
* ``gmm`` (DDU): lowest class-prior-weighted GMM feature density ``sum_c pi_c q(z|c)``, pi
  from the labelled counts, computed in log space
  (:mod:`ddu_tf.active_learning.ddu_scoring`).

The top ``--acquisition-batch-size`` are acquired by the shared
:func:`~ddu_tf.active_learning.acquisition.select_top_k` inside the shared resumable
:class:`~ddu_tf.active_learning.loop.ActiveLearningLoop`, until ``--max-training-samples``.

Training per round, as the original (:class:`ddu_tf.active_learning.CompiledTrainer` with
:func:`~ddu_tf.active_learning.fit_best_on_validation`): Adam (lr 1e-3, coupled L2 weight
decay 5e-4, i.e. ``torch.optim.Adam(weight_decay=5e-4)`` = :class:`ddu_tf.training.TorchAdam`),
``-e`` epochs of DDU's fixed-length sampler (:class:`~ddu_tf.active_learning.FixedLengthSampler`,
5056 draws with replacement-free cycling, batch ``-b`` 64), the epoch with the best
validation accuracy kept; validation = 10% of the pool (seeded); the initial
``--num-initial-samples`` (20) are class-balanced, drawn once and shared by all runs.

Dirty-MNIST (``-ambiguous``, or ``--dataset dirty-mnist``): the DDU code's protocol by
default -- ``--subsample`` (1000) clean MNIST images (drawn without replacement; the
original's with-replacement draw is a bug) + the Ambiguous-MNIST train pairs as the pool,
validation 10% of it, no noise. ``--ambiguous-config`` defaults to the official
``amnist_samples.pt`` / ``amnist_labels.pt`` when they are in ``--dataset-root`` (or
``--data-dir`` / ``$DDU_TF_DATA_DIR``, under ``ambiguous_mnist/`` or directly) and falls back
to the offline regeneration (``generated``) with a one-line notice. The Dirty-MNIST
guidance asks for acquisition batches of at least 10 (an ambiguous image comes with 10
labels); a smaller ``--acquisition-batch-size`` (the DDU code's default is 5) runs with a
warning. The fraction of ambiguous samples in the training set after each acquisition is
measured twice: with the ground-truth flag, and as the original does, by a pretrained
Dirty-MNIST model's softmax entropy > ``--threshold`` nats (loaded from
``--saved-model-path``/``--saved-model-name`` -- the name defaults to what
``experiments/train.py`` writes for ``--trained-model``/``-tsn``/``-tmod``/``--tcoeff`` and
``--seed`` after 350 epochs, e.g. ``resnet18_sn_3.0_1_350.keras``, and the original's
``.model`` spelling finds the ``.keras`` file -- or trained here for ``--pretrain-epochs``
epochs if no path is given; ``--pretrain-epochs 0`` skips the measure, which the summary
JSON then says).

Outputs in ``--output-dir`` (resumable: re-running the same command continues after the last
finished round; every file is written atomically):

* ``test_accs_<name>.json`` ``{run: [test accuracy % per round]}`` (the original's layout),
  and with ``-ambiguous`` ``ambiguous_<name>.json`` ``{run: [threshold fraction per
  acquisition]}``, ``ambiguous_entropies_<name>.json`` ``{run: {iteration: [entropies]}}``,
  ``ambiguous_gt_<name>.json`` (ground-truth fractions, same layout as ``ambiguous_``);
* ``summary_<name>.json``: config, sizes per round, both ambiguity measures (whole training
  set as the original, and acquired samples only), timings;
* ``runs/<name>_run<k>.json``: the loop's pool state + history (what resuming reads);
* ``tensorboard/<name>/run<k>``: scalars ``test/accuracy``, ``al/ambiguous_fraction_gt``,
  ``al/ambiguous_fraction_threshold`` against the number of labelled samples;
* ``al_plot_<dataset>.png``: test accuracy vs training-set size for every acquisition type
  found in the directory (mean +- std over runs), plus the ambiguous fraction on Dirty-MNIST;
* ``comparison_<dataset>.json`` / ``.png``: every acquisition type's test accuracy at 100 /
  200 / 300 labels and (Dirty-MNIST) the ground-truth share of ambiguous samples among the
  acquired ones, mean +- standard error over runs, beside the paper's figure
  (``PAPER_ACCURACY``).

CPU scale (all default to the original's setting): ``--pool-subset`` scores a random subset of
the pool per round (stateless in seed and round, so a resumed run scores the same subset),
``--val-size`` fixes the validation set's size instead of ``--val-fraction``, ``--test-subset``
measures accuracy on a seeded subset of MNIST test, and ``-e`` / ``--fixed-length`` set the
training per round. Set, they are part of the run's identity (resuming with other values is
refused); unset, they are left out of it, so results files of earlier versions still resume.

Differences from the original, on purpose: the best-validation epoch is really kept (the
original stores a reference to the model it keeps training, so it always ends with the last
epoch); the DDU density is ranked in log space (the original's ``exp`` underflows); the
pretrained model's default ``--trained-model`` is ``resnet18`` with ``-tsn`` (the original's
default ``resnet18_sn`` is not a key of its model table); ``--num-runs`` is a flag (the
original hard-codes 5).

``--strategy {default,mirrored,multiworker,tpu}`` (``ddu_tf.distribute``, docs/distributed.md):
networks and optimisers are built under ``strategy.scope()`` and trained data-parallel on
the global ``-b`` batch (``CompiledTrainer(strategy=...)``); test, validation and pool
passes are sharded across replicas (``ddu_tf.inference.Predictor(strategy=...)``, ``-tb`` /
``-sb`` rows per replica), giving the same scores as on one device; only the chief writes
``--output-dir``.

Example (the paper's model on Dirty-MNIST, ~3.5-4.5 h on 2 idle cores:
``results/ddu_active_learning/run_dirty_mnist_resnet18.sh``)::

    python experiments/ddu_active_learning.py --seed 1 --model resnet18 -sn -mod --al-type gmm \
        --dataset dirty-mnist --num-runs 1 -e 4 --fixed-length 512 -b 16 --val-size 300 \
        --pool-subset 2000 --test-subset 2000 --pretrain-epochs 0 \
        --output-dir results/ddu_active_learning/dirty_mnist_resnet18

Example (LeNet, CPU scale)::

    python experiments/ddu_active_learning.py --seed 1 --model lenet --al-type gmm \\
        --max-training-samples 100 --acquisition-batch-size 10 -e 4 --pool-size 10000 \\
        --num-runs 1 --output-dir results/ddu_active_learning/mnist
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import math
import os
import time
import warnings

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from ddu_tf import cli, distribute, metrics  # noqa: E402
from ddu_tf.active_learning import ddu_scoring  # noqa: E402
from ddu_tf.active_learning.loop import (ActiveLearningLoop, check_acquisition_plan,  # noqa: E402
                                         load_results)
from ddu_tf.active_learning.pool import initial_state  # noqa: E402
from ddu_tf.active_learning.trainer import (CompiledTrainer, FixedLengthSampler,  # noqa: E402
                                            fit_best_on_validation)
from ddu_tf.data.al_pools import load_al_pool  # noqa: E402
from ddu_tf.data.dirty_mnist import find_ambiguous_files  # noqa: E402
from ddu_tf.inference import Predictor, ensemble_log_probs  # noqa: E402
from ddu_tf.io.atomic import atomic_write, atomic_write_text  # noqa: E402
from ddu_tf.models import MODELS, get_model  # noqa: E402
from ddu_tf.training import TorchAdam, checkpoint_name  # noqa: E402
from ddu_tf.uncertainty import softmax_entropy  # noqa: E402

NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)
DATASET_NAMES = {"mnist": False, "dirty_mnist": True, "dirty-mnist": True}
"""``--dataset`` spellings (the DDU README writes ``dirty-mnist``) -> ``-ambiguous``."""
MEASUREMENT_KEYS = ("trained_model_name", "tsn", "tcoeff", "tmod", "saved_model_name",
                    "threshold")
"""Flags of the ambiguity measurement only: they do not change a run's acquisitions, so they
are not part of its identity (results files before 2025-12 stored them)."""
DIRTY_ONLY_KEYS = ("subsample", "ambiguous_config", "ambiguous_images")
"""Flags that only shape the Dirty-MNIST pool (not part of an MNIST run's identity)."""
SCALE_KEYS = ("val_size", "pool_subset", "test_subset")
"""CPU-scale flags (None = the original's setting); part of a run's identity when set."""
TEST_SUBSET_SALT = 0x7E57


# ----------------------------------------------------------------------------- arguments
def build_parser():
    """The original's ``al_args`` flags (same names, dests and defaults) plus ours."""
    p = argparse.ArgumentParser(description="DDU active learning (MNIST / Dirty-MNIST)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seed", type=int, required=True, dest="seed", help="Seed to use")
    p.add_argument("--model", type=str, default="resnet18", dest="model_name",
                   help=f"Model to train: one of {sorted(MODELS)}")
    p.add_argument("-ambiguous", action="store_true", dest="ambiguous",
                   help="Dirty-MNIST pool: clean MNIST subsample + Ambiguous-MNIST")
    p.add_argument("--dataset", type=str, default=None, dest="dataset",
                   choices=sorted(DATASET_NAMES),
                   help="mnist, or dirty-mnist / dirty_mnist (the same as -ambiguous)")
    p.add_argument("--dataset-root", type=str, default=None, dest="dataset_root",
                   help="Folder holding amnist_samples.pt / amnist_labels.pt (official config); "
                        "defaults to --data-dir")
    p.add_argument("--trained-model", type=str, default="resnet18", dest="trained_model_name",
                   help="Architecture of the pretrained model that flags ambiguous samples")
    p.add_argument("-tsn", action="store_true", dest="tsn", help="pretrained model uses SN")
    p.add_argument("--tcoeff", type=float, default=3.0, dest="tcoeff",
                   help="SN coefficient of the pretrained model")
    p.add_argument("-tmod", action="store_true", dest="tmod", help="pretrained model uses -mod")
    p.add_argument("--saved-model-path", type=str, default=None, dest="saved_model_path",
                   help="Folder of the pretrained .keras model (None: train one, see "
                        "--pretrain-epochs)")
    p.add_argument("--saved-model-name", type=str, default=None, dest="saved_model_name",
                   help="File name of the pretrained model (default: what experiments/train.py "
                        "writes for --trained-model, -tsn, -tmod, --tcoeff and --seed after 350 "
                        "epochs, e.g. resnet18_sn_3.0_1_350.keras; a '.model' name also finds "
                        "the '.keras' file)")
    p.add_argument("--threshold", type=float, default=1.0, dest="threshold",
                   help="Entropy (nats) above which the pretrained model calls a sample ambiguous")
    p.add_argument("--subsample", type=int, default=1000, dest="subsample",
                   help="Clean MNIST images in the Dirty-MNIST pool")
    p.add_argument("--num-ensemble", type=int, default=5, dest="num_ensemble",
                   help="Number of models in the ensemble")
    p.add_argument("-sn", action="store_true", dest="sn", help="spectral normalisation")
    p.add_argument("--coeff", type=float, default=3.0, dest="coeff", help="SN coefficient")
    p.add_argument("-mod", action="store_true", dest="mod", help="architectural modifications")
    p.add_argument("--al-type", type=str, default="softmax", choices=list(ddu_scoring.AL_TYPES),
                   dest="al_type", help="Acquisition strategy")
    p.add_argument("-mi", action="store_true", dest="mi", help="ensemble: acquire by MI, not PE")
    p.add_argument("--num-initial-samples", type=int, default=20, dest="num_initial_samples")
    p.add_argument("--max-training-samples", type=int, default=300, dest="max_training_samples")
    p.add_argument("--acquisition-batch-size", type=int, default=5, dest="acquisition_batch_size")
    p.add_argument("-e", type=int, default=20, dest="epochs", help="Epochs per round")
    p.add_argument("-b", type=int, default=64, dest="train_batch_size", help="Training batch size")
    p.add_argument("-tb", type=int, default=512, dest="test_batch_size", help="Test batch size")
    p.add_argument("-sb", type=int, default=128, dest="scoring_batch_size",
                   help="Pool scoring batch size")
    # Ours.
    p.add_argument("--output-dir", type=str, default="results/ddu_active_learning",
                   dest="output_dir")
    p.add_argument("--report", action="store_true",
                   help="only rebuild comparison_<dataset>.json / .png from the summary_*.json "
                        "files in --output-dir (no data, no training)")
    p.add_argument("--data-dir", type=str, default=None, dest="data_dir",
                   help="Manual data folder (mnist/, ambiguous_mnist/); default $DDU_TF_DATA_DIR")
    p.add_argument("--ambiguous-config", type=str, default=None,
                   choices=["generated", "official"], dest="ambiguous_config",
                   help="Ambiguous-MNIST: the official .pt files or the offline regeneration "
                        "(TFDS ambiguous_mnist/generated); default: official when the files are "
                        "in --dataset-root / --data-dir / $DDU_TF_DATA_DIR, else generated")
    p.add_argument("--tfds-data-dir", type=str, default=None, dest="tfds_data_dir",
                   help="TFDS data dir for the generated Ambiguous-MNIST")
    p.add_argument("--num-runs", type=int, default=5, dest="num_runs",
                   help="Repetitions (run k seeds its networks with seed + k)")
    p.add_argument("--fixed-length", type=int, default=5056, dest="fixed_length",
                   help="Draws per epoch of the fixed-length sampler")
    p.add_argument("--lr", type=float, default=1e-3, dest="learning_rate")
    p.add_argument("--weight-decay", type=float, default=5e-4, dest="weight_decay",
                   help="Coupled L2 weight decay (torch.optim.Adam semantics)")
    p.add_argument("--val-fraction", type=float, default=0.1, dest="val_fraction",
                   help="Fraction of the pool held out for best-epoch selection")
    p.add_argument("--val-size", type=int, default=None, dest="val_size",
                   help="Validation points held out of the pool (overrides --val-fraction; "
                        "CPU scale: every epoch evaluates them)")
    p.add_argument("--pool-subset", type=int, default=None, dest="pool_subset",
                   help="Score only a random subset of this many pool points per round "
                        "(stateless: seed and round; None scores the whole pool)")
    p.add_argument("--test-subset", type=int, default=None, dest="test_subset",
                   help="Measure test accuracy on a seeded random subset of this many MNIST "
                        "test images (None: all 10k)")
    p.add_argument("--pool-size", type=int, default=None, dest="pool_size",
                   help="MNIST: random subset of the 60k training images (CPU scale)")
    p.add_argument("--ambiguous-images", type=int, default=None, dest="ambiguous_images",
                   help="Dirty-MNIST: keep the first K Ambiguous-MNIST train images (CPU scale)")
    p.add_argument("--noise-std", type=float, default=0.0, dest="noise_std",
                   help="Fixed Gaussian noise after normalisation (0 as the DDU repo)")
    p.add_argument("--pretrain-epochs", type=int, default=2, dest="pretrain_epochs",
                   help="Epochs of the pretrained ambiguity model when none is loaded (0: skip)")
    distribute.add_strategy_argument(p)
    return p


def parse_args(argv=None, log=print):
    """Parse and check the flags (ValueError naming the flag on bad values).

    Resolves ``--dataset`` (into ``ambiguous``) and, for Dirty-MNIST, ``--ambiguous-config``
    (official when the files are found, else generated, saying so with ``log``); warns
    (``UserWarning``) when ``-ambiguous`` runs with acquisition batches below 10.
    """
    args = build_parser().parse_args(argv)
    for name in ("num_initial_samples", "acquisition_batch_size", "epochs", "train_batch_size",
                 "num_runs", "fixed_length", "num_ensemble", "test_batch_size",
                 "scoring_batch_size", "val_size", "pool_subset", "test_subset"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"Expected --{name.replace('_', '-')} >= 1. Received: "
                             f"{getattr(args, name)}")
    if args.max_training_samples < args.num_initial_samples:
        raise ValueError("Expected --max-training-samples >= --num-initial-samples. Received: "
                         f"{args.max_training_samples} < {args.num_initial_samples}")
    if not 0.0 < args.val_fraction < 1.0:
        raise ValueError(f"Expected 0 < --val-fraction < 1. Received: {args.val_fraction}")
    if args.model_name not in MODELS:
        raise ValueError(f"Expected --model in {sorted(MODELS)}. Received: {args.model_name!r}")
    check_acquisition_plan(args.acquisition_batch_size, 0, pool_subset_size=args.pool_subset,
                           names={"acquisition_size": "--acquisition-batch-size",
                                  "pool_subset_size": "--pool-subset"})
    if args.mi and args.al_type != "ensemble":
        raise ValueError(f"-mi needs --al-type ensemble. Received: --al-type {args.al_type}")
    if args.dataset is not None:
        if args.ambiguous and not DATASET_NAMES[args.dataset]:
            raise ValueError("-ambiguous contradicts --dataset mnist. Received both; use "
                             "--dataset dirty-mnist (or -ambiguous alone).")
        args.ambiguous = DATASET_NAMES[args.dataset]
        args.dataset = None  # folded into -ambiguous (one identity per run)
    if args.ambiguous:
        if args.ambiguous_config is None:
            root = args.dataset_root or args.data_dir
            found = find_ambiguous_files(root)
            args.ambiguous_config = "official" if found else "generated"
            if not found:
                log("No official Ambiguous-MNIST files (amnist_samples.pt, amnist_labels.pt) in "
                    f"{root or '$DDU_TF_DATA_DIR'} (or its ambiguous_mnist/): using the "
                    "regenerated set (--ambiguous-config generated).")
        if args.acquisition_batch_size < 10:
            warnings.warn(
                "Dirty-MNIST guidance (BlackHC/ddu_dirty_mnist): acquire at least 10 points "
                "per step -- every Ambiguous-MNIST image comes with 10 labels, so smaller "
                "batches can fill up with one image's copies. Received: "
                f"--acquisition-batch-size {args.acquisition_batch_size} (5 is the DDU code's "
                "default, kept as its protocol).", UserWarning, stacklevel=2)
    return args


def saved_model_file(args):
    """Path of the pretrained ambiguity model: ``--saved-model-path`` / the name, where a
    missing ``--saved-model-name`` is what ``experiments/train.py`` writes after 350 epochs
    and an original ``.model`` name also matches the ``.keras`` file."""
    name = args.saved_model_name or checkpoint_name(args.trained_model_name, args.tsn,
                                                    args.tmod, args.tcoeff, args.seed, 350)
    path = os.path.join(args.saved_model_path, name)
    stem, extension = os.path.splitext(path)
    if not os.path.exists(path) and extension != ".keras" and os.path.exists(stem + ".keras"):
        return stem + ".keras"
    return path


def run_config(args):
    """The flags that identify a run (its acquisitions): what resuming must match."""
    excluded = {"output_dir", "data_dir", "dataset_root", "tfds_data_dir", "num_runs",
                "saved_model_path", "test_batch_size", "scoring_batch_size", "pretrain_epochs",
                "strategy", "tpu", "dataset", "report", *MEASUREMENT_KEYS}
    if not args.ambiguous:
        excluded.update(DIRTY_ONLY_KEYS)
    if args.val_size is not None:
        excluded.add("val_fraction")  # --val-size overrides it
    # Scale flags at their default (None) are left out, so runs saved before they existed
    # resume with the same command.
    excluded.update(k for k in SCALE_KEYS if getattr(args, k) is None)
    return {k: v for k, v in vars(args).items() if k not in excluded}


def validation_size(args, pool_size):
    """Validation points held out of a pool of ``pool_size``: ``--val-size``, else
    ``floor(--val-fraction * pool_size)`` (the original's 10%)."""
    if args.val_size is not None:
        if args.val_size + args.num_initial_samples >= pool_size:
            raise ValueError(f"Expected --val-size + --num-initial-samples < the pool size "
                             f"{pool_size}. Received: --val-size {args.val_size}")
        return int(args.val_size)
    return int(math.floor(args.val_fraction * pool_size))


def run_name(args) -> str:
    """The original's file stem: ``<model>[_sn_<coeff>][_mod]_<seed>_<al_type>[_mi]_<dataset>``."""
    if args.sn:
        middle = f"_sn_{args.coeff}_mod_" if args.mod else f"_sn_{args.coeff}_"
    else:
        middle = "_mod_" if args.mod else "_"
    mi = "_mi" if (args.al_type == "ensemble" and args.mi) else ""
    data = f"dirty_mnist_{args.subsample}" if args.ambiguous else "mnist"
    return f"{args.model_name}{middle}{args.seed}_{args.al_type}{mi}_{data}"


# ----------------------------------------------------------------------------- models
def build_model(name, sn, coeff, mod):
    """A fresh network ``[batch, 28, 28, 1]`` -> logits from the model registry."""
    return get_model(name, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE,
                     spectral_normalization=sn, coeff=coeff, mod=mod)


def make_trainer(args, spec, *, epochs, batch_size, sampler, strategy=None):
    """The run's compiled trainer of one network ``spec = (name, sn, coeff, mod)``: TorchAdam
    (``--lr``, coupled ``--weight-decay``), the given sampler, built under ``strategy``."""
    return CompiledTrainer(
        lambda: build_model(*spec), epochs=epochs, batch_size=batch_size, sampler=sampler,
        optimizer=lambda: TorchAdam(args.learning_rate, coupled_weight_decay=args.weight_decay),
        strategy=strategy)


def accuracy_percent(predictors, images, labels):
    """Test accuracy (%) of the mean softmax of one network or an ensemble."""
    return 100.0 * metrics.accuracy(labels, ensemble_log_probs(predictors, images).argmax(-1))


# ----------------------------------------------------------------------------- ambiguity
def pretrained_entropies(args, pool, log):
    """Softmax entropy (nats) of the pretrained Dirty-MNIST model on every pool sample.

    Returns ``(entropies [N] or None, info dict)``; ``None`` with ``info["skipped"]`` set when
    no model is given and ``--pretrain-epochs 0``.
    """
    if args.saved_model_path is not None:
        path = saved_model_file(args)
        if not os.path.exists(path):
            raise ValueError(f"--saved-model-path/--saved-model-name: no file {path!r}. Pass an "
                             "existing .keras model or omit --saved-model-path to train one.")
        model = keras.models.load_model(path, compile=False)
        info = {"source": "loaded", "path": path}
    elif args.pretrain_epochs > 0:
        tag = "_sn" if args.tsn else ""
        tag += "_mod" if args.tmod else ""
        path = os.path.join(args.output_dir, "pretrained",
                            f"{args.trained_model_name}{tag}_{args.tcoeff}_{args.seed}_"
                            f"{args.ambiguous_config}_e{args.pretrain_epochs}.keras")
        if os.path.exists(path):
            model = keras.models.load_model(path, compile=False)
        else:
            model = train_pretrained(args, log)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, model.save)
        info = {"source": f"trained here on Dirty-MNIST train for {args.pretrain_epochs} epochs",
                "path": path, "architecture": args.trained_model_name, "sn": args.tsn,
                "mod": args.tmod, "coeff": args.tcoeff}
    else:
        return None, {"skipped": "No pretrained model given (--saved-model-path) and "
                                 "--pretrain-epochs 0: the entropy-threshold ambiguity measure "
                                 "is not computed; the ground-truth is_ambiguous measure is."}
    logits = Predictor(model, chunk_size=args.test_batch_size).logits(pool.images)
    ent = np.asarray(softmax_entropy(logits), np.float64)
    flagged = ent > args.threshold
    info.update({
        "threshold_nats": args.threshold,
        "pool_flagged_fraction": float(flagged.mean()),
        "pool_ambiguous_fraction_gt": float(pool.is_ambiguous.mean()),
        "flagged_among_ambiguous": float(flagged[pool.is_ambiguous].mean()) if pool.is_ambiguous.any() else None,
        "flagged_among_clean": float(flagged[~pool.is_ambiguous].mean()) if (~pool.is_ambiguous).any() else None,
    })
    return ent, info


def train_pretrained(args, log):
    """Train the ambiguity-flagging model on Dirty-MNIST train (all 60k MNIST + ambiguous pairs)."""
    from ddu_tf.data import dirty_mnist  # heavy TFDS import only when needed
    arrays = dirty_mnist.load_dirty_arrays("train_full", args.ambiguous_config,
                                           args.dataset_root or args.data_dir, args.tfds_data_dir)
    x, y = dirty_mnist.prepare(arrays)
    log(f"training the pretrained ambiguity model ({args.trained_model_name}, sn={args.tsn}, "
        f"mod={args.tmod}) on {len(y)} Dirty-MNIST samples for {args.pretrain_epochs} epochs")
    trainer = make_trainer(args, (args.trained_model_name, args.tsn, args.tcoeff, args.tmod),
                           epochs=args.pretrain_epochs, batch_size=128,
                           sampler=FixedLengthSampler(len(y)))
    trainer.fit(x, y, seed=args.seed + 7919, sampler_seed=[args.seed, 7919])
    return trainer.model


# ----------------------------------------------------------------------------- outputs
def _dump(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=1))


def write_outputs(args, name, pool, run_paths, entropies, threshold_info, timings):
    """Rebuild every aggregate JSON from the per-run loop files (so resuming is exact)."""
    test_accs, amb_thr, amb_ent, amb_gt, runs = {}, {}, {}, {}, {}
    for run, path in enumerate(run_paths):
        if not os.path.exists(path):
            continue
        saved = load_results(path)
        history, labelled = saved["history"], np.asarray(saved["state"]["labelled"], np.int64)
        if not history:
            continue
        n0 = history[0]["num_labelled"]
        test_accs[run] = [h["metrics"]["test/accuracy"] for h in history]
        sizes, gt_all, gt_acq, thr_all, thr_acq, ents = [], [], [], [], [], {}
        for it, h in enumerate(history):
            if not h["acquired"]:
                continue
            size = h["num_labelled"] + len(h["acquired"])
            train_idx, acq_idx = labelled[:size], labelled[n0:size]
            sizes.append(size)
            gt_all.append(float(pool.is_ambiguous[train_idx].mean()))
            gt_acq.append(float(pool.is_ambiguous[acq_idx].mean()))
            if entropies is not None:
                thr_all.append(float((entropies[train_idx] > args.threshold).mean()))
                thr_acq.append(float((entropies[acq_idx] > args.threshold).mean()))
                ents[it] = [float(e) for e in entropies[train_idx]]
        runs[run] = {"num_labelled": [h["num_labelled"] for h in history],
                     "test_accuracy": test_accs[run],
                     "round_seconds": [h["round_seconds"] for h in history],
                     "size_after_acquisition": sizes}
        if args.ambiguous:
            amb_gt[run] = gt_all
            runs[run].update({"ambiguous_fraction_gt": gt_all,
                              "ambiguous_fraction_gt_acquired_only": gt_acq})
            if entropies is not None:
                amb_thr[run], amb_ent[run] = thr_all, ents
                runs[run].update({"ambiguous_fraction_threshold": thr_all,
                                  "ambiguous_fraction_threshold_acquired_only": thr_acq})
    out = args.output_dir
    _dump(os.path.join(out, f"test_accs_{name}.json"), test_accs)
    if args.ambiguous:
        _dump(os.path.join(out, f"ambiguous_gt_{name}.json"), amb_gt)
        if entropies is not None:
            _dump(os.path.join(out, f"ambiguous_{name}.json"), amb_thr)
            _dump(os.path.join(out, f"ambiguous_entropies_{name}.json"), amb_ent)
    summary = {
        "name": name,
        "dataset": "dirty_mnist" if args.ambiguous else "mnist",
        "al_type": args.al_type + ("_mi" if args.mi else ""),
        "args": vars(args),
        "pool": {"size": len(pool), "ambiguous": int(pool.is_ambiguous.sum())},
        "ambiguity_threshold_measure": threshold_info,
        "runs": runs,
        "timings": timings,
    }
    _dump(os.path.join(out, f"summary_{name}.json"), summary)
    return summary


PAPER_SIZES = (100, 200, 300)
WINDOW_ROUNDS = 5
"""``accuracy_window``: the mean test accuracy of the rounds ending at a size, this many (a
single round's accuracy of a network trained on a few hundred points moves by several points
from one round to the next)."""
PAPER_ACCURACY = {
    "mnist": {"300": {"softmax": 91.3, "gmm": 95.7, "ensemble": 94.3, "ensemble_mi": 96.3}},
    "dirty_mnist": {"100": {"softmax": 34, "gmm": 45, "ensemble": 33, "ensemble_mi": 40},
                    "300": {"softmax": 52, "gmm": 75, "ensemble": 55, "ensemble_mi": 70}},
}
"""Test accuracy (%) of the paper's active-learning figure (ResNet-18 + SN + mod, 5 runs),
read off the figure (about +-2 points; REFERENCE.md section 1)."""
AL_LABELS = {"softmax": "Softmax entropy", "gmm": "DDU (GMM density)",
             "ensemble": "5-Ensemble PE", "ensemble_mi": "5-Ensemble MI"}


def _summaries(output_dir, dataset):
    out = []
    for path in sorted(glob.glob(os.path.join(output_dir, "summary_*.json"))):
        with open(path, encoding="utf-8") as handle:
            s = json.load(handle)
        if s["dataset"] == dataset and s["runs"]:
            out.append(s)
    return out


def _mean_se(values):
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return None
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else None
    return {"mean": float(v.mean()), "standard_error": se, "runs": int(v.size),
            "values": v.tolist()}


def paper_comparison(output_dir, dataset, sizes=PAPER_SIZES):
    """``comparison_<dataset>.json`` / ``.png``: every acquisition type's test accuracy (%) at
    ``sizes`` labelled samples and, on Dirty-MNIST, the fraction of ambiguous samples among
    the acquired ones (ground truth; initial set excluded), mean +- standard error over the
    runs (sample std / sqrt(runs)), beside :data:`PAPER_ACCURACY`. Returns the dict or None."""
    summaries = _summaries(output_dir, dataset)
    if not summaries:
        return None
    rows = {}
    for s in summaries:
        runs = list(s["runs"].values())
        row = {"name": s["name"], "accuracy": {}, "accuracy_window": {},
               "ambiguous_acquired_fraction": {}}
        for size in sizes:
            accs, windows, fracs = [], [], []
            for r in runs:
                if size in r["num_labelled"]:
                    at = r["num_labelled"].index(size)
                    accs.append(r["test_accuracy"][at])
                    if at + 1 >= WINDOW_ROUNDS:
                        windows.append(float(np.mean(
                            r["test_accuracy"][at + 1 - WINDOW_ROUNDS:at + 1])))
                after = r.get("size_after_acquisition", [])
                if "ambiguous_fraction_gt_acquired_only" in r and size in after:
                    fracs.append(r["ambiguous_fraction_gt_acquired_only"][after.index(size)])
            row["accuracy"][str(size)] = _mean_se(accs)
            row["accuracy_window"][str(size)] = _mean_se(windows)
            if dataset == "dirty_mnist":
                row["ambiguous_acquired_fraction"][str(size)] = _mean_se(fracs)
        args = s["args"]
        row["setting"] = {k: args.get(k) for k in (
            "model_name", "sn", "coeff", "mod", "epochs", "fixed_length", "acquisition_batch_size",
            "pool_subset", "val_size", "val_fraction", "test_subset", "ambiguous_config",
            "subsample", "noise_std")}
        row["pool"] = s["pool"]
        rows[s["al_type"]] = row
    result = {"dataset": dataset, "sizes": list(sizes), "ours": rows,
              "paper": PAPER_ACCURACY[dataset],
              "paper_note": "ResNet-18 + SN + mod, 20 -> 300 labels in steps of 5, 5 runs; "
                            "values read off the paper's figure (about +-2 points)",
              "ours_note": "mean +- standard error (sample std / sqrt(runs)) over the runs given; "
                           "accuracy = the round at that size, accuracy_window = per run the "
                           f"mean over the {WINDOW_ROUNDS} rounds ending at that size; "
                           "ambiguous fraction = ground-truth is_ambiguous among the acquired "
                           "samples (initial 20 excluded)"}
    _dump(os.path.join(output_dir, f"comparison_{dataset}.json"), result)
    _plot_comparison(result, os.path.join(output_dir, f"comparison_{dataset}.png"))
    return result


def _plot_comparison(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirty = result["dataset"] == "dirty_mnist"
    types = [t for t in AL_LABELS if t in result["ours"]]
    sizes = result["sizes"]
    fig, axes = plt.subplots(1, 2 if dirty else 1, figsize=(11 if dirty else 6, 4.2),
                             squeeze=False)
    width = 0.8 / max(len(types), 1)
    for k, t in enumerate(types):
        row = result["ours"][t]
        keys = ["accuracy"] + (["ambiguous_acquired_fraction"] if dirty else [])
        for col, key in enumerate(keys):
            ax = axes[0, col]
            scale = 100.0 if col else 1.0
            cells = [row[key][str(size)] for size in sizes]
            means = [scale * c["mean"] if c else np.nan for c in cells]
            errs = [scale * (c["standard_error"] or 0.0) if c else 0.0 for c in cells]
            runs = max((c["runs"] for c in cells if c), default=0)
            ax.bar(np.arange(len(sizes)) + (k - (len(types) - 1) / 2) * width, means, width,
                   yerr=errs if any(errs) else None, capsize=3, color=f"C{k}",
                   label=f"{AL_LABELS[t]}, ours ({runs} run{'s' * (runs != 1)})")
            if col == 0:
                for j, size in enumerate(sizes):
                    paper = result["paper"].get(str(size), {}).get(t)
                    if paper is not None:
                        ax.plot(j + (k - (len(types) - 1) / 2) * width, paper, "k*",
                                markersize=10, label="paper (ResNet-18+SN+mod)"
                                if (k, j) == (0, len(sizes) - 1) else None)
    axes[0, 0].set_xticks(range(len(sizes)), [str(s) for s in sizes])
    axes[0, 0].set_xlabel("labelled training samples")
    axes[0, 0].set_ylabel("MNIST test accuracy (%)")
    axes[0, 0].set_title(f"{'Dirty-MNIST' if dirty else 'MNIST'}: ours (bars, +- s.e.) "
                         "vs paper (*)")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    if dirty:
        axes[0, 1].set_xticks(range(len(sizes)), [str(s) for s in sizes])
        axes[0, 1].set_xlabel("labelled training samples")
        axes[0, 1].set_ylabel("ambiguous among acquired (%)")
        axes[0, 1].set_title("Ground-truth ambiguous share of the acquired samples")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def plot_results(output_dir, dataset):
    """``al_plot_<dataset>.png``: accuracy (and ambiguous fraction) vs training-set size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = _summaries(output_dir, dataset)
    if not summaries:
        return None
    ambiguous = dataset == "dirty_mnist"
    fig, axes = plt.subplots(1, 2 if ambiguous else 1, figsize=(11 if ambiguous else 6, 4.2),
                             squeeze=False)
    labels = AL_LABELS
    for s in summaries:
        runs = list(s["runs"].values())
        length = min(len(r["test_accuracy"]) for r in runs)
        x = runs[0]["num_labelled"][:length]
        acc = np.array([r["test_accuracy"][:length] for r in runs])
        label = labels.get(s["al_type"], s["al_type"])
        (line,) = axes[0, 0].plot(x, acc.mean(0), label=f"{label} ({len(runs)} run{'s' * (len(runs) > 1)})")
        if len(runs) > 1:
            axes[0, 0].fill_between(x, acc.mean(0) - acc.std(0), acc.mean(0) + acc.std(0),
                                    alpha=0.2, color=line.get_color())
        if ambiguous and all("ambiguous_fraction_gt" in r for r in runs):
            n = min(len(r["ambiguous_fraction_gt"]) for r in runs)
            if n:
                frac = np.array([r["ambiguous_fraction_gt"][:n] for r in runs])
                axes[0, 1].plot(runs[0]["size_after_acquisition"][:n], 100 * frac.mean(0), label=label,
                                color=line.get_color())
    axes[0, 0].set_xlabel("Number of training samples")
    axes[0, 0].set_ylabel("Test accuracy (%)")
    axes[0, 0].set_title(f"Active learning on {'Dirty-MNIST' if ambiguous else 'MNIST'}")
    axes[0, 0].grid(alpha=0.3)
    axes[0, 0].legend()
    if ambiguous:
        axes[0, 1].set_xlabel("Number of training samples")
        axes[0, 1].set_ylabel("Ambiguous samples in training set (%)")
        axes[0, 1].set_title("Ground-truth ambiguous fraction")
        axes[0, 1].grid(alpha=0.3)
        axes[0, 1].legend()
    fig.tight_layout()
    path = os.path.join(output_dir, f"al_plot_{dataset}.png")
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    if args.report:
        dataset = "dirty_mnist" if args.ambiguous else "mnist"
        if paper_comparison(args.output_dir, dataset) is None:
            raise ValueError(f"Expected summary_*.json files of {dataset} runs in --output-dir. "
                             f"Received: none in {args.output_dir!r}; run the acquisitions "
                             "first (same flags without --report)")
        print(f"wrote {os.path.join(args.output_dir, f'comparison_{dataset}.json')} and .png")
        return None
    strategy = distribute.strategy_from_args(args)  # first: multi-worker needs it at startup
    sharding = strategy if args.strategy != "default" else None
    args.output_dir = distribute.worker_directory(strategy, args.output_dir)
    os.makedirs(args.output_dir, exist_ok=True)
    name = run_name(args)
    start = time.perf_counter()

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {message}", flush=True)

    pool, test_x, test_y = load_al_pool(
        "dirty_mnist" if args.ambiguous else "mnist", variant=args.ambiguous_config or "generated",
        data_dir=args.dataset_root or args.data_dir, tfds_data_dir=args.tfds_data_dir,
        subsample=args.subsample, pool_size=args.pool_size,
        ambiguous_images_limit=args.ambiguous_images, seed=args.seed, noise_std=args.noise_std)
    if args.test_subset is not None and args.test_subset < len(test_y):
        keep = np.sort(np.random.default_rng([args.seed, TEST_SUBSET_SALT]).choice(
            len(test_y), args.test_subset, replace=False))
        test_x, test_y = test_x[keep], test_y[keep]
    log(f"pool {len(pool)} samples ({int(pool.is_ambiguous.sum())} ambiguous), test {len(test_y)}")
    entropies, threshold_info = (pretrained_entropies(args, pool, log) if args.ambiguous
                                 else (None, {"skipped": "MNIST pool: no ambiguous samples"}))
    num_rounds = math.ceil((args.max_training_samples - args.num_initial_samples)
                           / args.acquisition_batch_size)
    state0 = initial_state(pool.labels, num_initial=args.num_initial_samples,
                           num_validation=validation_size(args, len(pool)),
                           seed=args.seed, balanced=True)
    val_idx = np.asarray(state0.validation, np.int64)
    val_x, val_y = pool.images[val_idx], pool.labels[val_idx]
    spec = (args.model_name, args.sn, args.coeff, args.mod)
    trainers = [make_trainer(args, spec, epochs=args.epochs, batch_size=args.train_batch_size,
                             sampler=FixedLengthSampler(args.fixed_length), strategy=sharding)
                for _ in range(args.num_ensemble if args.al_type == "ensemble" else 1)]
    test_predictors = [Predictor(t.model, chunk_size=args.test_batch_size, strategy=sharding)
                       for t in trainers]
    score_predictors = [Predictor(t.model, chunk_size=args.scoring_batch_size,
                                  strategy=sharding) for t in trainers]
    loop_config = run_config(args)
    run_paths = [os.path.join(args.output_dir, "runs", f"{name}_run{run}.json")
                 for run in range(args.num_runs)]
    timings = {}
    for run in range(args.num_runs):
        trained = {}
        tb_dir = os.path.join(args.output_dir, "tensorboard", name, f"run{run}")

        def train_fn(labelled, round_index, run=run):
            trained["labelled"] = labelled
            seed = (args.seed + run) * 10_000 + round_index
            best = fit_best_on_validation(
                trainers, pool.images[labelled], pool.labels[labelled], (val_x, val_y),
                seeds=[seed * 1000 + k for k in range(len(trainers))],
                sampler_seeds=[[seed, k] for k in range(len(trainers))],
                chunk_size=args.test_batch_size)
            trained["val"] = 100.0 * best
            return [t.model for t in trainers]

        def evaluate_fn(models, round_index):
            return {"test/accuracy": accuracy_percent(test_predictors, test_x, test_y),
                    "val/accuracy": trained["val"]}

        def score_fn(models, candidates, round_index):
            labelled = trained["labelled"]
            return ddu_scoring.acquisition_scores(
                args.al_type, score_predictors, pool.images[candidates],
                labelled_images=pool.images[labelled], labelled_labels=pool.labels[labelled],
                num_classes=NUM_CLASSES, mutual_information=args.mi)
        def on_round_end(record, models, run=run):
            size = record["num_labelled"]
            if "writer" not in trained:  # opened lazily: a finished run re-run writes no file
                trained["writer"] = tf.summary.create_file_writer(tb_dir)
            writer = trained["writer"]
            with writer.as_default():
                tf.summary.scalar("test/accuracy", record["metrics"]["test/accuracy"], step=size)
                if args.ambiguous and record["acquired"]:
                    now = np.asarray(loop.state.labelled, np.int64)
                    tf.summary.scalar("al/ambiguous_fraction_gt", pool.is_ambiguous[now].mean(),
                                      step=len(now))
                    if entropies is not None:
                        tf.summary.scalar("al/ambiguous_fraction_threshold",
                                          (entropies[now] > args.threshold).mean(), step=len(now))
            writer.flush()
            log(f"run {run} round {record['round']}: {size} labelled, test acc "
                f"{record['metrics']['test/accuracy']:.2f}% ({record['round_seconds']:.1f}s)")
            write_outputs(args, name, pool, run_paths, entropies, threshold_info, timings)

        loop = ActiveLearningLoop(
            copy.deepcopy(state0),
            train_fn=train_fn, evaluate_fn=evaluate_fn, score_fn=score_fn,
            acquisition_size=args.acquisition_batch_size, num_rounds=num_rounds,
            result_path=run_paths[run], config=loop_config, on_round_end=on_round_end,
            pool_subset_size=args.pool_subset,
            legacy_config_keys=MEASUREMENT_KEYS + DIRTY_ONLY_KEYS)
        if loop.next_round > 0:
            log(f"run {run}: resuming at round {loop.next_round} of {num_rounds}")
        loop.run()
        if "writer" in trained:
            trained["writer"].close()
        timings[f"run{run}_seconds_this_invocation"] = time.perf_counter() - start
    summary = write_outputs(args, name, pool, run_paths, entropies, threshold_info, timings)
    plot = plot_results(args.output_dir, summary["dataset"])
    paper_comparison(args.output_dir, summary["dataset"])
    log(f"done in {time.perf_counter() - start:.0f}s; plot {plot}")
    return summary


if __name__ == "__main__":
    cli.run(main)
