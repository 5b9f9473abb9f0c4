"""Deep Bayesian Active Learning with Image Data (Gal, Islam & Ghahramani 2017) on MNIST.

Experiments (``--experiment``):
  1  all five acquisition functions with the MC-dropout Bayesian CNN (paper Fig. 1, Table 1).
  2  BALD / Var Ratios / Max Entropy with MC dropout vs the deterministic CNN (Fig. 2).
  3  binary two-digit MNIST: MC-dropout acquisition vs Minimum Bayes Risk on an RBF graph
     (Zhu, Lafferty & Ghahramani 2003) (Fig. 3).
  4  5000 validation points; test error after 1000 acquired images (Table 2).

Flags of the seed re-implementation (lunayht/DBALwithImgData ``main.py``) keep their
names and defaults; ``--acq_func``: 0 all, 1 uniform (random), 2 max entropy, 3 BALD,
4 variation ratios, 5 mean STD. ``--determ`` scores (and tests) with the deterministic
CNN. Each run is resumable: results are written atomically after every round to
``<result_dir>/exp<k>/<run>_seed<s>/results.json``; re-running the same command continues from the last
finished round. Outputs: TensorBoard scalars (``<result_dir>/tensorboard``), a PNG of test
accuracy vs acquired images, and ``table.json`` / ``table.md`` (images to reach 10% / 5%
test error, and the error at the last round).

The CNN is trained by ``ddu_tf.active_learning.CompiledTrainer`` (one model per run,
re-initialised in place each round, all epochs in one ``tf.function``) and the
``MCDropoutPredictor``s on it are traced once per run; ``--mixed-precision`` runs it under
Keras' ``mixed_bfloat16`` policy. ``--tune-weight-decay`` chooses the weight decay with
keras-tuner trials that train and validate exactly as the run's round does
(:func:`weight_decay_tuner`), once on the initial set or, with ``--tune-every K``, again
every K rounds (Experiment 4 tunes every round by default, as the paper's Table 2).
``--test-eval`` and ``--cnn`` give the authors' Keras script's protocol (deterministic test
pass; conv 3x3, pool 5, dense 256) beside the paper's; settings added after the first
Experiment-1 runs enter a run's config only when not at their default, so those runs resume.

``--strategy {default,mirrored,tpu}`` (``ddu_tf.distribute``, docs/distributed.md): the
trainer builds the CNN and its optimiser under ``strategy.scope()`` and splits every
(global, ``--batch_size``) batch over the replicas; the MC-dropout pool / test scoring is
sharded across replicas with the same masks as on one device
(``MCDropoutPredictor(strategy=...)``). ``multiworker`` is refused: the resumable results
files are written by one process, and a worker that resumed differently from the others
would wait forever in the collective ops.

Example (a CPU-scale run)::

    python experiments/bayesian_al.py --experiment 1 --rounds 20 --epochs 50 \\
        --dropout_iter 20 --test-size 2000
"""
import argparse
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from ddu_tf import cli, distribute
from ddu_tf.active_learning import (ActiveLearningLoop, CompiledTrainer,
                                    atomic_write_text, check_acquisition_plan,
                                    class_mass_normalized, collect_results, first_reaching, get_acquisition,
                                    mean_std_over_runs,
                                    harmonic_solution, harmonic_update, initial_state,
                                    load_results, mbr_expected_risk, random_scores,
                                    rbf_graph)
from ddu_tf.inference import MCDropoutPredictor, Predictor
from ddu_tf.io.atomic import atomic_write
from ddu_tf.uncertainty import log_mean_prob
from ddu_tf.data.al_pools import load_mnist_pixels
from ddu_tf.models.bayesian_cnn import (ALL_DECAY_LAYERS, AUTHORS_CODE_SHAPE,
                                        AUTHORS_DECAY_LAYERS, PAPER_SHAPE, bayesian_cnn)

ACQ_FUNC_CODES = {1: ["random"], 2: ["max_entropy"], 3: ["bald"], 4: ["var_ratios"],
                  5: ["mean_std"],
                  0: ["random", "bald", "var_ratios", "max_entropy", "mean_std"]}
PAPER_TABLE_1 = {"random": (255, 835), "mean_std": (230, 695), "bald": (145, 335),
                 "var_ratios": (120, 295), "max_entropy": (165, 355)}
PAPER_TABLE_2 = {"random": 4.66, "bald": 1.80, "max_entropy": 1.74, "var_ratios": 1.64}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch_size", type=int, default=128, help="training batch size")
    p.add_argument("--epochs", type=int, default=50, help="training epochs per round")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=369, help="base seed of every draw")
    p.add_argument("--experiments", type=int, default=3, help="repeats (seeds seed+e)")
    p.add_argument("--dropout_iter", type=int, default=100, help="T, MC dropout samples")
    p.add_argument("--query", type=int, default=10, help="points acquired per round")
    p.add_argument("--acq_func", type=int, default=0, choices=sorted(ACQ_FUNC_CODES),
                   help="0 all, 1 uniform, 2 max entropy, 3 BALD, 4 var ratios, 5 mean STD")
    p.add_argument("--val_size", type=int, default=None,
                   help="validation points (default 100; 5000 for --experiment 4)")
    p.add_argument("--result_dir", default="results/bayesian_al")
    p.add_argument("--determ", action="store_true",
                   help="deterministic CNN (no dropout) for acquisition and test")
    p.add_argument("--experiment", type=int, default=1, choices=[1, 2, 3, 4])
    p.add_argument("--rounds", type=int, default=100, help="acquisition rounds")
    p.add_argument("--pool-subset", type=int, default=2000,
                   help="random pool points scored per round (0 = whole pool)")
    p.add_argument("--initial", type=int, default=20, help="class-balanced initial points")
    p.add_argument("--reinit", action=argparse.BooleanOptionalAction, default=True,
                   help="re-initialise the model every round (paper) or keep training")
    p.add_argument("--data-dir", default=None, help="MNIST IDX dir (else $DDU_TF_DATA_DIR)")
    p.add_argument("--test-size", type=int, default=10000, help="test points used")
    p.add_argument("--test-dropout-iter", type=int, default=None,
                   help="T for MC-averaged test predictions (default --dropout_iter)")
    p.add_argument("--train-limit", type=int, default=None,
                   help="use only the first N training images (tests, smoke runs)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 coefficient is weight_decay / N_train (authors: 3.5); "
                        "default 3.5 unless --tune-weight-decay")
    p.add_argument("--weight-decay-on", choices=["features", "all"], default="features",
                   help="L2 on the first dense layer (authors' code) or on every kernel")
    p.add_argument("--tune-weight-decay", action="store_true",
                   help="choose weight_decay on the validation set with keras-tuner "
                        "(default for --experiment 4 unless --weight-decay is given)")
    p.add_argument("--tune-every", type=int, default=0,
                   help="with --tune-weight-decay: tune again every K rounds (1 = every "
                        "round, the paper's Table 2); 0 = once, on the initial set")
    p.add_argument("--tune-trials", type=int, default=4)
    p.add_argument("--test-eval", choices=["mc", "deterministic", "both"], default="mc",
                   help="test/val predictions: MC-averaged over T dropout masks (the paper), "
                        "one deterministic pass with dropout off (the authors' Keras "
                        "model.evaluate), or both (test/* MC, test_determ/* deterministic)")
    p.add_argument("--cnn", choices=["paper", "authors_code"], default="paper",
                   help="Bayesian CNN shape: the paper's conv 4x4, pool 2, dense 128, or the "
                        "authors' Keras script's conv 3x3, pool 5, dense 256")
    p.add_argument("--consistent-masks", action="store_true",
                   help="acquisition: the same T dropout masks for every pool point")
    p.add_argument("--test-masks", choices=["consistent", "independent"], default="consistent",
                   help="MC test predictions with T weight samples shared by all test points "
                        "(consistent; same per-point distribution, 2-4x faster) or drawn "
                        "per point")
    p.add_argument("--mixed-precision", action="store_true",
                   help="Keras 'mixed_bfloat16' policy: bfloat16 compute, float32 weights "
                        "(~1.8x faster on CPUs with AVX512-BF16 and on GPUs)")
    p.add_argument("--functions", nargs="+", default=None,
                   help="override the acquisition functions (names)")
    p.add_argument("--digits", type=int, nargs=2, default=[4, 9],
                   help="the two digits of the binary task (experiment 3; our default, "
                        "the paper's pair was not checked)")
    p.add_argument("--mbr-graph-size", type=int, default=2000,
                   help="pool points in the MBR graph (experiment 3)")
    p.add_argument("--mbr-neighbors", type=int, default=10,
                   help="nearest neighbours per image in the MBR graph, symmetrised "
                        "(experiment 3; 0 = the dense RBF graph, which stays at chance)")
    p.add_argument("--summary-only", action="store_true",
                   help="only rebuild table.json / table.md / PNG from saved results")
    p.add_argument("--report", action="store_true",
                   help="only rebuild every experiment's table / PNG under --result_dir "
                        "and its README.md (mean, std over seeds; paper tables beside)")
    distribute.add_strategy_argument(p)
    args = p.parse_args(argv)
    if args.strategy == "multiworker":
        p.error("--strategy multiworker is not supported by this script (its resumable "
                "results are written by one process; a worker resuming differently would "
                "block the others); use --strategy mirrored")
    if args.val_size is None:
        args.val_size = 5000 if args.experiment == 4 else 100
    if args.experiment == 4 and args.weight_decay is None and not args.tune_weight_decay:
        args.tune_weight_decay, args.tune_every = True, args.tune_every or 1
    if args.tune_every < 0 or (args.tune_every and not args.tune_weight_decay):
        p.error(f"Expected --tune-every >= 0, with --tune-weight-decay. Received: "
                f"--tune-every {args.tune_every}")
    if args.test_dropout_iter is None:
        args.test_dropout_iter = args.dropout_iter
    try:
        check_acquisition_plan(args.query, args.rounds, pool_subset_size=args.pool_subset or None,
                               names={"acquisition_size": "--query", "num_rounds": "--rounds",
                                      "pool_subset_size": "--pool-subset"})
    except ValueError as e:
        p.error(str(e))
    return args


def load_data(args):
    """MNIST pixels in [0, 1] (:func:`load_mnist_pixels`); Experiment 3: ``--digits`` only."""
    return load_mnist_pixels(args.data_dir, train_limit=args.train_limit or None,
                             digits=args.digits if args.experiment == 3 else None)


def runs_for(args):
    """``[(run_name, acquisition_name, determ)]`` of the chosen experiment."""
    if args.experiment == 2:
        names = args.functions or ["bald", "var_ratios", "max_entropy"]
        return [(f"{n}_{mode}", n, mode == "determ") for n in names for mode in ("mc", "determ")]
    if args.experiment == 3:
        names = args.functions or ["bald", "var_ratios", "max_entropy", "random", "mbr"]
        return [(n, n, True if n == "mbr" else args.determ) for n in names]
    if args.experiment == 4:
        names = args.functions or ["random", "bald", "max_entropy", "var_ratios"]
        return [(n, n, args.determ) for n in names]
    return [(n, n, args.determ) for n in (args.functions or ACQ_FUNC_CODES[args.acq_func])]


CNN_SHAPES = {"paper": PAPER_SHAPE, "authors_code": AUTHORS_CODE_SHAPE}


def decay_layers(args):
    """Layers whose kernels get weight decay: ``--weight-decay-on`` features (authors) or all."""
    return ALL_DECAY_LAYERS if args.weight_decay_on == "all" else AUTHORS_DECAY_LAYERS


def round_seed(seed, round_index):
    return int(np.random.SeedSequence([seed, round_index]).generate_state(1)[0] % (2 ** 31))


class CNNRun:
    """Train / evaluate / score callables of one Bayesian-CNN active-learning run."""

    def __init__(self, args, data, state, acquisition, determ, seed, weight_decay, run_dir,
                 strategy=None):
        self.args, self.state, self.seed, self.determ = args, state, seed, determ
        self.strategy = strategy  # None: one device
        self.x_train, self.y_train, self.x_test, self.y_test = data
        self.acquisition, self.weight_decay, self.run_dir = acquisition, weight_decay, run_dir
        self.num_classes = int(max(self.y_train.max(), self.y_test.max()) + 1)
        self.decay_layers = decay_layers(args)
        self._trainer = None
        self._predictors = {}

    @property
    def trainer(self):
        """The run's one compiled trainer (one model for the whole run)."""
        if self._trainer is None:
            self._trainer = CompiledTrainer(
                lambda: bayesian_cnn(self.num_classes, dropout=not self.determ,
                                     **CNN_SHAPES[self.args.cnn]),
                epochs=self.args.epochs, batch_size=self.args.batch_size,
                learning_rate=self.args.lr, decay_layers=self.decay_layers,
                strategy=self.strategy)
        return self._trainer

    def train(self, labelled, round_index):
        """One round's model; with ``--tune-every K`` the weight decay is first tuned again
        (keras-tuner trials of :meth:`fit`) at every K-th round, the choice kept in
        ``weight_decay.json`` (a resumed round reuses it)."""
        every = self.args.tune_every if self.args.tune_weight_decay else 0
        if every:
            self.weight_decay = tuned_weight_decay(self, labelled,
                                                   round_index - round_index % every)
        return self.fit(labelled, round_index)

    def weights_path(self, round_index):
        """``--no-reinit``: the weights trained in round ``round_index``."""
        return os.path.join(self.run_dir, f"weights_round{round_index}.weights.h5")

    def fit(self, labelled, round_index):
        """One round's model: re-initialised (paper) or, with ``--no-reinit``, continued from
        the previous round's weights, then trained.

        ``--no-reinit`` keeps one weights file per round (the two latest): a round -- a rerun
        after a kill, a tuner trial -- always starts from the previous round's weights, never
        from its own earlier attempt, so a resumed run equals an uninterrupted one.
        """
        seed = round_seed(self.seed, round_index)
        previous = self.weights_path(round_index - 1)
        restore = not self.args.reinit and round_index > 0 and os.path.exists(previous)
        model = self.trainer.model
        if restore:
            model.load_weights(previous)
        self.trainer.fit(self.x_train[labelled], self.y_train[labelled], seed=seed,
                         initialize=not restore,
                         weight_decay=self.weight_decay / max(len(labelled), 1))
        if not self.args.reinit:
            atomic_write(self.weights_path(round_index), model.save_weights)
            for older in range(round_index - 1):
                if os.path.exists(self.weights_path(older)):
                    os.remove(self.weights_path(older))
        return model

    def _predictor(self, num_samples, consistent):
        """A cached ``MCDropoutPredictor`` of the run's one model: its compiled functions
        read the weights by reference, so they are traced once per run, not per round."""
        key = (int(num_samples), bool(consistent))
        if key not in self._predictors:
            self._predictors[key] = MCDropoutPredictor(
                self.trainer.model, num_samples, consistent_masks=consistent,
                strategy=self.strategy)
        return self._predictors[key]

    def split_metrics(self, split, round_index, deterministic=False):
        """``{split/accuracy, split/error, split/nll}`` of "test" or "val" (empty if the
        split is): MC-averaged predictions ``log mean_t p_t`` (T = ``--test-dropout-iter``)
        or one deterministic pass (dropout off: Keras' weight-scaling inference)."""
        idx, x, y = ((self.state.test, self.x_test, self.y_test) if split == "test"
                     else (self.state.validation, self.x_train, self.y_train))
        if not len(idx):
            return {}
        if deterministic or self.determ:
            log_p = tf.nn.log_softmax(Predictor(self.trainer.model).logits(x[idx])).numpy()
        else:
            predictor = self._predictor(self.args.test_dropout_iter,
                                        self.args.test_masks == "consistent")
            log_p = predictor.reduce(x[idx], log_mean_prob,
                                     seed=(self.seed, round_index)).numpy()
        accuracy = float(np.mean(log_p.argmax(-1) == y[idx]))
        return {f"{split}/accuracy": accuracy, f"{split}/error": 1.0 - accuracy,
                f"{split}/nll": float(-np.mean(log_p[np.arange(len(idx)), y[idx]]))}

    def evaluate(self, model, round_index):
        mode = self.args.test_eval
        metrics = {}
        for split in ("test", "val"):
            metrics.update(self.split_metrics(split, round_index, mode == "deterministic"))
            if mode == "both":
                metrics.update({k.replace(f"{split}/", f"{split}_determ/"): v for k, v in
                                self.split_metrics(split, round_index, True).items()})
        if self.args.tune_weight_decay and self.args.tune_every:
            metrics["train/weight_decay"] = float(self.weight_decay)
        return metrics

    def score(self, model, candidates, round_index):
        seed = (self.seed, 10_000 + round_index)
        if self.acquisition == "random":
            return random_scores(tf.zeros([1, len(candidates), 1]), seed=seed).numpy()
        predictor = self._predictor(self.args.dropout_iter, self.args.consistent_masks)
        return predictor.reduce(self.x_train[candidates], get_acquisition(self.acquisition),
                                seed=seed).numpy()


class MBRRun:
    """Minimum Bayes Risk on an RBF graph over labelled + pool subset + test (transductive).

    The graph keeps each image's ``num_neighbors`` nearest neighbours (symmetrised;
    ``rbf_graph``); None is the dense graph, on which MBR stays at chance. The harmonic
    solution of a round is computed once (evaluation and scoring share it) and carried to
    the next round by ``harmonic_update`` when the labelled set only grew.

    Test predictions are class-mass normalised (``class_mass_normalized``) with the class-1
    share ``prior`` of the random initial set (Laplace-smoothed), not of all labelled points:
    the acquired labels are chosen by the acquisition, not drawn from the classes'
    proportions. (With the labelled share, seed 369's first acquisition -- 63% nines --
    moved the prior to 0.62 and the test error from 7.4% to 40.6%.)
    """

    def __init__(self, data, state, num_neighbors=10):
        self.x_train, self.y_train, self.x_test, self.y_test = data
        self.state = state
        self.graph_pool = np.asarray(state.pool, dtype=np.int64)
        self.initial = np.asarray(state.labelled, dtype=np.int64)
        initial_labels = self.y_train[self.initial]
        self.prior = (initial_labels.sum() + 1.0) / (initial_labels.size + 2.0)
        self.nodes = np.concatenate([self.initial, self.graph_pool])
        features = np.concatenate([self.x_train[self.nodes].reshape(len(self.nodes), -1),
                                   self.x_test[state.test].reshape(len(state.test), -1)])
        self.weights = rbf_graph(features, num_neighbors=num_neighbors)
        self.node_of = {int(i): k for k, i in enumerate(self.nodes)}
        self._labelled, self._solution = np.zeros([0], np.int64), None

    def solution(self, labelled_nodes):
        """``(unlabelled, f_u, green)`` of the graph with ``labelled_nodes`` labelled."""
        labelled_nodes = np.asarray(labelled_nodes, np.int64)
        labels = self.y_train[self.nodes[labelled_nodes]]
        seen = len(self._labelled)
        if self._solution is not None and np.array_equal(labelled_nodes[:seen], self._labelled):
            if len(labelled_nodes) > seen:
                self._solution = harmonic_update(*self._solution, labelled_nodes[seen:],
                                                 labels[seen:])
        else:
            self._solution = harmonic_solution(self.weights, labelled_nodes, labels)
        self._labelled = labelled_nodes
        return self._solution

    def train(self, labelled, round_index):
        return np.array([self.node_of[int(i)] for i in labelled], dtype=np.int64)

    def evaluate(self, labelled_nodes, round_index):
        unlabelled, f_u, _ = self.solution(labelled_nodes)
        test_nodes = np.arange(len(self.nodes), self.weights.shape[0])
        predicted = class_mass_normalized(f_u, self.prior)[np.searchsorted(unlabelled,
                                                                            test_nodes)]
        accuracy = float(np.mean(predicted == self.y_test[self.state.test]))
        return {"test/accuracy": accuracy, "test/error": 1.0 - accuracy}

    def score(self, labelled_nodes, candidates, round_index):
        labels = self.y_train[self.nodes[labelled_nodes]]
        cand_nodes = np.array([self.node_of[int(i)] for i in candidates], dtype=np.int64)
        return -mbr_expected_risk(self.weights, labelled_nodes, labels, cand_nodes,
                                  solution=self.solution(labelled_nodes))


WEIGHT_DECAY_RANGE = (0.035, 35.0)
"""Search range of ``weight_decay`` (L2 = weight_decay / N_train; the authors fix 3.5)."""


def weight_decay_tuner(runner, args, labelled, round_index, directory):
    """A keras-tuner random search over ``weight_decay`` whose trials train with the run's
    own recipe: a trial is ``runner.fit`` of round ``round_index`` on ``labelled`` -- its
    compiled trainer, seed, data and weight-decay placement -- with the trial's value, scored
    by the accuracy on the validation points (``val/accuracy`` as the run measures it,
    maximised). keras-tuner's trial files go to ``directory``."""
    import keras_tuner

    labelled = np.asarray(labelled, np.int64)

    class WeightDecayTuner(keras_tuner.RandomSearch):
        def run_trial(self, trial, *fit_args, **fit_kwargs):
            runner.weight_decay = trial.hyperparameters.Float(
                "weight_decay", *WEIGHT_DECAY_RANGE, sampling="log")
            runner.fit(labelled, round_index)
            deterministic = args.test_eval == "deterministic"
            return {"val_accuracy": runner.split_metrics("val", round_index,
                                                         deterministic)["val/accuracy"]}

    return WeightDecayTuner(
        hypermodel=None, objective=keras_tuner.Objective("val_accuracy", "max"),
        max_trials=args.tune_trials, seed=round_seed(runner.seed, round_index),
        directory=directory, project_name=f"round{round_index}", overwrite=True)


def tune_weight_decay(runner, args, labelled, round_index=0):
    """Pick ``weight_decay`` (L2 = wd / N_train) on the validation set with keras-tuner.

    Returns:
        ``(best, trials)``: the chosen value and ``[[weight_decay, val_accuracy], ...]``.
    """
    import tempfile

    if not len(runner.state.validation):
        raise ValueError("Expected validation points to tune the weight decay on. Received: "
                         "--val_size 0.")
    with tempfile.TemporaryDirectory(prefix="wd_tuner_") as directory:
        tuner = weight_decay_tuner(runner, args, labelled, round_index, directory)
        tuner.search()
        trials = [[t.hyperparameters.get("weight_decay"), t.score]
                  for t in tuner.oracle.trials.values()]
        best = float(tuner.get_best_hyperparameters(1)[0].get("weight_decay"))
    return best, trials


def tuned_weight_decay(runner, labelled, round_index):
    """The weight decay tuned at ``round_index`` (read from ``<run_dir>/weight_decay.json``
    when this round was tuned before, else tuned now and saved there)."""
    path = os.path.join(runner.run_dir, "weight_decay.json")
    saved = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle).get("per_round", {})
    if str(round_index) not in saved:
        best, trials = tune_weight_decay(runner, runner.args, labelled, round_index)
        saved[str(round_index)] = {"weight_decay": best, "trials": trials}
        atomic_write_text(path, json.dumps({"per_round": saved}, indent=1))
    return saved[str(round_index)]["weight_decay"]


def run_config(args, acquisition, determ, seed, weight_decay):
    keys = ["batch_size", "epochs", "lr", "dropout_iter", "query", "val_size",
            "pool_subset", "initial", "reinit", "test_size", "test_dropout_iter",
            "train_limit", "consistent_masks", "experiment", "digits", "mbr_graph_size",
            "weight_decay_on", "test_masks", "mixed_precision"]
    config = {k: getattr(args, k) for k in keys}
    config.update(acquisition=acquisition, determ=determ, seed=seed, weight_decay=weight_decay)
    if acquisition == "mbr":
        # mbr_prior: the class prior of the test predictions (MBRRun); runs saved before it
        # used the labelled share and do not resume under this code.
        config.update(mbr_neighbors=args.mbr_neighbors, mbr_prior="initial_set")
    # Settings added after the first Experiment-1 runs: in the config only when not the
    # default, so those runs (saved without them) still resume and extend.
    if args.tune_weight_decay and args.tune_every:
        config.update(tune_every=args.tune_every, tune_trials=args.tune_trials)
    if args.test_eval != "mc":
        config["test_eval"] = args.test_eval
    if args.cnn != "paper":
        config["cnn"] = args.cnn
    return config


def make_state(args, data, seed):
    _, y_train, x_test, _ = data
    pool_size = args.mbr_graph_size if args.experiment == 3 else None
    return initial_state(y_train, num_initial=args.initial, num_validation=args.val_size,
                         test_size=len(x_test), num_test=args.test_size, seed=seed,
                         pool_size=pool_size)


def tensorboard_callback(log_dir):
    writer = tf.summary.create_file_writer(log_dir)

    def on_round_end(record, model):
        with writer.as_default():
            for name, value in record["metrics"].items():
                tf.summary.scalar(name, value, step=record["num_acquired"])
            tf.summary.scalar("time/round_seconds", record["round_seconds"],
                              step=record["num_acquired"])
        writer.flush()
        print(f"  round {record['round']:3d}  acquired {record['num_acquired']:4d}  "
              + "  ".join(f"{k} {v:.4f}" for k, v in record["metrics"].items())
              + f"  ({record['round_seconds']:.1f}s)", flush=True)
    return on_round_end


def continue_from_experiment_1(args, acquisition, determ, seed, config, result_path):
    """Start an Experiment-2 MC-dropout run from Experiment 1's run of the same function.

    They are the same computation (same data, split, seeds and settings), so when
    ``exp1/<function>_seed<s>/results.json`` exists with a config equal up to the
    ``experiment`` number, it is copied (and later continued) instead of recomputed.
    """
    if args.experiment != 2 or determ or not args.reinit or os.path.exists(result_path):
        return
    source = os.path.join(args.result_dir, "exp1", f"{acquisition}_seed{seed}", "results.json")
    if not os.path.exists(source):
        return
    saved = load_results(source)
    if {**saved["config"], "experiment": args.experiment} != json.loads(json.dumps(config)):
        return
    saved["config"] = config
    atomic_write_text(result_path, json.dumps(saved))
    print(f"[{acquisition} seed {seed}] continuing Experiment 1's run ({source})", flush=True)


def run_one(args, data, run_name, acquisition, determ, seed, strategy=None):
    exp_dir = os.path.join(args.result_dir, f"exp{args.experiment}")
    run_dir = os.path.join(exp_dir, f"{run_name}_seed{seed}")
    os.makedirs(run_dir, exist_ok=True)
    state = make_state(args, data, seed)
    wd_path = os.path.join(run_dir, "weight_decay.json")
    if acquisition == "mbr":
        weight_decay = None
    elif args.weight_decay is not None:
        weight_decay = args.weight_decay
    elif args.tune_weight_decay and args.tune_every:
        weight_decay = None  # tuned in CNNRun.train
    elif args.tune_weight_decay:
        if not os.path.exists(wd_path):
            tuning = CNNRun(args, data, state, acquisition, determ, seed, None, run_dir, strategy)
            chosen, trials = tune_weight_decay(tuning, args, state.labelled)
            atomic_write_text(wd_path, json.dumps({"weight_decay": chosen, "trials": trials}))
        with open(wd_path, encoding="utf-8") as handle:
            weight_decay = json.load(handle)["weight_decay"]
    else:
        weight_decay = 3.5
    if acquisition == "mbr":
        runner = MBRRun(data, state, num_neighbors=args.mbr_neighbors or None)
    else:
        runner = CNNRun(args, data, state, acquisition, determ, seed, weight_decay, run_dir,
                        strategy)
    config = run_config(args, acquisition, determ, seed, weight_decay)
    result_path = os.path.join(run_dir, "results.json")
    continue_from_experiment_1(args, acquisition, determ, seed, config, result_path)
    loop = ActiveLearningLoop(
        state, train_fn=runner.train, evaluate_fn=runner.evaluate, score_fn=runner.score,
        acquisition_size=args.query, num_rounds=args.rounds,
        result_path=result_path,
        pool_subset_size=(args.pool_subset or None) if acquisition != "mbr" else None,
        config=config,
        on_round_end=tensorboard_callback(os.path.join(args.result_dir, "tensorboard",
                                                       f"exp{args.experiment}",
                                                       f"{run_name}_seed{seed}")))
    runner.state = loop.state  # resumed state, if any
    print(f"[{run_name} seed {seed}] starting at round {loop.next_round}", flush=True)
    return loop.run()


def images_to_error(history, max_error, key="test/error"):
    """Acquired images at the first round whose ``key`` is <= ``max_error`` (None if never)."""
    return first_reaching([r["num_acquired"] for r in history],
                          [r["metrics"][key] for r in history], max_error,
                          higher_is_better=False)


REPORT_ACQUIRED = (100, 200, 300, 500, 1000)
"""Acquired-image counts whose test error the tables list."""


def summarise_runs(saved_runs, error_key="test/error"):
    """Seed statistics of one run name: images to 10% / 5% error (per seed and mean, std),
    error at ``REPORT_ACQUIRED`` images (%, over the seeds that got there), wall time."""
    histories = [saved["history"] for saved in saved_runs]
    rounds = [len(h) - 1 for h in histories]
    row = {"seeds": [saved["config"]["seed"] for saved in saved_runs],
           "rounds_done": rounds, "acquired_last": [h[-1]["num_acquired"] for h in histories]}
    for name, threshold in (("to_10pct_error", 0.10), ("to_5pct_error", 0.05)):
        per_seed = [images_to_error(h, threshold, error_key) for h in histories]
        row[name] = {"per_seed": per_seed}
        # a seed still running that has not got there yet leaves the mean open
        row[name]["mean"], row[name]["std"] = mean_std_over_runs(per_seed)
    row["error_pct_at"] = {}
    for acquired in REPORT_ACQUIRED:
        errors = [100 * r["metrics"][error_key] for h in histories for r in h
                  if r["num_acquired"] == acquired]
        if errors:
            mean, std = mean_std_over_runs(errors)
            row["error_pct_at"][str(acquired)] = {"mean": mean, "std": std,
                                                  "seeds": len(errors)}
    minutes = [sum(r["round_seconds"] for r in h) / 60 for h in histories]
    # the mean over the seeds with the most rounds: a seed still running would pull it down
    most = max(rounds)
    longest = [m for m, n in zip(minutes, rounds) if n == most]
    row["wall_minutes"] = {"per_seed": minutes, "mean": float(np.mean(longest)),
                           "seeds": len(longest)}
    return row


def plot_curves(runs, path, title, error_key="test/error"):
    """Test accuracy vs acquired images: mean over seeds, band = +-1 std (sample, ddof 1),
    over the rounds every seed has finished."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(7, 4.5))
    for run_name, saved_runs in runs.items():
        histories = [saved["history"] for saved in saved_runs]
        length = min(len(h) for h in histories)
        acquired = [histories[0][r]["num_acquired"] for r in range(length)]
        acc = np.array([[1 - h[r]["metrics"][error_key] for r in range(length)]
                        for h in histories])
        seeds = f"{len(histories)} seed{'' if len(histories) == 1 else 's'}"
        line, = plt.plot(acquired, acc.mean(0), label=f"{run_name} ({seeds})")
        if len(histories) > 1:
            std = acc.std(0, ddof=1)
            plt.fill_between(acquired, acc.mean(0) - std, acc.mean(0) + std, alpha=0.2,
                             color=line.get_color(), linewidth=0)
    plt.xlabel("acquired images")
    plt.ylabel("test accuracy")
    plt.title(title + "\nmean over seeds, band: +-1 std")
    plt.grid(alpha=0.3)
    plt.legend(fontsize=8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight"))
    plt.close(fig)


def _fmt(stat, digits=0):
    """``mean +- std`` (or ``mean``, or ``not reached``) of a ``{"mean", "std"}`` dict."""
    if stat is None or stat.get("mean") is None:
        return "not reached"
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" +- {stat['std']:.{digits}f}" if stat.get("std") is not None else "")


def _of_seeds(count, seeds):
    """`` (k of n seeds)`` when a cell stands on fewer seeds than its row, else ``""``."""
    return f" ({count} of {seeds} seeds)" if count < seeds else ""


def _paper(name, experiment):
    if experiment == 4:
        return f"{PAPER_TABLE_2[name]:.2f}" if name in PAPER_TABLE_2 else ""
    if experiment == 1:
        return " / ".join(str(v) for v in PAPER_TABLE_1.get(name, ()))
    return ""


def table_lines(table, experiment, wall=True):
    """Markdown rows of one experiment's table (``summarise`` output); ``wall=False`` drops
    the wall-time column (rows whose runs ran on different machines)."""
    paper = "paper error at 1000 (%)" if experiment == 4 else "paper 10% / 5%"
    lines = ["| run | seeds | rounds | images to 10% err | to 5% err | "
             + " | ".join(f"err % at {n}" for n in REPORT_ACQUIRED)
             + f" | {paper} |" + (" wall min / run |" if wall else ""),
             "|---|---|---|---|---|" + "---|" * len(REPORT_ACQUIRED) + "---|"
             + ("---|" if wall else "")]
    for name, row in table.items():
        seeds = len(row["seeds"])
        at = []
        for n in REPORT_ACQUIRED:
            stat = row["error_pct_at"].get(str(n))
            at.append("" if stat is None else _fmt(stat, 2) + _of_seeds(stat["seeds"], seeds))
        rounds = sorted(set(row["rounds_done"]))
        minutes = row["wall_minutes"]
        lines.append(
            f"| {name} | {seeds} | {'/'.join(map(str, rounds))} | "
            f"{_fmt(row['to_10pct_error'])} | {_fmt(row['to_5pct_error'])} | "
            + " | ".join(at) + f" | {_paper(name, experiment)} |"
            + (f" {minutes['mean']:.1f}{_of_seeds(minutes['seeds'], seeds)} |" if wall
               else ""))
    return lines


def summarise(args, exp_dir=None, experiment=None):
    """Write ``table.json``, ``table.md`` and ``test_accuracy.png`` of one experiment dir.

    Covers every run found under ``<result_dir>/exp<k>/`` (runs started by separate
    processes included), aggregating the seeds of each run name: mean and sample standard
    deviation (ddof 1) over seeds.
    """
    experiment = args.experiment if experiment is None else experiment
    exp_dir = exp_dir or os.path.join(args.result_dir, f"exp{experiment}")
    runs = collect_results(exp_dir)
    table = {name: summarise_runs(saved) for name, saved in runs.items()}
    os.makedirs(exp_dir, exist_ok=True)
    if runs:
        plot_curves(runs, os.path.join(exp_dir, "test_accuracy.png"),
                    f"Bayesian active learning, experiment {experiment}")
    atomic_write_text(os.path.join(exp_dir, "table.json"), json.dumps(table, indent=2))
    atomic_write_text(os.path.join(exp_dir, "table.md"),
                      "\n".join(table_lines(table, experiment)) + "\n")
    return table


VARIANTS = {
    "tuned_wd": "Experiment 1 with the weight decay tuned every round on the 100 validation "
                "points (`--tune-weight-decay --tune-every 1`; the paper's wording, issue 20 "
                "item 6), beside the authors' code's fixed 3.5 / N_train above",
}
"""Sub-result-dirs (same layout) that the README reports as their own Experiment-1 table."""


def tuned_comparison(root, variant):
    """Each run of ``<root>/<variant>/exp1`` beside Experiment 1's fixed-weight-decay run of
    the same function and seeds, both cut to the rounds the variant's run has finished
    (seed-matched: the same split, initial set and pool subsets; only the weight decay
    differs). Returns ``{row name: summarise_runs row}`` and ``{function: chosen-decay
    statistics}`` (median chosen value, rounds whose choice is the range's lower end)."""
    tuned = collect_results(os.path.join(root, variant, "exp1"))
    fixed = collect_results(os.path.join(root, "exp1"))
    rows, chosen = {}, {}
    for name, saved_runs in sorted(tuned.items()):
        by_seed = {saved["config"]["seed"]: saved for saved in fixed.get(name, [])}
        matched = [(saved, by_seed[saved["config"]["seed"]]) for saved in saved_runs
                   if saved["config"]["seed"] in by_seed]
        if not matched:
            continue
        cut = [dict(fx, history=fx["history"][:len(tu["history"])]) for tu, fx in matched]
        rows[f"{name}, fixed 3.5 / N_train"] = summarise_runs(cut)
        rows[f"{name}, tuned every round"] = summarise_runs([tu for tu, _ in matched])
        values = []
        for saved in saved_runs:
            path = os.path.join(root, variant, "exp1", f"{name}_seed{saved['config']['seed']}",
                                "weight_decay.json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as handle:
                    values += [r["weight_decay"] for r in json.load(handle)["per_round"].values()]
        if values:
            chosen[name] = {"rounds": len(values), "median": float(np.median(values)),
                            "at_lower_end": int(np.isclose(values, WEIGHT_DECAY_RANGE[0]).sum())}
    return rows, chosen


def tuned_comparison_text(root, variant):
    """The README paragraph and table of :func:`tuned_comparison` ('' when nothing matches)."""
    rows, chosen = tuned_comparison(root, variant)
    if not rows:
        return ""
    low, high = WEIGHT_DECAY_RANGE
    picks = "; ".join(f"{name}: median {c['median']:.3g} over {c['rounds']} rounds, "
                      f"{c['at_lower_end']} of them at {low:g}" for name, c in chosen.items())
    return ("Seed-matched, over the tuned runs' rounds: each tuned run beside Experiment 1's "
            "run of the same function and seed (same split, initial set and pool subsets; "
            "only the weight decay differs). Each round's value is the best of "
            f"`--tune-trials` keras-tuner trials, log-uniform over [{low:g}, {high:g}] "
            "(L2 = value / N_train on the first dense layer), scored by accuracy on the 100 "
            "validation points; the first trial is the range's lower end and ties go to the "
            f"earlier trial, so a tie picks {low:g}. Chosen values: {picks}. No wall times: the "
            "fixed runs' first rounds ran on another machine.\n\n"
            + "\n".join(table_lines(rows, 1, wall=False)) + "\n")


PROTOCOL_DIRS = {"paper": "paper CNN (conv 4x4, pool 2, dense 128)",
                 "authors_code": "authors' Keras script's CNN (conv 3x3, pool 5, dense 256)"}
"""``<result_dir>/protocol/<name>``: Random runs with ``--test-eval both``."""

README_HEAD = """# Deep Bayesian Active Learning (Gal, Islam & Ghahramani 2017) on MNIST

Generated from the committed `results.json` files by

    python experiments/bayesian_al.py --report --result_dir results/bayesian_al

(do not edit by hand; run from the repository root). Each run is one `results.json` under
`exp<k>/<function>_seed<s>/`, written after every round by the command in its queue line
(`results/queue.txt`; logs in `logs/`). `bf16_seed369/` is the archived first seed (bfloat16,
another machine) with its own README, not mixed into these tables.

Setting: the paper's (20 class-balanced initial points, 100 validation points, 10k test
points, 2000-point random pool subset scored per round, 10 acquired per round, T = 100
dropout samples for acquisition and for the MC-averaged test predictions, model
re-initialised every round, Adam lr 1e-3, 50 epochs, batch 128), float32, weight decay
`3.5 / N_train` on the first dense layer (the authors' code) unless a section says otherwise.

**Statistics.** `a +- b` is the mean and the sample standard deviation (ddof 1) over the
seeds counted in the `seeds` column (369, 370, 371, ...); no `+- b` with one seed. "Images to
X% error": per seed, the acquired images at the first round whose 10k-test error is <= X%;
"not reached" when some seed has not got there within its finished rounds (`rounds` lists
the finished rounds of the seeds). "Err % at N" is over the seeds that have got to N
acquired images, and a wall time over the seeds with the most finished rounds; either names
its count, `(k of n seeds)`, when a seed is still short of it. Curves: mean test accuracy over
the seeds, band +-1 std, over the rounds all seeds have finished. Wall time: the sum of the
rounds' times of one run, measured on the shared 2-core machine (other jobs running, so an
upper bound of an idle run).

**Extended runs.** A 30-round run ends with an evaluation-only round 30; extending it to 100
rounds redoes round 30 with its acquisition. The seed-369 runs of Var Ratios and Max Entropy
had their first 30 rounds on an AVX2 CPU and the extension on an AVX-512 CPU, where float
rounding differs: their redone round 30 moved from 5.41% to 4.74% (Var Ratios) and from 5.88%
to 5.20% (Max Entropy) test error, so the `err % at 300` column changed with the extension (the
logs hold both). The 10% column is unchanged. Each start of a run writes TensorFlow's CPU
banner to its log. Mean STD seed 370 (first 30 rounds on an AVX2-only CPU), BALD seed 371
(first 30 rounds on an AVX-512 CPU), and Random, Var Ratios, Max Entropy and Mean STD seed 371
were extended on a slower AVX2-only machine: their redone round 30 moved from 6.80% to 6.73%,
from 6.44% to 5.91%, from 8.69% to 8.64%, from 4.69% to 4.40%, from 6.15% to 6.90% and from
6.04% to 6.51% test error, and their rounds 30-100 took 3689 s, 4228 s, 3979 s, 3827 s, 3584 s
and 3630 s, against 919-1206 s for the other extensions, so the wall-time column mixes
machines.
"""


def protocol_lines(result_dir):
    """Test error (%) of the ``protocol/`` Random runs: MC-averaged vs deterministic pass."""
    lines = []
    for name, label in PROTOCOL_DIRS.items():
        runs = collect_results(os.path.join(result_dir, "protocol", name, "exp1"))
        for run_name, saved_runs in runs.items():
            for saved in saved_runs:
                history = saved["history"]
                if "test_determ/error" not in history[0]["metrics"]:
                    continue
                if not lines:
                    lines = ["| CNN | seed | acquired | test error, MC T=100 (%) | "
                             "test error, deterministic (%) |", "|---|---|---|---|---|"]
                for r in history:
                    lines.append(f"| {label} | {saved['config']['seed']} | "
                                 f"{r['num_acquired']} | {100 * r['metrics']['test/error']:.2f} "
                                 f"| {100 * r['metrics']['test_determ/error']:.2f} |")
    return lines


def _tuning_schedule(exp_dir):
    """'K rounds by T keras-tuner trials' of the runs under ``exp_dir`` (saved configs)."""
    configs = [saved["config"] for runs in collect_results(exp_dir).values() for saved in runs]
    every = sorted({c.get("tune_every", 1) for c in configs})
    trials = sorted({c.get("tune_trials", 4) for c in configs})
    return (f"{' or '.join(map(str, every))} round{'' if every == [1] else 's'} by "
            f"{' or '.join(map(str, trials))} keras-tuner trials")


def write_report(args):
    """Summarise every experiment (and variant) under ``--result_dir`` and write README.md."""
    root = args.result_dir
    sections = [README_HEAD]
    titles = {1: "Experiment 1: acquisition functions (paper Fig. 1, Table 1)",
              2: "Experiment 2: MC dropout vs the deterministic CNN (paper Fig. 2)",
              3: "Experiment 3: binary MNIST (4 vs 9), MC dropout vs MBR (paper Fig. 3/4)",
              4: "Experiment 4: 5000 validation points, tuned weight decay (paper Table 2)"}
    notes = {
        3: "MBR: harmonic function + class mass normalisation on a symmetrised 10-nearest-"
           "neighbour RBF graph over labelled + 2000 pool + test images (transductive; "
           "`--mbr-neighbors`), which learns (table). On the dense RBF graph instead "
           "(`--mbr-neighbors 0`, our first implementation) the harmonic solution is nearly "
           "constant (0.53-0.54) and MBR stays at chance. The class mass normalisation "
           "takes the class proportions of the random initial set: the acquired labels are "
           "not a sample of them, and with their share (this table's earlier runs) single "
           "early rounds reached 33-41% test error. With two classes Max Entropy and "
           "Var Ratios are increasing functions of the same quantity, min(p, 1 - p), so in "
           "exact arithmetic they acquire the same points and their curves coincide by "
           "construction. In float32 the two scores round near-equal points differently: "
           "seed 369's runs acquire the same sets up to round 11, where the same 10 points "
           "come in another order; the labelled set's order sets the training batches, so "
           "the runs part from round 12 on (two draws of the same method, not a "
           "difference between the functions).",
        2: "`<function>_mc` is Experiment 1's run of the same function and seed (the same "
           "computation: copied from `exp1/` and continued); `<function>_determ` is the same "
           "CNN without dropout, acquiring with its softmax output and tested with one "
           "deterministic pass. The paper's Fig. 2 shows MC dropout ahead of the "
           "deterministic CNN for all three functions. With one forward pass BALD's mutual "
           "information is identically 0, so `bald_determ` breaks an all-way tie: it takes "
           "the first points of each round's random pool subset, i.e. it acquires at "
           "random (by construction, not a finding). The deterministic runs of seed 369 "
           "ran on an AVX-512 CPU (12-15 min each), those of seeds 370 and 371 on the "
           "slower AVX2-only machine (seed 370: 44-49 min), so the wall-time column mixes "
           "machines.",
        4: "Paper Table 2 gives the test error after 1000 acquired images; the column "
           "`err % at 1000` is ours. The weight decay is re-tuned every "
           f"{_tuning_schedule(os.path.join(root, 'exp4'))} of the run's own trainer, "
           "scored on the 5000 validation points (the paper tunes at every round). The "
           "tuned values are in each run's `weight_decay.json` (trials and validation "
           "accuracies per round).",
    }
    for experiment in (1, 2, 3, 4):
        exp_dir = os.path.join(root, f"exp{experiment}")
        if not collect_results(exp_dir):
            continue
        table = summarise(args, exp_dir, experiment)
        sections.append(f"## {titles[experiment]}\n")
        if experiment in notes:
            sections.append(notes[experiment] + "\n")
        sections.append("\n".join(table_lines(table, experiment)) + "\n")
        sections.append(f"![test accuracy](exp{experiment}/test_accuracy.png)\n")
    for variant, title in VARIANTS.items():
        exp_dir = os.path.join(root, variant, "exp1")
        if collect_results(exp_dir):
            table = summarise(args, exp_dir, 1)
            sections.append(f"## {title}\n")
            sections.append("\n".join(table_lines(table, 1)) + "\n")
            sections.append(f"![test accuracy]({variant}/exp1/test_accuracy.png)\n")
            sections.append(tuned_comparison_text(root, variant))
    if os.path.exists(os.path.join(root, "authors_curves", "README.md")):
        sections.append(
            "## The authors' released Keras curves\n\n"
            "Experiment 1 beside the test accuracies the authors' repository keeps for its "
            "Keras runs (`Results/Queries=10/*.npy`) and the paper's Table 1, with the same "
            "statistic: [authors_curves/README.md](authors_curves/README.md) "
            "(`experiments/dbal_authors_curves.py`).\n")
    lines = protocol_lines(root)
    if lines:
        sections.append(
            "## Early rounds: the paper's protocol vs the authors' Keras script\n\n"
            "The authors' script (`Dropout_Bald_Q10_N1000_Paper.py`) measures test accuracy "
            "with a deterministic `model.evaluate` (dropout off) and builds a smaller CNN. "
            "Random acquisition with seed 369 (the same acquired points as "
            "`exp1/random_seed369`), each round evaluated both ways "
            "(`--test-eval both`; `protocol/<cnn>/`, commands in `protocol/run.sh`):\n")
        sections.append("\n".join(lines) + "\n")
    text = "\n".join(sections)
    atomic_write_text(os.path.join(root, "README.md"), text)
    return text


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        print(write_report(args))
        return None
    strategy = distribute.strategy_from_args(args)  # first: multi-worker needs it at startup
    strategy = None if args.strategy == "default" else strategy
    tf.get_logger().setLevel("ERROR")
    data = None if args.summary_only else load_data(args)
    start = time.perf_counter()
    if not args.summary_only:
        previous_policy = keras.mixed_precision.global_policy()
        if args.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            for e in range(args.experiments):
                for run_name, acquisition, determ in runs_for(args):
                    run_one(args, data, run_name, acquisition, determ, args.seed + e,
                            strategy)
                    summarise(args)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
    table = summarise(args)
    print(json.dumps(table, indent=2))
    print(f"total wall time {time.perf_counter() - start:.1f}s")
    return table


if __name__ == "__main__":
    cli.run(main)
