"""Regenerates Ambiguous-MNIST from MNIST (seeded, offline, resumable): VAE + LeNet-ensemble filter.

A reconstruction in Keras 3 of the recipe of BlackHC/ddu_dirty_mnist (notebook
``02_dirtymnist``), scaled to a 2-core CPU:

1. VAE on normalised MNIST (`ddu_tf.data.dirty_mnist.normalize`, ``(x - 0.1307) / 0.3081``):
   MLP encoder 784-512-256 -> (mu, log var) with latent 32, decoder 32-256-512-784 with a
   sigmoid output ``p`` in [0, 1]. Loss per image: ``sum_pixels BCE(p, x) + KL =
   sum BCE - 0.5 * sum(1 + log var - mu^2 - exp(log var))`` on unnormalised pixels ``x`` in
   [0, 1]; Adam (lr 1e-3), batch 128, lr x0.2 at 25/74, 50/74 and 65/74 of the epochs (the
   original: 74 epochs, milestones 25, 50, 65).
2. Post-processing of a decoded image ``p`` (`post_process`): ``d = normalize(p)``;
   standardise ``d`` with the scalar mean/std of the normalised decoded reconstructions of the
   MNIST training images used; un-normalise with the MNIST statistics; ``clip(1.2 x - 0.15, 0,
   1)``. Then quantised to the shipped encoding, ``round(255 x) / 255`` (uint8 in the file):
   candidates are scored on the quantised image, so the shipped pixels are exactly the scored
   ones.
3. Scoring ensemble: ``ensemble_size`` LeNets (`ddu_tf.models.lenet.lenet`) trained on
   normalised MNIST with Adam (lr 1e-3), batch 128, ``ensemble_epochs`` epochs, each with its
   own seed (the original: 5 LeNets, 19 epochs, best epoch kept; here the last epoch is kept).
4. Candidates, streamed in chunks of ``chunk_size``: groups of ``combos_per_group`` (64): k ~
   U{2, 3, 4} distinct classes, one random MNIST training image of each; decode ``w @ mu`` for
   ``w ~ Dirichlet(1_k)`` (convex combinations of the encoder means). A chunk's random draws are
   a pure function of ``(seed, chunk index)`` (`chunk_draws`). Each chunk is scored by one
   compiled function (`CandidateScorer`: decoder -> sigmoid -> post-process -> quantise ->
   normalise -> all members -> scores with `ddu_tf.uncertainty`), and only the candidates that
   pass the filter are kept: mutual information ``MI = H[mean_m p_m] - mean_m H[p_m] <=
   mi_threshold`` (0.05 nats) and predictive entropy ``PE = H[mean_m p_m]`` in ``[pe_min,
   pe_max)`` ([0.05, 3) nats). Per kept candidate only PE, MI (float32), the ensemble-mean
   probabilities (10 x float32), its index in the chunk and a 64-bit fingerprint of its pixels
   are stored, so memory stays small at millions of candidates; the chosen images are decoded
   again at the end from their chunk's draws (and checked against the fingerprint).
5. Flattened-entropy subsampling without replacement (`flattened_subsample`): histogram of PE
   over ``[hist_min, hist_max]`` ([0.05, 1.6]) in ``hist_bins`` (50) bins; bin b's quota is
   proportional to ``count_b ** 0.2``, capped at ``count_b`` (the remainder re-allotted to bins
   with spare candidates), drawn uniformly at random within a bin; ``num_images`` in total, no
   candidate twice (the original draws with replacement, uncapped).
6. Split 50/50 at random: images ``[0, N/2)`` are train, ``[N/2, N)`` test (the official
   layout, so "first 60k flattened pairs = train" holds for N = 12000).
7. Labels: ``labels_per_image`` (10) labels per image drawn with replacement from the
   ensemble-mean softmax.

`generate` keeps its state in a work directory (trained VAE decoder and LeNets, encoder means
and reconstruction statistics, one file per finished chunk, each written atomically), so a
killed run continues with the same call from the last finished chunk and loses nothing. Same
config + same machine -> identical output bytes, whether or not the run was interrupted
(`keras.utils.set_random_seed`, `tf.config.experimental.enable_op_determinism()` -- a
process-wide switch, on during the build and restored after it by `deterministic_ops` --,
NumPy generators seeded by ``[seed, stream, chunk]``, a fixed order, and the file writer of
`ddu_tf.io.ambiguous_mnist`). Wall times are reported apart from the file
(`AmbiguousSet.timings`), which holds only reproducible content. Checked with the full models
and 262,144 candidates: a fresh build and two builds resumed after deleting chunk files gave
the same SHA-256, and two trainings wrote byte-identical model files.

Default scale (`GenerationConfig()`): 12000 images drawn from the ~4.2M candidates that pass
the filter (19.9% measured) out of 21,102,592 generated in 322 chunks of 65,536 (the original
kept 4,197,114), VAE 15 epochs, 5 LeNets x 4 epochs, all 60k MNIST training images. Throughput,
measured on the 2-core development machine while other jobs used it (load average 5-12):
1.3k-2.5k candidates/s, 2.1-3.2x the previous whole-array generator in interleaved runs (single
thread: 2.6x); that generator did ~6.7k/s on the idle machine, so about 17k/s idle: ~21 min of
scoring, ~25 min for the whole build (VAE ~1.5 min, LeNets ~1.5 min, final draw < 1 min). Peak
RSS 2.2 GB (during training), 1.5 GB while scoring; the work directory grows to ~0.3 GB.

The numbers of the original quoted here (`OFFICIAL_POOL_HIST`, `OFFICIAL_TEST_HIST`) are the
printed outputs of its notebook, as transcribed in REFERENCE.md section 2.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import scipy.special
import tensorflow as tf

from ddu_tf import uncertainty
from ddu_tf.data.dirty_mnist import MNIST_MEAN, MNIST_STD, normalize
from ddu_tf.io import ambiguous_mnist as amnist_io
from ddu_tf.io.atomic import atomic_write
from ddu_tf.models.lenet import lenet

#: PE histogram of the official candidate pool (kept candidates, MI <= 0.05), 50 equal bins
#: over `OFFICIAL_POOL_RANGE` nats, total 4,197,114 -- printed by notebook ``02_dirtymnist`` of
#: BlackHC/ddu_dirty_mnist (REFERENCE.md section 2).
OFFICIAL_POOL_HIST = (
    998572, 701446, 549851, 446586, 352206, 276367, 211546, 159399, 119749, 89783, 66378, 49732,
    37281, 28517, 21570, 16797, 13050, 10234, 8266, 6850, 5726, 5125, 4981, 4640, 3110, 2310,
    1747, 1283, 937, 651, 535, 431, 364, 234, 168, 127, 122, 96, 77, 73, 53, 28, 29, 24, 13, 13,
    8, 13, 10, 6)
OFFICIAL_POOL_RANGE = (0.05, 1.45)
#: Ensemble-PE histogram of the 6024 official test images, 16 equal bins over
#: `OFFICIAL_TEST_RANGE` nats (same notebook, last cell; REFERENCE.md section 2).
OFFICIAL_TEST_HIST = (1025, 877, 709, 596, 490, 405, 396, 317, 264, 214, 180, 160, 131, 104, 89,
                      67)
OFFICIAL_TEST_RANGE = (0.05, 1.6)

MIXTURE_SLOTS = 4  # at most 4 source images per candidate (k in {2, 3, 4})
#: Version of the file's content and of the work directory's files: bump it whenever the
#: recipe's numbers change, so that a work directory of older code is refused, not resumed.
FORMAT_VERSION = 1
# Random streams of np.random.default_rng([seed, stream, ...]).
_STREAM_CANDIDATES, _STREAM_SELECTION, _STREAM_LABELS = 2, 3, 4
#: Integer weights of the pixel fingerprint ``sum_j q_j w_j`` (q = 0..255; exact in int64).
FINGERPRINT_WEIGHTS = np.random.default_rng(20210225).integers(1, 2 ** 40, 784, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Size and hyper-parameters of a generated Ambiguous-MNIST (see module docstring).

    ``num_candidates`` candidates are generated in ``num_candidates / chunk_size`` chunks, each
    scored in batches of ``batch_size``; about 20% pass the filter at the default scale.
    """

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
    num_candidates: int = 21_102_592  # 322 chunks; ~4.2M kept at the measured 19.9% keep rate
    chunk_size: int = 65_536
    batch_size: int = 2048
    combos_per_group: int = 64
    mi_threshold: float = 0.05
    pe_min: float = 0.05
    pe_max: float = 3.0
    hist_bins: int = 50
    hist_min: float = 0.05
    hist_max: float = 1.6
    hist_power: float = 0.2
    labels_per_image: int = 10

    @property
    def num_chunks(self) -> int:
        return self.num_candidates // self.chunk_size

    def validate(self) -> None:
        """Raises ValueError naming the first inconsistent field."""
        if self.num_images < 2 or self.num_images % 2:
            raise ValueError(f"Expected an even num_images >= 2. Received: {self.num_images}")
        if self.combos_per_group < 1 or self.chunk_size % self.combos_per_group:
            raise ValueError(
                "Expected chunk_size a multiple of combos_per_group >= 1. Received: "
                f"chunk_size={self.chunk_size}, combos_per_group={self.combos_per_group}")
        if self.batch_size < 1 or self.chunk_size % self.batch_size:
            raise ValueError("Expected chunk_size a multiple of batch_size >= 1. Received: "
                             f"chunk_size={self.chunk_size}, batch_size={self.batch_size}")
        if (self.num_candidates < max(self.num_images, self.chunk_size)
                or self.num_candidates % self.chunk_size):
            raise ValueError(
                "Expected num_candidates >= num_images and a multiple of chunk_size "
                f"({self.chunk_size}). Received: num_candidates={self.num_candidates}")
        if self.ensemble_size < 1 or self.vae_epochs < 1 or self.ensemble_epochs < 1:
            raise ValueError("Expected ensemble_size, vae_epochs, ensemble_epochs >= 1. Received: "
                             f"{self.ensemble_size}, {self.vae_epochs}, {self.ensemble_epochs}")
        if not self.pe_min < self.pe_max or not self.hist_min < self.hist_max:
            raise ValueError("Expected pe_min < pe_max and hist_min < hist_max. Received: "
                             f"{self.pe_min}, {self.pe_max}, {self.hist_min}, {self.hist_max}")
        if self.labels_per_image != amnist_io.LABELS_PER_IMAGE:
            raise ValueError(f"Expected labels_per_image={amnist_io.LABELS_PER_IMAGE} (the file "
                             f"format). Received: {self.labels_per_image}")

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """SHA-256 of the config's JSON (names the default work directory)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


#: Smoke-test scale (seconds on 2 cores): 20 images from 2560 candidates in 10 chunks, VAE 2
#: epochs and two 3-epoch LeNets on the first 3000 MNIST images (about half the candidates pass
#: the MI filter, most with PE near the top of the range). Not a substitute for the default scale.
TINY_CONFIG = GenerationConfig(num_images=20, mnist_subset=3000, vae_epochs=2, ensemble_size=2,
                               ensemble_epochs=3, num_candidates=2560, chunk_size=256,
                               batch_size=128)
CONFIGS = {"default": GenerationConfig(), "tiny": TINY_CONFIG}


@dataclasses.dataclass
class AmbiguousSet:
    """A generated Ambiguous-MNIST.

    Attributes:
      pixels: uint8 ``[N, 28, 28]`` (0..255); ``[0, N/2)`` train, ``[N/2, N)`` test.
      labels: int64 ``[N, labels_per_image]`` sampled labels.
      probs: float32 ``[N, 10]`` ensemble-mean softmax the labels were drawn from.
      predictive_entropy, mutual_information: float32 ``[N]`` ensemble scores in nats.
      info: the file's metadata (config, counts, histograms, distances to the official set).
      timings: wall times in seconds (not written to the file, which is reproducible).
    """

    pixels: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    predictive_entropy: np.ndarray
    mutual_information: np.ndarray
    info: Dict[str, Any]
    timings: Dict[str, float]

    @property
    def images(self) -> np.ndarray:
        """float32 ``[N, 28, 28]`` in [0, 1]: ``pixels / 255``."""
        return self.pixels.astype(np.float32) / np.float32(255.0)


# ---- models --------------------------------------------------------------------------------
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


def post_process(decoded01, rec_mean: float, rec_std: float) -> tf.Tensor:
    """Step 2: ``clip(1.2 * ((normalize(p) - mu_r) / s_r * s + m) - 0.15, 0, 1)``.

    ``m, s`` = MNIST mean/std, ``mu_r, s_r`` = mean/std (normalised space) of decoded
    MNIST reconstructions. Input/output float32 ``[n, 784]`` (array or tensor); output in [0, 1].
    """
    x = (normalize(decoded01) - rec_mean) / rec_std * MNIST_STD + MNIST_MEAN
    return tf.clip_by_value(1.2 * x - 0.15, 0.0, 1.0)


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


class StackedLeNets:
    """``M`` DDU LeNets as one network: ``[batch, 28, 28, 1]`` -> logits ``[M, batch, 10]``.

    The same maths as calling each member (`ddu_tf.models.lenet.lenet`), arranged for speed on a
    CPU: the members' first convolutions (1 input channel) run as one 6M-channel convolution,
    the second per member, the dense layers as batched matrix products. About twice as fast as
    calling the members one by one (measured with 5 members, batch 4096, 2 cores).
    """

    def __init__(self, members: Sequence[keras.Model]):
        if not members:
            raise ValueError("Expected at least one LeNet member. Received: none.")

        def weights(layer):
            return [np.stack([np.asarray(m.get_layer(layer).weights[i]) for m in members])
                    for i in (0, 1)]

        try:
            (k1, b1), (k2, b2) = weights("conv1"), weights("conv2")
            dense = [weights(name) for name in ("fc1", "features", "logits")]
        except ValueError as e:
            raise ValueError("Expected DDU LeNets (`ddu_tf.models.lenet.lenet`) with layers conv1, "
                             f"conv2, fc1, features, logits. Received: {e}") from e
        self.num_members = m = len(members)
        self._k1 = tf.constant(np.concatenate(list(k1), axis=-1))  # [5, 5, 1, 6M]
        self._b1 = tf.constant(b1.reshape(-1))
        self._k2, self._b2 = tf.constant(k2), tf.constant(b2)  # [M, 5, 5, 6, 16], [M, 16]
        self._c1 = k1.shape[-1]
        self._dense = [(tf.constant(k), tf.constant(b[:, None, :])) for k, b in dense]
        assert self._k1.shape[-1] == m * self._c1

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Logits ``[M, batch, 10]`` for normalised images ``x`` ``[batch, 28, 28, 1]``."""
        h = tf.nn.relu(tf.nn.conv2d(x, self._k1, 1, "VALID") + self._b1)
        h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        feats = []
        for i, hm in enumerate(tf.split(h, self.num_members, axis=-1)):
            g = tf.nn.relu(tf.nn.conv2d(hm, self._k2[i], 1, "VALID") + self._b2[i])
            g = tf.nn.max_pool2d(g, 2, 2, "VALID")
            feats.append(tf.reshape(g, [tf.shape(g)[0], -1]))  # Keras Flatten order (h, w, c)
        h = tf.stack(feats)  # [M, batch, 256]
        for j, (k, b) in enumerate(self._dense):
            h = tf.matmul(h, k) + b
            if j < len(self._dense) - 1:
                h = tf.nn.relu(h)
        return h


# ---- candidates ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClassIndex:
    """MNIST training images grouped by class: ``order[starts[c]:starts[c] + counts[c]]``."""

    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> "ClassIndex":
        labels = np.asarray(labels, np.int64)
        counts = np.bincount(labels, minlength=10)
        if len(counts) != 10 or (counts == 0).any():
            raise ValueError("Expected every MNIST class 0..9 among the training images used. "
                             f"Received: class counts {counts.tolist()}")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return cls(np.argsort(labels, kind="stable"), starts, counts)


def chunk_draws(seed: int, chunk: int, config: GenerationConfig, classes: ClassIndex
                ) -> Tuple[np.ndarray, np.ndarray]:
    """The random draws of one chunk of candidates: a pure function of ``(seed, chunk)``.

    Group g (``combos_per_group`` consecutive candidates) takes ``k_g ~ U{2, 3, 4}`` distinct
    classes (the first ``k_g`` of a random permutation of 0..9), one uniformly random training
    image of each, and ``combos_per_group`` mixture weights ``w ~ Dirichlet(1_k)`` (normalised
    standard exponentials, uniform on the simplex). Unused slots have weight 0.

    Returns:
      ``src`` int32 ``[chunk_size, 4]`` indices into the MNIST images used, and ``weights``
      float32 ``[chunk_size, 4]``; candidate i decodes ``sum_j weights[i, j] mu[src[i, j]]``.
    """
    groups, per = config.chunk_size // config.combos_per_group, config.combos_per_group
    rng = np.random.default_rng([seed, _STREAM_CANDIDATES, chunk])
    k = rng.integers(2, MIXTURE_SLOTS + 1, size=groups)
    cls = np.argsort(rng.random((groups, 10)), axis=1)[:, :MIXTURE_SLOTS]
    pick = np.floor(rng.random((groups, MIXTURE_SLOTS)) * classes.counts[cls]).astype(np.int64)
    src = classes.order[classes.starts[cls] + pick]
    e = rng.standard_exponential((groups, per, MIXTURE_SLOTS))
    e *= (np.arange(MIXTURE_SLOTS) < k[:, None])[:, None, :]
    w = e / e.sum(-1, keepdims=True)
    return (np.repeat(src, per, axis=0).astype(np.int32),
            w.reshape(-1, MIXTURE_SLOTS).astype(np.float32))


class CandidateScorer:
    """One compiled function from mixture draws to quantised images and ensemble scores.

    ``score(src [B, 4] int32, weights [B, 4] float32)`` returns a dict of
      ``predictive_entropy``, ``mutual_information`` float32 ``[B]`` (nats),
      ``probs`` float32 ``[B, 10]`` (ensemble-mean softmax),
      ``fingerprint`` int64 ``[B]`` (``sum_j q_j FINGERPRINT_WEIGHTS_j``),
      ``pixels`` uint8 ``[B, 784]`` (``q = round(255 x)``),
    computing ``z = sum_j w_j mu[src_j]`` -> ``sigmoid(decoder(z))`` -> `post_process` ->
    ``q`` -> ``normalize(q / 255)`` -> every member's logits -> `ddu_tf.uncertainty`.

    The same inputs in the same batch give bit-identical outputs (op determinism); a row's
    decoded pixels can differ by one quantisation level if decoded in another batch (matrix
    products are blocked by batch size), hence the fingerprint.
    """

    def __init__(self, decoder: keras.Model, members: Sequence[keras.Model], mu: np.ndarray,
                 rec_mean: float, rec_std: float):
        self._decoder = decoder
        self._members = StackedLeNets(members)
        self._mu = tf.constant(np.asarray(mu, np.float32))
        self._rec_mean, self._rec_std = float(rec_mean), float(rec_std)
        self._fingerprint = tf.constant(FINGERPRINT_WEIGHTS)
        self.score = tf.function(self._score, input_signature=[
            tf.TensorSpec([None, MIXTURE_SLOTS], tf.int32),
            tf.TensorSpec([None, MIXTURE_SLOTS], tf.float32)])

    def _score(self, src, weights):
        mu = tf.gather(self._mu, src)  # [B, 4, latent]
        z = weights[:, 0, None] * mu[:, 0]
        for j in range(1, MIXTURE_SLOTS):  # fixed summation order, row by row
            z = z + weights[:, j, None] * mu[:, j]
        decoded = tf.sigmoid(self._decoder(z, training=False))
        q = tf.round(255.0 * post_process(decoded, self._rec_mean, self._rec_std))
        x = tf.reshape(normalize(q / 255.0), [-1, 28, 28, 1])
        logits = self._members(x)
        return {
            "predictive_entropy": uncertainty.ensemble_predictive_entropy(logits),
            "mutual_information": uncertainty.ensemble_mutual_information(logits),
            "probs": tf.exp(uncertainty.ensemble_log_mean_probs(logits)),
            "fingerprint": tf.reduce_sum(tf.cast(q, tf.int64) * self._fingerprint, axis=1),
            "pixels": tf.cast(q, tf.uint8),
        }

    def score_numpy(self, src: np.ndarray, weights: np.ndarray) -> Dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.score(src, weights).items()}


def keep_mask(pe: np.ndarray, mi: np.ndarray, config: GenerationConfig) -> np.ndarray:
    """The filter of step 4: ``MI <= mi_threshold`` and ``pe_min <= PE < pe_max``."""
    return (mi <= config.mi_threshold) & (pe >= config.pe_min) & (pe < config.pe_max)


def score_chunk(scorer: CandidateScorer, chunk: int, config: GenerationConfig,
                classes: ClassIndex) -> Dict[str, np.ndarray]:
    """Scores chunk ``chunk`` in batches of ``batch_size``; returns its KEPT candidates only:
    ``index`` int32 (position in the chunk), ``predictive_entropy``, ``mutual_information``
    float32, ``probs`` float32 ``[kept, 10]``, ``fingerprint`` int64."""
    src, w = chunk_draws(config.seed, chunk, config, classes)
    parts = []
    for start in range(0, config.chunk_size, config.batch_size):
        s = scorer.score_numpy(src[start:start + config.batch_size],
                               w[start:start + config.batch_size])
        keep = np.flatnonzero(keep_mask(s["predictive_entropy"], s["mutual_information"], config))
        parts.append({"index": (start + keep).astype(np.int32),
                      **{k: s[k][keep] for k in ("predictive_entropy", "mutual_information",
                                                 "probs", "fingerprint")}})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ---- selection and statistics --------------------------------------------------------------
def bin_index(pe: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Bin of each value among ``bins`` equal bins over ``[lo, hi]`` (``hi`` in the last bin)."""
    return np.minimum(((pe - lo) / (hi - lo) * bins).astype(np.int64), bins - 1)


def flattened_subsample(pe: np.ndarray, num: int, rng: np.random.Generator, bins: int = 50,
                        lo: float = 0.05, hi: float = 1.6, power: float = 0.2) -> np.ndarray:
    """Indices of ``num`` candidates with a flattened histogram of ``pe`` (step 5).

    Bin b of ``bins`` equal bins over ``[lo, hi]`` gets a quota proportional to
    ``count_b ** power``, capped at ``count_b``; leftover quota goes (again proportionally) to
    bins with spare candidates until ``num`` are allotted. Drawn without replacement. Returns
    sorted int64 indices.

    Raises:
      ValueError: fewer than ``num`` candidates with ``lo <= pe <= hi``.
    """
    in_range = np.flatnonzero((pe >= lo) & (pe <= hi))
    if len(in_range) < num:
        raise ValueError(
            f"Only {len(in_range)} candidates have predictive entropy in [{lo}, {hi}], "
            f"{num} are needed: raise num_candidates or mi_threshold, or train the ensemble "
            "longer.")
    which = bin_index(pe[in_range], lo, hi, bins)
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


def label_entropy(labels: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """Entropy (nats) of each row's empirical label distribution: ``[n, k]`` ints -> ``[n]``."""
    counts = np.stack([(labels == c).sum(1) for c in range(num_classes)], 1)
    q = counts / labels.shape[1]
    return 0.0 - scipy.special.xlogy(q, q).sum(1)  # 0.0 - x turns -0.0 into 0.0


def total_variation(counts_a: Sequence[float], counts_b: Sequence[float]) -> float:
    """``0.5 * sum_b |a_b / sum a - b_b / sum b|`` of two histograms over the same bins."""
    a, b = np.asarray(counts_a, np.float64), np.asarray(counts_b, np.float64)
    return float(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())


def histogram_vs_official(values: np.ndarray, official: Sequence[int],
                          value_range: Tuple[float, float]) -> Dict[str, Any]:
    """``values``' histogram over the official bins and its total-variation distance to it."""
    counts, _ = np.histogram(values, bins=len(official), range=value_range)
    return {"range": list(value_range), "bins": len(official), "counts": counts.tolist(),
            "official_counts": list(official),
            "total_variation": total_variation(counts, official) if counts.sum() else None}


# ---- the resumable build -------------------------------------------------------------------
def default_work_dir(config: GenerationConfig) -> pathlib.Path:
    """``$XDG_CACHE_HOME`` (else ``~/.cache``) ``/ddu_tf/ambiguous_mnist/<config digest>``."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "ddu_tf" / "ambiguous_mnist" / config.digest()[:16]


def _save_npz(path: pathlib.Path, **arrays) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, write)


class _WorkDir:
    """Files of one build: ``build.json``, the VAE stage, one file per member and per chunk."""

    def __init__(self, root: os.PathLike, config: GenerationConfig, mnist_sha256: str):
        self.root = pathlib.Path(root)
        (self.root / "chunks").mkdir(parents=True, exist_ok=True)
        identity = {"format_version": FORMAT_VERSION, "config": config.to_json(),
                    "mnist_sha256": mnist_sha256}
        marker = self.root / "build.json"
        if marker.exists():
            found = json.loads(marker.read_text())
            if found != identity:
                raise ValueError(
                    f"Expected the work directory {self.root} to hold this build. Received: a "
                    f"build of another config or MNIST data ({marker}: {found}; this build: "
                    f"{identity}). Use another --work-dir or delete that one.")
        else:
            atomic_write(marker, lambda tmp: pathlib.Path(tmp).write_text(json.dumps(identity)))

    def path(self, name: str) -> pathlib.Path:
        return self.root / name

    def chunk_path(self, chunk: int) -> pathlib.Path:
        return self.root / "chunks" / f"chunk_{chunk:06d}.npz"


def _train_or_load_vae(work: _WorkDir, x01: np.ndarray, config: GenerationConfig, log
                       ) -> Tuple[keras.Model, Dict[str, Any], float]:
    """Stage 1: trained decoder, encoder means and reconstruction statistics (from the work
    dir when present). Returns (decoder, stats, seconds spent training in this call)."""
    weights, stats_path = work.path("vae_decoder.weights.h5"), work.path("vae.npz")
    seconds = 0.0
    if not (weights.exists() and stats_path.exists()):
        t0 = time.time()
        vae = VAE(config.latent_dim, seed=config.seed + 1)
        history = vae.fit(normalize(x01), config.vae_epochs, config.vae_batch_size,
                          config.vae_learning_rate)
        mu = vae.encode_mean(normalize(x01))
        rec = normalize(vae.decode(mu))
        seconds = time.time() - t0
        atomic_write(weights, vae.decoder.save_weights)
        _save_npz(stats_path, mu=mu, rec_mean=rec.mean(dtype=np.float64),
                  rec_std=rec.std(dtype=np.float64), loss_history=np.array(history),
                  seconds=np.float64(seconds))
        log(f"VAE: {config.vae_epochs} epochs, final loss {history[-1]:.4f}, {seconds:.0f} s")
    vae = VAE(config.latent_dim, seed=config.seed + 1)
    vae.decoder.load_weights(weights)
    with np.load(stats_path, allow_pickle=False) as z:
        stats = {k: z[k] for k in z.files}
    return vae.decoder, stats, seconds


def _train_or_load_members(work: _WorkDir, x01: np.ndarray, y: np.ndarray,
                           config: GenerationConfig, log) -> Tuple[List[keras.Model], float]:
    """Stage 2: the scoring LeNets, one weights file each (trained when absent)."""
    members, seconds = [], 0.0
    for m in range(config.ensemble_size):
        path = work.path(f"lenet_{m}.weights.h5")
        if not path.exists():
            t0 = time.time()
            model = train_lenet(x01.reshape(-1, 28, 28), y, config.seed + 100 + m,
                                config.ensemble_epochs, config.ensemble_batch_size,
                                config.ensemble_learning_rate)
            seconds += time.time() - t0
            atomic_write(path, model.save_weights)
            log(f"LeNet {m + 1}/{config.ensemble_size}: {time.time() - t0:.0f} s")
        model = lenet(num_classes=10, input_shape=(28, 28, 1))
        model.load_weights(path)
        members.append(model)
    return members, seconds


def _load_chunk(path: pathlib.Path) -> Dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _format_seconds(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def _score_chunks(work: _WorkDir, scorer: CandidateScorer, config: GenerationConfig,
                  classes: ClassIndex, log, progress_seconds: float = 10.0) -> Dict[str, float]:
    """Stage 3: scores every chunk without a file yet; returns this call's count and seconds."""
    todo = [c for c in range(config.num_chunks) if not work.chunk_path(c).exists()]
    if len(todo) < config.num_chunks:
        log(f"candidates: {config.num_chunks - len(todo)}/{config.num_chunks} chunks already "
            f"done in {work.root}")
    t0 = last = time.time()
    for i, c in enumerate(todo):
        t_chunk = time.time()
        kept = score_chunk(scorer, c, config, classes)
        _save_npz(work.chunk_path(c), **kept, candidates=np.int64(config.chunk_size),
                  seconds=np.float64(time.time() - t_chunk))
        now = time.time()
        if now - last >= progress_seconds or i == len(todo) - 1 or i == 0:
            last = now
            done = config.num_chunks - len(todo) + i + 1
            rate = (i + 1) * config.chunk_size / (now - t0)
            eta = (len(todo) - i - 1) * config.chunk_size / rate
            log(f"candidates: chunk {done}/{config.num_chunks} ({done * config.chunk_size:,} "
                f"generated, last chunk kept {len(kept['index']) / config.chunk_size:.1%}); "
                f"{rate:,.0f} candidates/s; ETA {_format_seconds(eta)}")
    seconds = time.time() - t0
    return {"candidates_scored_now": len(todo) * config.chunk_size, "scoring_seconds_now": seconds}


def decode_candidates(scorer: CandidateScorer, chunk_ids: np.ndarray, index: np.ndarray,
                     fingerprints: np.ndarray, config: GenerationConfig, classes: ClassIndex
                     ) -> Tuple[np.ndarray, int]:
    """Pixels uint8 ``[n, 784]`` of candidates ``(chunk_ids[i], index[i])``, identical to those
    scored: decoded together, then any row whose fingerprint differs (decoded in another batch)
    is decoded again inside its original scoring batch. Returns (pixels, rows decoded again)."""
    src = np.zeros((len(index), MIXTURE_SLOTS), np.int32)
    w = np.zeros((len(index), MIXTURE_SLOTS), np.float32)
    for c in np.unique(chunk_ids):
        rows = np.flatnonzero(chunk_ids == c)
        s, ww = chunk_draws(config.seed, int(c), config, classes)
        src[rows], w[rows] = s[index[rows]], ww[index[rows]]
    pixels = np.zeros((len(index), 784), np.uint8)
    redo = []
    for start in range(0, len(index), config.batch_size):
        s = scorer.score_numpy(src[start:start + config.batch_size],
                               w[start:start + config.batch_size])
        pixels[start:start + len(s["pixels"])] = s["pixels"]
        bad = np.flatnonzero(s["fingerprint"] != fingerprints[start:start + config.batch_size])
        redo.extend((start + bad).tolist())
    batches = {}
    for r in redo:
        batches.setdefault((int(chunk_ids[r]), int(index[r]) // config.batch_size), []).append(r)
    for (c, b), rows in sorted(batches.items()):
        s, ww = chunk_draws(config.seed, c, config, classes)
        lo = b * config.batch_size
        out = scorer.score_numpy(s[lo:lo + config.batch_size], ww[lo:lo + config.batch_size])
        for r in rows:
            j = int(index[r]) - lo
            if out["fingerprint"][j] != fingerprints[r]:
                raise RuntimeError(
                    f"Candidate {index[r]} of chunk {c} does not decode to the image that was "
                    "scored, even in its original batch: the scorer is not deterministic on this "
                    "machine (op determinism off?), or the work directory is from another "
                    "machine. Rebuild with a fresh --work-dir.")
            pixels[r] = out["pixels"][j]
    return pixels, len(redo)


def generate(mnist_images: np.ndarray, mnist_labels: np.ndarray,
             config: GenerationConfig = GenerationConfig(), verbose: bool = False,
             work_dir: Optional[os.PathLike] = None, command: Optional[str] = None
             ) -> AmbiguousSet:
    """Runs steps 1-7 on MNIST training data, resumably.

    Args:
      mnist_images: uint8 ``[60000, 28, 28]`` MNIST training images (0..255).
      mnist_labels: int64 ``[60000]``.
      config: size and hyper-parameters (`GenerationConfig`).
      verbose: print progress (stages, chunks done, candidates/s, ETA).
      work_dir: directory keeping the trained models and every finished chunk; calling again
        with the same arguments after an interruption continues where it stopped. None: a
        temporary directory, deleted at the end.
      command: the command line that rebuilds this set, stored in the metadata.

    Returns:
      `AmbiguousSet` with ``config.num_images`` images.
    """
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="ddu_tf_amnist_") as tmp:
            return generate(mnist_images, mnist_labels, config, verbose, tmp, command)
    config.validate()
    with deterministic_ops():
        return _generate(mnist_images, mnist_labels, config, verbose, work_dir, command)


@contextlib.contextmanager
def deterministic_ops():
    """TF's deterministic op implementations inside the block, the caller's setting after it.

    ``tf.config.experimental.enable_op_determinism`` is process-wide and has no public
    inverse: left on, it would change the floating-point results (and speed) of whatever the
    process runs after a build (a model trained after ``download_and_prepare`` in the same
    script). TF's own ``disable_op_determinism`` restores it; were that private function gone
    in a future TF, the switch simply stays on, as before.
    """
    from tensorflow.python.framework import config as tf_config

    was_on = getattr(tf_config, "is_op_determinism_enabled", lambda: True)()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on and hasattr(tf_config, "disable_op_determinism"):
            tf_config.disable_op_determinism()


def _generate(mnist_images, mnist_labels, config, verbose, work_dir, command):
    """The body of :func:`generate` (validated config, a work directory, deterministic ops)."""
    t_start = time.time()

    def log(msg):
        if verbose:
            print(msg, flush=True)

    n = len(mnist_images) if config.mnist_subset is None else int(config.mnist_subset)
    images_u8 = np.ascontiguousarray(mnist_images[:n], dtype=np.uint8)
    y = np.asarray(mnist_labels[:n], np.int64)
    mnist_sha = hashlib.sha256(images_u8.tobytes() + y.tobytes()).hexdigest()
    x01 = images_u8.reshape(n, 784).astype(np.float32) / 255.0
    classes = ClassIndex.from_labels(y)
    work = _WorkDir(work_dir, config, mnist_sha)
    timings: Dict[str, float] = {}

    decoder, vae_stats, timings["vae_seconds_now"] = _train_or_load_vae(work, x01, config, log)
    members, timings["ensemble_seconds_now"] = _train_or_load_members(work, x01, y, config, log)
    scorer = CandidateScorer(decoder, members, vae_stats["mu"], float(vae_stats["rec_mean"]),
                             float(vae_stats["rec_std"]))
    timings.update(_score_chunks(work, scorer, config, classes, log))

    t_final = time.time()
    pe_parts, chunk_seconds = [], 0.0
    for c in range(config.num_chunks):
        with np.load(work.chunk_path(c), allow_pickle=False) as z:
            pe_parts.append(z["predictive_entropy"])
            chunk_seconds += float(z["seconds"])
    kept_per_chunk = np.array([len(p) for p in pe_parts])
    pool_pe = np.concatenate(pe_parts)
    rng = np.random.default_rng([config.seed, _STREAM_SELECTION])
    chosen = flattened_subsample(pool_pe, config.num_images, rng, config.hist_bins,
                                 config.hist_min, config.hist_max, config.hist_power)
    chosen = chosen[rng.permutation(len(chosen))]  # random 50/50 train/test split
    offsets = np.concatenate([[0], np.cumsum(kept_per_chunk)])
    chunk_ids = np.searchsorted(offsets, chosen, side="right") - 1
    fields = {k: [] for k in ("index", "predictive_entropy", "mutual_information", "probs",
                              "fingerprint")}
    rows = np.empty(len(chosen), np.int64)
    filled = 0
    for c in np.unique(chunk_ids):
        sel = np.flatnonzero(chunk_ids == c)
        kept = _load_chunk(work.chunk_path(int(c)))
        for k in fields:
            fields[k].append(kept[k][chosen[sel] - offsets[c]])
        rows[sel] = np.arange(filled, filled + len(sel))
        filled += len(sel)
    sel_fields = {k: np.concatenate(v)[rows] for k, v in fields.items()}
    pixels, redecoded = decode_candidates(scorer, chunk_ids, sel_fields["index"],
                                         sel_fields["fingerprint"], config, classes)
    probs = sel_fields["probs"].astype(np.float32)
    pe = sel_fields["predictive_entropy"].astype(np.float32)
    mi = sel_fields["mutual_information"].astype(np.float32)
    labels = sample_labels(probs, config.labels_per_image,
                           np.random.default_rng([config.seed, _STREAM_LABELS]))
    half = config.num_images // 2
    lab_h = label_entropy(labels)
    identical = (labels == labels[:, :1]).all(1)
    in_hist = (pool_pe >= config.hist_min) & (pool_pe <= config.hist_max)
    bins = (config.hist_min, config.hist_max, config.hist_bins)
    pool_bins = np.bincount(bin_index(pool_pe[in_hist], *bins), minlength=config.hist_bins)
    sel_bins = np.bincount(bin_index(pe, *bins), minlength=config.hist_bins)
    exhausted = int(((sel_bins == pool_bins) & (pool_bins > 0)).sum())
    info = {
        "format_version": FORMAT_VERSION,
        "generator": "ddu_tf.generation.ambiguous_mnist",
        "command": command,
        "config": config.to_json(),
        "mnist": {"images_used": n, "sha256_of_images_and_labels": mnist_sha},
        "vae_final_loss": float(vae_stats["loss_history"][-1]),
        "counts": {
            "candidates": config.num_candidates, "chunks": config.num_chunks,
            "candidates_kept": int(len(pool_pe)),
            "kept_fraction": float(len(pool_pe) / config.num_candidates),
            "kept_in_selection_range": int(in_hist.sum()),
            "images": config.num_images, "train_images": half,
            "test_images": config.num_images - half,
            "selected_redecoded_in_scoring_batch": int(redecoded),
        },
        "selection_bins": {"range": [config.hist_min, config.hist_max], "bins": config.hist_bins,
                           "pool_counts": pool_bins.tolist(), "selected_counts": sel_bins.tolist(),
                           "bins_exhausted": exhausted},
        "pool_pe_histogram": histogram_vs_official(pool_pe, OFFICIAL_POOL_HIST,
                                                   OFFICIAL_POOL_RANGE),
        "test_pe_histogram": histogram_vs_official(pe[half:], OFFICIAL_TEST_HIST,
                                                   OFFICIAL_TEST_RANGE),
        "predictive_entropy": {"mean": float(pe.mean()), "mean_test": float(pe[half:].mean()),
                               "min": float(pe.min()), "max": float(pe.max())},
        "max_mutual_information": float(mi.max()),
        "label_entropy": {"mean": float(lab_h.mean()), "mean_train": float(lab_h[:half].mean()),
                          "mean_test": float(lab_h[half:].mean())},
        "fraction_identical_labels": {"all": float(identical.mean()),
                                      "test": float(identical[half:].mean())},
    }
    timings.update({
        "candidate_seconds_all_runs": chunk_seconds,
        "final_seconds": time.time() - t_final,
        "total_seconds_now": time.time() - t_start,
        "vae_seconds_first_run": float(vae_stats["seconds"]),
    })
    if timings["scoring_seconds_now"] > 0:
        timings["candidates_per_second_now"] = (timings["candidates_scored_now"]
                                                / timings["scoring_seconds_now"])
    log(f"selected {config.num_images} of {len(pool_pe):,} kept candidates "
        f"({info['counts']['kept_fraction']:.1%} of {config.num_candidates:,}); test PE "
        f"histogram TV to the official {info['test_pe_histogram']['total_variation']:.3f}, pool "
        f"TV {info['pool_pe_histogram']['total_variation']:.3f}; mean label entropy "
        f"{info['label_entropy']['mean']:.3f} nats")
    return AmbiguousSet(pixels=pixels.reshape(-1, 28, 28), labels=labels, probs=probs,
                        predictive_entropy=pe, mutual_information=mi, info=info, timings=timings)


def write(result: AmbiguousSet, path: os.PathLike) -> str:
    """Writes ``result`` in the format of `ddu_tf.io.ambiguous_mnist`; returns its SHA-256."""
    return amnist_io.save_generated(path, result.pixels, result.labels, result.probs,
                                    result.predictive_entropy, result.mutual_information,
                                    result.info)
