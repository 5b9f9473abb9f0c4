"""Regenerates Ambiguous-MNIST from MNIST (seeded, offline): VAE + LeNet-ensemble filter.

A reconstruction in Keras 3 of the recipe of BlackHC/ddu_dirty_mnist (notebook
``02_dirtymnist``), scaled to a 2-core CPU:

1. VAE on normalised MNIST (``(x - 0.1307) / 0.3081``): MLP encoder 784-512-256 -> (mu, log
   var) with latent 32, decoder 32-256-512-784 with a sigmoid output ``p`` in [0, 1]. Loss per
   image: ``sum_pixels BCE(p, x) + KL = sum BCE - 0.5 * sum(1 + log var - mu^2 - exp(log var))``
   on unnormalised pixels ``x`` in [0, 1]; Adam (lr 1e-3), batch 128, lr x0.2 at 25/74, 50/74
   and 65/74 of the epochs (the original: 74 epochs, milestones 25, 50, 65).
2. Post-processing of a decoded image ``p``: ``d = (p - 0.1307) / 0.3081``; standardise ``d``
   with the scalar mean/std of the decoded reconstructions of the MNIST training images used;
   un-normalise with the MNIST statistics; ``clip(1.2 x - 0.15, 0, 1)``.
3. Scoring ensemble: ``ensemble_size`` LeNets (`ddu_tf.models.lenet.lenet`) trained on
   normalised MNIST with Adam (lr 1e-3), batch 128, ``ensemble_epochs`` epochs, each with its
   own seed (the original: 5 LeNets, 19 epochs, best epoch kept; here the last epoch is kept).
4. Candidates: groups of ``combos_per_group`` (64): k ~ U{2, 3, 4} distinct classes, one random
   MNIST training image of each; decode ``w @ mu`` for ``w ~ Dirichlet(1_k)`` (convex
   combinations of the encoder means). Keep a candidate if the ensemble's mutual information
   ``MI = H[mean_m p_m] - mean_m H[p_m] <= mi_threshold`` (0.05 nats) and its predictive entropy
   ``PE = H[mean_m p_m]`` is in ``pe_range`` ([0.05, 3) nats).
5. Flattened-entropy subsampling: histogram of PE over ``hist_range`` ([0.05, 1.6]) in
   ``hist_bins`` (50) bins; the number drawn from bin b is proportional to ``count_b ** 0.2``
   (capped at ``count_b``, the remainder re-allotted to bins with spare candidates), uniformly
   at random within a bin; ``num_images`` in total.
6. Split 50/50 at random: images ``[0, N/2)`` are train, ``[N/2, N)`` test (the official
   layout, so "first 60k flattened pairs = train" holds for N = 12000).
7. Labels: ``labels_per_image`` (10) labels per image drawn with replacement from the
   ensemble-mean softmax.

Default scale (`GenerationConfig()`): 12000 images selected from 320,000 candidates (the
original collected about 4M), VAE 15 epochs, 5 LeNets x 4 epochs, all 60k MNIST training
images; about 10-25 minutes on 2 CPU cores. Same config + same machine -> identical bytes
(`keras.utils.set_random_seed`, `tf.config.experimental.enable_op_determinism()` -- a
process-wide switch -- seeded NumPy generators and a fixed processing order); checked at full
scale: two builds gave bit-identical arrays.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Dict, Optional, Tuple

import keras
import numpy as np
import scipy.special
import tensorflow as tf

from ddu_tf.data.dirty_mnist import MNIST_MEAN, MNIST_STD, normalize
from ddu_tf.models.lenet import lenet


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Size and hyper-parameters of a generated Ambiguous-MNIST (see module docstring)."""

    num_images: int = 12000
    seed: int = 0
    mnist_subset: Optional[int] = None  # first n MNIST training images used (None = all 60k)
    latent_dim: int = 32
    vae_epochs: int = 15
    vae_batch_size: int = 128
    vae_learning_rate: float = 1e-3
    ensemble_size: int = 5
    ensemble_epochs: int = 4
    ensemble_batch_size: int = 128
    ensemble_learning_rate: float = 1e-3
    num_candidates: int = 320_000
    combos_per_group: int = 64
    mi_threshold: float = 0.05
    pe_min: float = 0.05
    pe_max: float = 3.0
    hist_bins: int = 50
    hist_min: float = 0.05
    hist_max: float = 1.6
    hist_power: float = 0.2
    labels_per_image: int = 10

    def validate(self) -> None:
        """Raises ValueError naming the first inconsistent field."""
        if self.num_images < 2 or self.num_images % 2:
            raise ValueError(f"Expected an even num_images >= 2. Received: {self.num_images}")
        if self.num_candidates < self.num_images or self.num_candidates % self.combos_per_group:
            raise ValueError(
                "Expected num_candidates >= num_images and a multiple of combos_per_group "
                f"({self.combos_per_group}). Received: num_candidates={self.num_candidates}")
        if self.ensemble_size < 1 or self.vae_epochs < 1 or self.ensemble_epochs < 1:
            raise ValueError("Expected ensemble_size, vae_epochs, ensemble_epochs >= 1. Received: "
                             f"{self.ensemble_size}, {self.vae_epochs}, {self.ensemble_epochs}")
        if not self.pe_min < self.pe_max or not self.hist_min < self.hist_max:
            raise ValueError("Expected pe_min < pe_max and hist_min < hist_max. Received: "
                             f"{self.pe_min}, {self.pe_max}, {self.hist_min}, {self.hist_max}")


@dataclasses.dataclass
class AmbiguousSet:
    """A generated Ambiguous-MNIST.

    Attributes:
      images: float32 ``[N, 28, 28]`` in [0, 1]; ``[0, N/2)`` train, ``[N/2, N)`` test.
      labels: int64 ``[N, labels_per_image]`` sampled labels.
      probs: float32 ``[N, 10]`` ensemble-mean softmax the labels were drawn from.
      predictive_entropy, mutual_information: float32 ``[N]`` ensemble scores in nats.
      info: counts and timings of the run.
    """

    images: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    predictive_entropy: np.ndarray
    mutual_information: np.ndarray
    info: Dict[str, float]


class VAE:
    """MLP VAE (784-512-256-latent and back) with a deterministic custom training loop.

    ``encoder``: ``[batch, 784]`` normalised pixels -> ``(mu, log_var)`` each ``[batch, latent]``.
    ``decoder``: ``[batch, latent]`` -> ``[batch, 784]`` logits; ``sigmoid`` gives pixels in [0, 1].
    """

    def __init__(self, latent_dim: int = 32, seed: int = 0):
        keras.utils.set_random_seed(seed)
        x = keras.Input((784,), name="pixels")
        h = keras.layers.Dense(512, activation="relu", name="enc1")(x)
        h = keras.layers.Dense(256, activation="relu", name="enc2")(h)
        mu = keras.layers.Dense(latent_dim, name="mu")(h)
        log_var = keras.layers.Dense(latent_dim, name="log_var")(h)
        self.encoder = keras.Model(x, [mu, log_var], name="vae_encoder")
        z = keras.Input((latent_dim,), name="z")
        h = keras.layers.Dense(256, activation="relu", name="dec1")(z)
        h = keras.layers.Dense(512, activation="relu", name="dec2")(h)
        logits = keras.layers.Dense(784, name="dec_logits")(h)
        self.decoder = keras.Model(z, logits, name="vae_decoder")
        self.latent_dim = latent_dim
        self.seed = seed

    def loss(self, x_norm: tf.Tensor, noise_seed: tf.Tensor) -> tf.Tensor:
        """Mean over the batch of ``sum_pixels BCE + KL`` (nats per image)."""
        mu, log_var = self.encoder(x_norm, training=True)
        eps = tf.random.stateless_normal(tf.shape(mu), seed=noise_seed)
        z = mu + tf.exp(0.5 * log_var) * eps
        logits = self.decoder(z, training=True)
        x01 = x_norm * MNIST_STD + MNIST_MEAN
        bce = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x01, logits=logits), 1)
        kl = -0.5 * tf.reduce_sum(1.0 + log_var - tf.square(mu) - tf.exp(log_var), 1)
        return tf.reduce_mean(bce + kl)

    def fit(self, x_norm: np.ndarray, epochs: int, batch_size: int = 128,
            learning_rate: float = 1e-3) -> list:
        """Trains on ``x_norm`` float32 ``[n, 784]``; returns the mean loss per epoch."""
        optimizer = keras.optimizers.Adam(learning_rate)
        variables = self.encoder.trainable_variables + self.decoder.trainable_variables
        optimizer.build(variables)
        milestones = {max(1, round(epochs * m / 74)) for m in (25, 50, 65)}

        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32),
                                      tf.TensorSpec([2], tf.int32)])
        def step(batch, noise_seed):
            with tf.GradientTape() as tape:
                loss = self.loss(batch, noise_seed)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        rng = np.random.default_rng(self.seed)
        history, lr, step_count = [], learning_rate, 0
        for epoch in range(epochs):
            if epoch in milestones:
                lr *= 0.2
                optimizer.learning_rate.assign(lr)
            order = rng.permutation(len(x_norm))
            losses = []
            for start in range(0, len(order), batch_size):
                batch = x_norm[np.sort(order[start:start + batch_size])]
                seed = tf.constant([self.seed, step_count], tf.int32)
                losses.append(float(step(tf.constant(batch), seed)))
                step_count += 1
            history.append(float(np.mean(losses)))
        return history

    def encode_mean(self, x_norm: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Encoder means ``mu``: float32 ``[n, latent]``."""
        return np.concatenate([self.encoder(x_norm[i:i + batch_size], training=False)[0].numpy()
                               for i in range(0, len(x_norm), batch_size)])

    def decode(self, z: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Decoded pixels ``sigmoid(decoder(z))``: float32 ``[n, 784]`` in [0, 1]."""
        return np.concatenate([tf.sigmoid(self.decoder(z[i:i + batch_size], training=False))
                               .numpy() for i in range(0, len(z), batch_size)])


def post_process(decoded01: np.ndarray, rec_mean: float, rec_std: float) -> np.ndarray:
    """Step 2: ``clip(1.2 * (((p - m)/s - mu_r)/s_r * s + m) - 0.15, 0, 1)``.

    ``m, s`` = MNIST mean/std, ``mu_r, s_r`` = mean/std (normalised space) of decoded
    MNIST reconstructions. Input/output float32 ``[n, 784]``; output in [0, 1].
    """
    d = (decoded01.astype(np.float32) - MNIST_MEAN) / MNIST_STD
    x = (d - rec_mean) / rec_std * MNIST_STD + MNIST_MEAN
    return np.clip(1.2 * x - 0.15, 0.0, 1.0).astype(np.float32)


def train_lenet(images01: np.ndarray, labels: np.ndarray, seed: int, epochs: int,
                batch_size: int = 128, learning_rate: float = 1e-3) -> keras.Model:
    """Trains one DDU LeNet on MNIST (normalised inside) with Adam; returns the logit model.

    Args:
      images01: float32 ``[n, 28, 28]`` pixels in [0, 1]; labels: int64 ``[n]``.
      seed: initialisation and batch-order seed.
    """
    keras.utils.set_random_seed(seed)
    model = lenet(num_classes=10, input_shape=(28, 28, 1))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = normalize(images01)[..., None]
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        model.fit(x[order], labels[order], batch_size=batch_size, epochs=1, shuffle=False,
                  verbose=0)
    return model


def member_log_probs(models, images01: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Log-softmax of every member: float64 ``[members, n, 10]``."""
    x = normalize(images01.reshape(-1, 28, 28))[..., None]
    out = []
    for m in models:
        logits = np.concatenate([m(x[i:i + batch_size], training=False).numpy()
                                 for i in range(0, len(x), batch_size)])
        out.append(scipy.special.log_softmax(logits.astype(np.float64), axis=-1))
    return np.stack(out)


def ensemble_scores(log_probs: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean softmax, predictive entropy and mutual information from member log-probs.

    Args:
      log_probs: float64 ``[members, n, classes]``.

    Returns:
      ``p_bar [n, classes]``; ``PE = H[p_bar] = -sum_c p_bar log p_bar``;
      ``MI = PE - mean_m H[p_m]`` (nats, ``[n]`` each; ``0 log 0 = 0``).
    """
    probs = np.exp(log_probs)
    p_bar = probs.mean(0)
    pe = -scipy.special.xlogy(p_bar, p_bar).sum(-1)
    member_h = -(probs * np.where(probs > 0, log_probs, 0.0)).sum(-1)
    mi = pe - member_h.mean(0)
    return p_bar, pe, mi


def flattened_subsample(pe: np.ndarray, num: int, rng: np.random.Generator, bins: int = 50,
                        lo: float = 0.05, hi: float = 1.6, power: float = 0.2) -> np.ndarray:
    """Indices of ``num`` candidates with a flattened histogram of ``pe`` (step 5).

    Bin b of ``bins`` equal bins over ``[lo, hi]`` gets a quota proportional to
    ``count_b ** power``, capped at ``count_b``; leftover quota goes (again proportionally) to
    bins with spare candidates until ``num`` are allotted. Returns sorted int64 indices.

    Raises:
      ValueError: fewer than ``num`` candidates with ``lo <= pe <= hi``.
    """
    in_range = np.flatnonzero((pe >= lo) & (pe <= hi))
    if len(in_range) < num:
        raise ValueError(
            f"Only {len(in_range)} candidates have predictive entropy in [{lo}, {hi}], "
            f"{num} are needed: raise num_candidates or mi_threshold, or train the ensemble "
            "longer.")
    which = np.minimum(((pe[in_range] - lo) / (hi - lo) * bins).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    quota = np.zeros(bins, np.int64)
    while quota.sum() < num:
        spare = counts - quota
        weight = np.where(spare > 0, counts.astype(np.float64) ** power, 0.0)
        want = (num - quota.sum()) * weight / weight.sum()
        add = np.minimum(np.floor(want).astype(np.int64), spare)
        if add.sum() == 0:  # hand out the rounding remainder one by one, largest share first
            for b in np.argsort(-want, kind="stable")[: num - quota.sum()]:
                add[b] = 1 if spare[b] > 0 else 0
        quota += add
    chosen = [rng.choice(in_range[which == b], size=q, replace=False)
              for b, q in enumerate(quota) if q > 0]
    return np.sort(np.concatenate(chosen))


def sample_labels(probs: np.ndarray, num_labels: int, rng: np.random.Generator) -> np.ndarray:
    """``num_labels`` i.i.d. draws per row from categorical ``probs [n, C]``: int64 ``[n, k]``."""
    p = probs.astype(np.float64)
    cdf = np.cumsum(p / p.sum(1, keepdims=True), axis=1)
    u = rng.random((len(p), num_labels))
    return np.minimum((u[:, :, None] > cdf[:, None, :]).sum(-1), p.shape[1] - 1).astype(np.int64)


def generate(mnist_images: np.ndarray, mnist_labels: np.ndarray,
             config: GenerationConfig = GenerationConfig(), verbose: bool = False
             ) -> AmbiguousSet:
    """Runs steps 1-7 on MNIST training data.

    Args:
      mnist_images: uint8 ``[60000, 28, 28]`` MNIST training images (0..255).
      mnist_labels: int64 ``[60000]``.
      config: size and hyper-parameters (`GenerationConfig`).
      verbose: print progress.

    Returns:
      `AmbiguousSet` with ``config.num_images`` images.
    """
    config.validate()
    tf.config.experimental.enable_op_determinism()
    t0 = time.time()
    log = print if verbose else (lambda *a, **k: None)
    n = len(mnist_images) if config.mnist_subset is None else int(config.mnist_subset)
    x01 = (mnist_images[:n].reshape(n, 784).astype(np.float32) / 255.0)
    y = np.asarray(mnist_labels[:n], np.int64)
    info: Dict[str, float] = {"mnist_images_used": n}

    vae = VAE(config.latent_dim, seed=config.seed + 1)
    history = vae.fit(normalize(x01), config.vae_epochs, config.vae_batch_size,
                      config.vae_learning_rate)
    info["vae_final_loss"] = history[-1]
    mu = vae.encode_mean(normalize(x01))
    rec = (vae.decode(mu) - MNIST_MEAN) / MNIST_STD
    rec_mean, rec_std = float(rec.mean(dtype=np.float64)), float(rec.std(dtype=np.float64))
    info["vae_seconds"] = time.time() - t0
    log(f"VAE: loss {history[-1]:.2f}, {info['vae_seconds']:.0f}s")

    members = [train_lenet(x01.reshape(-1, 28, 28), y, config.seed + 100 + m,
                           config.ensemble_epochs, config.ensemble_batch_size,
                           config.ensemble_learning_rate)
               for m in range(config.ensemble_size)]
    info["ensemble_seconds"] = time.time() - t0 - info["vae_seconds"]
    log(f"ensemble: {info['ensemble_seconds']:.0f}s")

    rng = np.random.default_rng(config.seed + 2)
    by_class = [np.flatnonzero(y == c) for c in range(10)]
    if min(len(b) for b in by_class) == 0:
        raise ValueError("Every MNIST class must occur in the training images used.")
    groups = config.num_candidates // config.combos_per_group
    kept_images, kept_p, kept_pe, kept_mi = [], [], [], []
    groups_per_chunk = max(1, 16384 // config.combos_per_group)
    for g0 in range(0, groups, groups_per_chunk):
        zs = []
        for _ in range(min(groups_per_chunk, groups - g0)):
            k = int(rng.integers(2, 5))
            classes = rng.choice(10, size=k, replace=False)
            idx = np.array([rng.choice(by_class[c]) for c in classes])
            w = rng.dirichlet(np.ones(k), size=config.combos_per_group)
            zs.append((w @ mu[idx].astype(np.float64)).astype(np.float32))
        cand = post_process(vae.decode(np.concatenate(zs)), rec_mean, rec_std)
        p_bar, pe, mi = ensemble_scores(member_log_probs(members, cand))
        keep = (mi <= config.mi_threshold) & (pe >= config.pe_min) & (pe < config.pe_max)
        kept_images.append(cand[keep])
        kept_p.append(p_bar[keep])
        kept_pe.append(pe[keep])
        kept_mi.append(mi[keep])
    images = np.concatenate(kept_images)
    p_bar, pe, mi = map(np.concatenate, (kept_p, kept_pe, kept_mi))
    info["candidates"] = config.num_candidates
    info["candidates_kept"] = len(images)
    info["candidate_seconds"] = time.time() - t0 - info["vae_seconds"] - info["ensemble_seconds"]
    log(f"candidates: kept {len(images)} of {config.num_candidates}")

    chosen = flattened_subsample(pe, config.num_images, rng, config.hist_bins, config.hist_min,
                                 config.hist_max, config.hist_power)
    chosen = chosen[rng.permutation(len(chosen))]  # random 50/50 train/test split
    labels = sample_labels(p_bar[chosen], config.labels_per_image,
                           np.random.default_rng(config.seed + 3))
    info["total_seconds"] = time.time() - t0
    return AmbiguousSet(images=images[chosen].reshape(-1, 28, 28), labels=labels,
                        probs=p_bar[chosen].astype(np.float32),
                        predictive_entropy=pe[chosen].astype(np.float32),
                        mutual_information=mi[chosen].astype(np.float32), info=info)


def label_entropy(labels: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """Entropy (nats) of each row's empirical label distribution: ``[n, k]`` ints -> ``[n]``."""
    counts = np.stack([(labels == c).sum(1) for c in range(num_classes)], 1)
    q = counts / labels.shape[1]
    return 0.0 - scipy.special.xlogy(q, q).sum(1)  # 0.0 - x turns -0.0 into 0.0


def softmax_entropy(model: keras.Model, images01: np.ndarray) -> np.ndarray:
    """Softmax entropy ``-sum_c p_c log p_c`` (nats) of a logit model on [0, 1] images ``[n]``."""
    return ensemble_scores(member_log_probs([model], images01))[1]


#: Smoke-test scale (seconds on 2 cores): 20 images from 640 candidates, VAE 2 epochs and two
#: 3-epoch LeNets on the first 3000 MNIST images, MI threshold relaxed to 0.3 nats because such
#: short training leaves the members less in agreement. Not a substitute for the default scale.
TINY_CONFIG = GenerationConfig(num_images=20, mnist_subset=3000, vae_epochs=2, ensemble_size=2,
                               ensemble_epochs=3, num_candidates=640, mi_threshold=0.3)
