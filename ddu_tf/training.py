"""``model.fit`` training of DDU networks: PyTorch-faithful optimizers, the DDU lr schedule,
callbacks (TensorBoard, best / periodic checkpoints, resume), compilation and checkpoint
naming.

Used by ``experiments/train.py`` (and the demo); the optimizers also by the compiled
active-learning trainer (:class:`ddu_tf.active_learning.CompiledTrainer`). The data sets and
their preprocessing are in :mod:`ddu_tf.experiment_data`.

Weight decay (a deliberate choice): the DDU original uses ``torch.optim.SGD(...,
weight_decay=5e-4)`` (and ``torch.optim.Adam`` for active learning), which adds
``weight_decay * w`` to the gradient of *every* parameter (convolutions, BatchNorm scale and
shift, biases) before the momentum/Adam update -- coupled L2. Keras' ``weight_decay`` argument
is decoupled (AdamW-style ``w -= lr * wd * w``), and an L2 kernel regulariser would miss the
BatchNorm parameters. :class:`TorchSGD` and :class:`TorchAdam` therefore add the decay to the
gradient inside the update, exactly like PyTorch. :class:`TorchSGD` also keeps PyTorch's
momentum convention (``buf = mu * buf + g; w -= lr * buf``), whose velocity is in gradient
units, so a learning-rate drop at a milestone takes effect at once (Keras' SGD keeps the old
learning rate inside its velocity).

Checkpoint names follow the original's ``model_save_name`` (utils/train_utils.py):
``{model}[_sn_{coeff}][_mod]_{seed}[_{epoch}].keras``, see :func:`checkpoint_name`.

:class:`FeatureDensityMonitor` (issue 17 item 5) watches DDU's feature density while the
network trains: OoD AUROCs of the GMM density and of softmax entropy, and the features'
within- vs between-class spread (feature collapse), in ``logs`` / History and TensorBoard.

Exact resume: epoch ``e`` visits the examples in :func:`epoch_permutation` order (a pure
function of the seed and ``e``) and :class:`ResumableBackup` stores, after each finished epoch,
everything else the next epoch depends on (weights with SN vectors and BatchNorm statistics,
optimiser slots and step count, dropout seed-generator states, the best checkpoint's monitor
value, the history so far), so a run killed at any point and rerun ends as the uninterrupted
run did.
"""
import json
import os
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ddu_tf import metrics
from ddu_tf.inference import Predictor, fit_gmm, gmm_scores
from ddu_tf.io.atomic import atomic_write, atomic_write_text

_PERMUTATION_SALT = 0x5EED


def epoch_permutation(n, seed, epoch):
    """The example order of epoch ``epoch``: ``int32 [n]``, a pure function of its arguments.

    ``argsort(stateless_uniform([n], fold_in((seed, 0x5EED), epoch)))``: no iterator or RNG
    state is involved, so a resumed run visits the examples in the uninterrupted run's order.
    Works eagerly and inside ``tf.function`` / ``tf.data`` (``epoch`` may be a tensor).

    Args:
        n: number of examples (>= 1).
        seed: int seed of the run.
        epoch: 0-based epoch index (int or integer scalar tensor; folded in as int32).
    """
    pair = tf.constant([int(seed), _PERMUTATION_SALT], tf.int64)
    key = tf.random.experimental.stateless_fold_in(pair, tf.cast(epoch, tf.int32))
    return tf.argsort(tf.random.stateless_uniform([n], key))


def _check_non_negative(**values):
    for key, value in values.items():
        if value is None or value < 0:
            raise ValueError(f"Expected {key} >= 0. Received: {key}={value}")


@keras.saving.register_keras_serializable(package="ddu_tf")
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with momentum and coupled L2 weight decay, as ``torch.optim.SGD``.

    Per variable ``w`` with gradient ``g`` (dampening 0)::

        g <- g + weight_decay * w
        buf <- momentum * buf + g              (buf starts at 0, i.e. buf_1 = g_1)
        w <- w - lr * (g + momentum * buf)     if nesterov
        w <- w - lr * buf                      otherwise

    Args:
        learning_rate: float or ``keras.optimizers.schedules.LearningRateSchedule``.
        momentum: in [0, 1).
        nesterov: Nesterov momentum (needs momentum > 0).
        coupled_weight_decay: L2 coefficient added to the gradient (>= 0).
        **kwargs: base ``keras.optimizers.Optimizer`` arguments (``name``, ``clipnorm``...);
            Keras' decoupled ``weight_decay`` must stay None.
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, nesterov=False, coupled_weight_decay=0.0,
                 name="torch_sgd", **kwargs):
        if kwargs.get("weight_decay") is not None:
            raise ValueError("TorchSGD applies coupled L2 decay; pass coupled_weight_decay, not "
                             f"weight_decay. Received: weight_decay={kwargs['weight_decay']}")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"Expected 0 <= momentum < 1. Received: momentum={momentum}")
        if nesterov and float(momentum) == 0.0:
            raise ValueError("Nesterov momentum requires momentum > 0. Received: momentum=0")
        _check_non_negative(coupled_weight_decay=coupled_weight_decay)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.coupled_weight_decay = float(coupled_weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum != 0:
            self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay:
            gradient = gradient + ops.cast(self.coupled_weight_decay, variable.dtype) * variable
        if self.momentum:
            buf = self.momentums[self._get_variable_index(variable)]
            momentum = ops.cast(self.momentum, variable.dtype)
            self.assign(buf, momentum * buf + gradient)
            gradient = gradient + momentum * buf if self.nesterov else buf
        self.assign_sub(variable, learning_rate * gradient)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov,
                       "coupled_weight_decay": self.coupled_weight_decay})
        return config


@keras.saving.register_keras_serializable(package="ddu_tf")
class TorchAdam(keras.optimizers.Adam):
    """Adam with coupled L2 weight decay (``torch.optim.Adam(weight_decay=...)``, not AdamW).

    ``g <- g + coupled_weight_decay * w`` before the usual Adam moments; ``epsilon`` defaults
    to PyTorch's 1e-8. Other arguments as ``keras.optimizers.Adam``.
    """

    def __init__(self, learning_rate=1e-3, coupled_weight_decay=0.0, epsilon=1e-8,
                 name="torch_adam", **kwargs):
        if kwargs.get("weight_decay") is not None:
            raise ValueError("TorchAdam applies coupled L2 decay; pass coupled_weight_decay, not "
                             f"weight_decay. Received: weight_decay={kwargs['weight_decay']}")
        super().__init__(learning_rate=learning_rate, epsilon=epsilon, name=name, **kwargs)
        _check_non_negative(coupled_weight_decay=coupled_weight_decay)
        self.coupled_weight_decay = float(coupled_weight_decay)

    def update_step(self, gradient, variable, learning_rate):
        if self.coupled_weight_decay:
            gradient = ops.cast(gradient, variable.dtype)
            gradient = gradient + ops.cast(self.coupled_weight_decay, variable.dtype) * variable
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update({"coupled_weight_decay": self.coupled_weight_decay})
        return config


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=False):
    """The optimizer of DDU's ``train.py`` (``--opt``, ``--lr``, ``--mom``, ``--decay``, ``--nesterov``).

    Args:
        name: "sgd" (:class:`TorchSGD`) or "adam" (:class:`TorchAdam`; momentum and nesterov
            are ignored, as in the original).
        lr: learning rate (float or a schedule from :func:`lr_schedule`).
        momentum: SGD momentum in [0, 1).
        weight_decay: coupled L2 coefficient (>= 0), applied to every trainable variable.
        nesterov: Nesterov momentum for SGD.

    Returns:
        A ``keras.optimizers.Optimizer``.

    Example:
        >>> opt = make_optimizer("sgd", lr=lr_schedule(150, 250, lr=0.1, steps_per_epoch=352))
    """
    if name == "sgd":
        return TorchSGD(learning_rate=lr, momentum=momentum, nesterov=nesterov,
                        coupled_weight_decay=weight_decay)
    if name == "adam":
        return TorchAdam(learning_rate=lr, coupled_weight_decay=weight_decay)
    raise ValueError(f"Unknown optimizer. Expected one of {OPTIMIZERS}. Received: name={name!r}")


def lr_schedule(first_milestone=150, second_milestone=250, lr=0.1, steps_per_epoch=1, gamma=0.1):
    """``torch.optim.lr_scheduler.MultiStepLR(milestones=[m1, m2], gamma)`` as a step schedule.

    Epoch ``e`` (0-based) trains with ``lr * gamma ** (number of milestones <= e)``; for
    optimizer step ``t`` (0-based, Keras' ``optimizer.iterations`` before the update),
    ``e = t // steps_per_epoch``. A fractional milestone (a schedule compressed into fewer
    epochs than the paper's, e.g. 0.5) drops the rate at step ``round(m * steps_per_epoch)``;
    an integer milestone gives exactly the per-epoch schedule above.

    Args:
        first_milestone, second_milestone: epochs (int or float) at which the rate is
            multiplied by ``gamma`` (``0 < first_milestone <= second_milestone``).
        lr: initial learning rate (> 0).
        steps_per_epoch: optimizer steps per epoch (>= 1).
        gamma: multiplicative factor (0.1 in DDU).

    Returns:
        ``keras.optimizers.schedules.PiecewiseConstantDecay`` (serialisable).
    """
    if not 0 < first_milestone <= second_milestone:
        raise ValueError("Expected 0 < first_milestone <= second_milestone. Received: "
                         f"first_milestone={first_milestone}, second_milestone={second_milestone}")
    if int(steps_per_epoch) < 1:
        raise ValueError(f"Expected steps_per_epoch >= 1. Received: steps_per_epoch={steps_per_epoch}")
    if not lr > 0:
        raise ValueError(f"Expected lr > 0. Received: lr={lr}")
    steps = int(steps_per_epoch)
    # PiecewiseConstantDecay uses values[i] while step <= boundaries[i], hence the -1.
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries=[int(round(first_milestone * steps)) - 1, int(round(second_milestone * steps)) - 1],
        values=[float(lr), float(lr) * gamma, float(lr) * gamma ** 2])


def checkpoint_name(model, sn, mod, coeff, seed, epoch=None, extension=".keras"):
    """File name of a trained model, following DDU's ``model_save_name`` + ``_{epoch}``.

    ``{model}_{seed}``, ``{model}_mod_{seed}``, ``{model}_sn_{coeff}_{seed}`` or
    ``{model}_sn_{coeff}_mod_{seed}``, then ``_{epoch}`` if given, then ``extension``;
    ``coeff`` is printed as a float (``3.0``). E.g.
    ``checkpoint_name("resnet18", True, True, 3.0, 1, 350) == "resnet18_sn_3.0_mod_1_350.keras"``
    (the original wrote ``resnet18_sn_3.0_mod_1_350.model``).

    Args:
        model: model name as given to ``get_model`` (e.g. "wide_resnet").
        sn: spectral normalisation used.
        mod: ``-mod`` used.
        coeff: SN coefficient (only part of the name when ``sn``).
        seed: the run's seed.
        epoch: number of epochs trained, or None for no epoch suffix.
        extension: file extension, ".keras" by default ("" for a bare stem).
    """
    name = str(model)
    if sn:
        name += f"_sn_{float(coeff)}"
    if mod:
        name += "_mod"
    name += f"_{seed}"
    if epoch is not None:
        name += f"_{epoch}"
    return name + extension


class EpochCheckpoint(keras.callbacks.Callback):
    """Save the whole model every ``interval`` epochs (the original's ``--save-interval``).

    Args:
        path_for_epoch: function ``epochs_done -> file path`` (``.keras``).
        interval: save after epochs ``interval, 2 * interval, ...`` (>= 1).
    """

    def __init__(self, path_for_epoch, interval):
        super().__init__()
        if int(interval) < 1:
            raise ValueError(f"Expected interval >= 1. Received: interval={interval}")
        self.path_for_epoch = path_for_epoch
        self.interval = int(interval)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.interval == 0:
            atomic_write(self.path_for_epoch(epoch + 1), self.model.save)


class StepProgress(keras.callbacks.Callback):
    """One progress line every ``every`` train steps, for logs (``fit(verbose=2)`` prints only
    at epoch ends, so a long epoch shows nothing for its whole length).

    The line gives the epoch, the step within it, the logged running metrics (e.g. ``loss``,
    ``accuracy``), the training speed in examples/s since the epoch began and the time left in
    the epoch at that speed, e.g.
    ``epoch 1/3 step 40/375: loss 0.5321 accuracy 0.8412; 71.3 examples/s, epoch ETA 4.7 min``.

    Args:
        every: print after steps ``every, 2 * every, ...`` of each epoch (>= 1).
        steps_per_epoch: steps of one epoch (>= 1).
        batch_size: examples per step (for the speed).
        epochs: total epochs of the run (for the ``epoch e/E`` label).
        stream: file object written to (default ``sys.stdout``), flushed after each line.
    """

    def __init__(self, every, steps_per_epoch, batch_size, epochs, stream=None):
        super().__init__()
        for name, value in (("every", every), ("steps_per_epoch", steps_per_epoch),
                            ("batch_size", batch_size), ("epochs", epochs)):
            if int(value) < 1:
                raise ValueError(f"Expected {name} >= 1. Received: {name}={value}")
        self.every, self.steps = int(every), int(steps_per_epoch)
        self.batch_size, self.epochs = int(batch_size), int(epochs)
        self.stream = stream
        self._epoch, self._start = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._start = epoch, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if step % self.every or step >= self.steps:  # the epoch-end line covers the last step
            return
        seconds = time.perf_counter() - self._start
        speed = step * self.batch_size / max(seconds, 1e-9)
        left = (self.steps - step) * self.batch_size / speed / 60.0
        logs = dict(logs or {})
        ordered = [(k, logs.pop(k)) for k in ("loss",) if k in logs] + sorted(logs.items())
        values = " ".join(f"{k} {float(v):.4f}" for k, v in ordered)
        stream = self.stream or sys.stdout
        stream.write(f"epoch {self._epoch + 1}/{self.epochs} step {step}/{self.steps}: "
                     f"{values}; {speed:.1f} examples/s, epoch ETA {left:.1f} min\n")
        stream.flush()


class ResumableBackup(keras.callbacks.Callback):
    """Exact, kill-safe resume of ``model.fit`` (in place of ``keras.callbacks.BackupAndRestore``).

    After every finished epoch ``k`` (1-based) the directory receives ``epoch_{k}.weights.h5``
    (model and optimiser variables: weights, SN vectors, BatchNorm statistics, slots, step
    count) and then ``state.json`` naming it, with the dropout seed-generator states, the
    ``best`` value of each callback in ``monitors`` (e.g. the best-checkpoint
    ``ModelCheckpoint``) and the history so far; both are written atomically
    (:mod:`ddu_tf.io.atomic`) and the previous weights file is deleted only afterwards, so a
    kill at any instant leaves a consistent state. ``fit`` then restores it and starts at epoch
    ``k``; with the stateless epoch orders of :func:`epoch_permutation` the resumed run equals
    the uninterrupted one. The directory is deleted when ``fit`` completes.

    Put it after the callbacks that write files at the end of an epoch (checkpoints), so that
    an epoch counts as finished only once they are written.

    Args:
        backup_dir: directory of the resume state (created when needed).
        monitors: callbacks with a ``best`` attribute to save and restore.
    """

    STATE = "state.json"

    def __init__(self, backup_dir, monitors=()):
        super().__init__()
        if not backup_dir:
            raise ValueError(f"Expected a backup directory. Received: backup_dir={backup_dir!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.monitors = list(monitors)
        self.epochs, self.history = [], {}

    def saved_state(self):
        """The last saved state (dict) or None; ``state["epoch"]`` epochs are finished."""
        path = os.path.join(self.backup_dir, self.STATE)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    @property
    def initial_epoch(self):
        """Epochs finished by an earlier, interrupted run (0 for a fresh run)."""
        state = self.saved_state()
        return 0 if state is None else int(state["epoch"])

    def _seed_states(self):
        """The model's variables outside its weights: dropout seed-generator states."""
        weights = {id(v) for v in self.model.weights}
        return [v for v in self.model.variables if id(v) not in weights]

    def on_train_begin(self, logs=None):
        state = self.saved_state()
        self.epochs, self.history = [], {}
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, state["weights"]))
        seeds = self._seed_states()
        if len(seeds) != len(state["seed_states"]):
            raise ValueError(f"Expected {len(seeds)} seed-generator states in "
                             f"{self.backup_dir}. Received: {len(state['seed_states'])}; the "
                             "backup is of another model: delete it or use another save path.")
        for variable, value in zip(seeds, state["seed_states"]):
            variable.assign(np.asarray(value, variable.dtype))
        for monitor, best in zip(self.monitors, state["best"]):
            monitor.best = best
        self.epochs, self.history = list(state["epochs"]), dict(state["history"])
        self.model._initial_epoch = int(state["epoch"])  # as keras' BackupAndRestore does

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(int(epoch))
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        name = f"epoch_{epoch + 1}.weights.h5"
        atomic_write(os.path.join(self.backup_dir, name), self.model.save_weights)
        state = {"epoch": epoch + 1, "weights": name,
                 "seed_states": [np.asarray(v.numpy()).tolist() for v in self._seed_states()],
                 "best": [None if m.best is None else float(m.best) for m in self.monitors],
                 "epochs": self.epochs, "history": self.history}
        atomic_write_text(os.path.join(self.backup_dir, self.STATE), json.dumps(state))
        for entry in os.listdir(self.backup_dir):
            if entry.endswith(".weights.h5") and entry != name:
                os.remove(os.path.join(self.backup_dir, entry))

    def on_train_end(self, logs=None):
        state = os.path.join(self.backup_dir, self.STATE)
        if os.path.exists(state):
            os.remove(state)  # first: a kill during the removal leaves no state to resume from
        shutil.rmtree(self.backup_dir, ignore_errors=True)


class FeatureDensityMonitor(keras.callbacks.Callback):
    """Fit DDU's class-conditional GMM during training and log how well it detects OoD data.

    After epochs ``every, 2 * every, ...`` (1-based counts, like :class:`EpochCheckpoint`):

    1. :func:`ddu_tf.inference.fit_gmm` fits the class-conditional Gaussians
       (``ddu_tf.density.ClassConditionalGaussians``) on the ``"features"`` of ``train_data``
       (a sample of the training set; inference mode, float64);
    2. a :class:`ddu_tf.inference.Predictor` of the model scores ``in_data`` and ``ood_data``:
       GMM log-density ``logsumexp_c log q(z|c)`` (nats) and softmax entropy (nats,
       :func:`ddu_tf.uncertainty.softmax_entropy`);
    3. the AUROCs of telling ``ood_data`` from ``in_data`` by each score
       (:func:`ddu_tf.metrics.ood_auroc_auprc`: low density / high entropy = OoD; 0.5 is
       chance, 1 perfect), and the features' class structure from the fitted GMM's per-class
       covariances ``Sigma_c [C, D, D]`` and means ``mu_c [C, D]``:

       * ``within_class_std = sqrt(mean_c tr(Sigma_c) / D)``: RMS per-dimension feature std
         inside a class (feature units);
       * ``between_class_std = sqrt(tr(S_B) / D)`` with ``S_B = mean_c (mu_c - mu)(mu_c - mu)^T``
         and ``mu = mean_c mu_c`` (unweighted over classes);
       * ``within_between_ratio = mean_c tr(Sigma_c) / tr(S_B)``: dimensionless; it falls
         towards 0 as the features of each class collapse onto their mean.

    The five values (:data:`LOG_KEYS`) are added to the epoch's ``logs`` (so ``History`` and
    later callbacks see them; on the other epochs they are absent, as Keras does for
    ``validation_freq``) and, with ``log_dir``, written as ``tf.summary`` scalars
    ``feature_density/<key>`` at step ``epoch`` (0-based, the step of Keras' TensorBoard
    ``epoch_*`` scalars) by a file writer of ``log_dir``. ``self.epochs`` lists the 0-based
    epochs monitored.

    Args:
        train_data: GMM fitting data: ``(x [n, *input_shape], y [n] int)`` arrays or a
            ``tf.data.Dataset`` of ``(x, y)`` batches, already preprocessed like the
            validation data; every class needs >= 2 samples. Pass a sample (e.g. 1000
            examples): the fit runs every ``every`` epochs.
        in_data: in-distribution held-out data, ``(x, y)`` arrays or dataset (labels unused).
        ood_data: OoD data, ``(x, y)`` arrays or dataset (labels unused), same preprocessing.
        num_classes: number of classes ``C`` of the model.
        every: monitor after every ``every``-th epoch (>= 1).
        log_dir: TensorBoard directory, or None (``logs`` only).
        chunk_size: rows per compiled forward chunk (arrays) of the Predictor.
    """

    LOG_KEYS = ("density_auroc", "entropy_auroc", "within_class_std", "between_class_std",
                "within_between_ratio")
    """Keys added to ``logs``; TensorBoard tags are ``feature_density/<key>``."""

    def __init__(self, train_data, in_data, ood_data, num_classes, *, every=1, log_dir=None,
                 chunk_size=512):
        super().__init__()
        if int(every) != every or every < 1:
            raise ValueError(f"Expected every >= 1 (epochs). Received: every={every!r}")
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"Expected num_classes >= 2. Received: num_classes={num_classes!r}")
        self.train_data, self.in_data, self.ood_data = train_data, in_data, ood_data
        self.num_classes, self.every = int(num_classes), int(every)
        self.log_dir, self.chunk_size = log_dir, int(chunk_size)
        self.epochs = []
        self._writer = None
        self._predictor = None

    def get_config(self):
        return {"num_classes": self.num_classes, "every": self.every, "log_dir": self.log_dir,
                "chunk_size": self.chunk_size}

    def measure(self):
        """The :data:`LOG_KEYS` values of the model as it is now: ``dict`` of floats."""
        if self._predictor is None or self._predictor.model is not self.model:
            self._predictor = Predictor(self.model, chunk_size=self.chunk_size)
        gmm = fit_gmm(self._predictor, self.train_data, self.num_classes)
        scores_in = gmm_scores(self._predictor, gmm, self.in_data)
        scores_ood = gmm_scores(self._predictor, gmm, self.ood_data)
        within = float(np.mean(np.trace(gmm.covariances.numpy(), axis1=1, axis2=2)))
        means = gmm.means.numpy()
        between = float(np.sum((means - means.mean(axis=0)) ** 2) / len(means))
        return {
            "density_auroc": metrics.ood_auroc_auprc(
                scores_in["log_density"], scores_ood["log_density"],
                higher_is_uncertain=False)[0],
            "entropy_auroc": metrics.ood_auroc_auprc(
                scores_in["entropy"], scores_ood["entropy"], higher_is_uncertain=True)[0],
            "within_class_std": float(np.sqrt(within / gmm.dim)),
            "between_class_std": float(np.sqrt(between / gmm.dim)),
            "within_between_ratio": within / between if between > 0 else float("inf"),
        }

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        values = self.measure()
        self.epochs.append(int(epoch))
        if logs is not None:
            logs.update(values)
        if self.log_dir is not None:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                for key, value in values.items():
                    tf.summary.scalar(f"feature_density/{key}", value, step=int(epoch))
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def make_callbacks(save_path, run_name, *, monitor="val_accuracy", save_interval=None,
                   tensorboard=True, backup=True, best_checkpoint=True):
    """TensorBoard, best-on-validation ModelCheckpoint, periodic saves and the resume backup.

    Files (``run_name`` is e.g. ``checkpoint_name(..., extension="")``):

    * ``save_path/stats_logging/{run_name}/`` -- TensorBoard logs (as the original's
      ``stats_logging/``), per-epoch train/validation loss and accuracy.
    * ``save_path/{run_name}_best.keras`` -- the model with the best ``monitor``.
    * ``save_path/{run_name}_{epoch}.keras`` -- every ``save_interval`` epochs (atomic).
    * ``save_path/backup/{run_name}/`` -- :class:`ResumableBackup` state written every epoch
      (last in the list, after the checkpoints); a rerun of the same command resumes exactly
      from the last finished epoch, the best checkpoint's monitor value included; deleted when
      ``fit`` completes.

    Args:
        save_path: output directory (created if missing).
        run_name: stem of every file name.
        monitor: quantity for the best checkpoint (needs validation data for "val_*").
        save_interval: periodic save interval in epochs, or None.
        tensorboard, backup, best_checkpoint: enable the respective callback.

    Returns:
        List of ``keras.callbacks.Callback``.
    """
    if not run_name:
        raise ValueError(f"Expected a non-empty run_name. Received: run_name={run_name!r}")
    os.makedirs(save_path, exist_ok=True)
    callbacks = []
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(
            log_dir=os.path.join(save_path, "stats_logging", run_name)))
    monitors = []
    if best_checkpoint:
        monitors.append(keras.callbacks.ModelCheckpoint(
            os.path.join(save_path, f"{run_name}_best.keras"), monitor=monitor,
            save_best_only=True))
        callbacks.extend(monitors)
    if save_interval:
        callbacks.append(EpochCheckpoint(
            lambda epoch: os.path.join(save_path, f"{run_name}_{epoch}.keras"), save_interval))
    if backup:
        callbacks.append(ResumableBackup(os.path.join(save_path, "backup", run_name), monitors))
    return callbacks


def compile_model(model, optimizer, *, jit_compile=False):
    """Compile for classification from logits: cross-entropy (batch mean) and accuracy.

    The loss is ``SparseCategoricalCrossentropy(from_logits=True)`` with integer labels,
    averaged over the batch (``F.cross_entropy``'s default, as in DDU's training loop).
    The accuracy metric is named ``"accuracy"`` (logged as ``accuracy`` / ``val_accuracy``).

    Args:
        model: a model returning ``[batch, classes]`` logits.
        optimizer: e.g. from :func:`make_optimizer`.
        jit_compile: XLA-compile the train step.

    Returns:
        The same model, compiled.
    """
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=jit_compile)
    return model
