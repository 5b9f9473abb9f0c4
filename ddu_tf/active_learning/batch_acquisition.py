"""Batch acquisition: BatchBALD and stochastic batch acquisition (PowerBALD and friends).

Acquiring the top-``b`` BALD points of one round picks near-duplicates. Two answers:

* **BatchBALD** (Kirsch, van Amersfoort & Gal, NeurIPS 2019): grow the batch greedily, each
  step adding the pool point that maximises the joint mutual information

      ``a(x_1..x_n) = H(y_1..y_n) - sum_i E_w[H(y_i | w)]``                     (paper eq. 8)

  where, with K MC samples ``w_k`` (one *consistent* dropout mask per k, shared by every
  pool point) the joint predictive is ``p(y_1..y_n) = (1/K) sum_k prod_i p_k(y_i)``. The
  joint entropy is exact (enumerating the ``C^(n-1)`` class configurations of the points
  chosen so far) while ``C^(n-1) <= num_configurations``, and beyond that estimated from
  ``M = num_configurations`` configurations ``y^m`` sampled from ``p(y_1..y_{n-1})``
  (``k_m = m mod K``, ``y_i^m ~ p_{k_m}(y_i)``), by importance weighting (paper eq. 12):

      ``H(y_1..y_n) ~= -(1/M) sum_m sum_y p(y^m, y) / p(y^m) log p(y^m, y)``.

  For ``b = 1`` BatchBALD is BALD. Greedy selection is within ``1 - 1/e`` of the optimum
  (the objective is submodular).
* **Stochastic batch acquisition** (Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron
  & Gal, TMLR 2023): score every point once (any single-point score ``s_i``: BALD, entropy,
  a DDU density) and draw the batch without replacement with probabilities

      power ``p_i ~ s_i^beta`` ("PowerBALD" for BALD), softmax ``p_i ~ exp(beta s_i)``,
      soft-rank ``p_i ~ rank_i^-beta`` (rank 1 = highest score);

  ``beta = 1`` is the paper's default. The draw is the Gumbel-top-k trick: the top ``b`` of
  ``log p_i + Gumbel_i`` is distributed exactly as ``b`` successive draws without
  replacement (each point with probability proportional to its weight among those left).

Everything is tensor ops in ``tf.function``s: the joint entropies of all pool points are one
batched matmul per greedy step (chunked over the pool to bound memory), so the only Python
loop is over the ``b`` greedy steps. Randomness is stateless (a ``[2]`` seed).

Shapes: ``log_probs`` is ``[K, N, C]`` (MC samples, pool points, classes) log-softmax, as
:meth:`ddu_tf.inference.MCDropoutPredictor.log_probs` returns (use
``consistent_masks=True`` for BatchBALD); entropies are in nats.

Example:
    >>> predictor = MCDropoutPredictor(model, 100, consistent_masks=True)
    >>> log_probs = predictor.log_probs(x_pool)                 # [100, N, 10]
    >>> batch, gains = batchbald(log_probs, 10)                 # [10] positions, [10] nats
    >>> batch = stochastic_batch(bald(log_probs), 10, mode="power", seed=(0, 1))
"""
import numpy as np
import tensorflow as tf

from ddu_tf.inference import MCDropoutPredictor
from ddu_tf.inference.predictor import chunked_map
from ddu_tf.uncertainty import (check_log_probs, expected_entropy, mutual_information,
                                predictive_entropy)

STOCHASTIC_MODES = ("power", "softmax", "softrank")


_seed_tensor = MCDropoutPredictor._seed_tensor  # int or two ints -> int64 [2]


# ----------------------------------------------------------------------------- BatchBALD
def _joint_entropy_chunk(probs_chunk, log_joint, exact, num_samples_total):
    """Joint entropies ``H(y_1..y_{n-1}, y)`` of one chunk of candidates.

    Args:
        probs_chunk: ``[b, K, C]`` per-sample class probabilities of the candidates.
        log_joint: ``[K, J]`` ``log prod_i p_k(y_i^j)`` of the J configurations of the
            points chosen so far (all ``C^(n-1)`` of them, or M sampled ones).
        exact: scalar bool, whether the J configurations are the full enumeration.
        num_samples_total: K as the dtype.

    Returns:
        ``[b]`` joint entropies in nats.

    Each configuration's column is scaled by ``s_j = max_k log_joint[k, j]`` so nothing
    underflows: with ``P'_kj = exp(log_joint_kj - s_j)``, ``q'_j = mean_k P'_kj`` and
    ``r_bjc = mean_k P'_kj p_k(c)`` (so ``p(y^j, c) = e^{s_j} r_bjc``),
    ``H = -sum_j a_j [sum_c r log r + s_j q'_j]`` with ``a_j = e^{s_j}`` (exact) or
    ``1 / (M q'_j)`` (sampled, the importance weights).
    """
    shift = tf.reduce_max(log_joint, axis=0)                             # [J]
    scaled = tf.exp(log_joint - shift[None, :])                          # [K, J]
    q = tf.reduce_mean(scaled, axis=0)                                   # [J]
    b, num_classes = tf.shape(probs_chunk)[0], tf.shape(probs_chunk)[2]
    # one GEMM [J, K] x [K, b * C] for the whole chunk
    per_sample = tf.reshape(tf.transpose(probs_chunk, [1, 0, 2]), [tf.shape(log_joint)[0], -1])
    r = tf.reshape(tf.matmul(scaled, per_sample, transpose_a=True) / num_samples_total,
                   [-1, b, num_classes])                                 # [J, b, C]
    num_configurations = tf.cast(tf.shape(log_joint)[1], log_joint.dtype)
    weights = tf.where(exact, tf.exp(shift), 1.0 / (num_configurations * q))
    r_log_r = tf.reduce_sum(tf.math.xlogy(r, r), axis=-1)               # [J, b]
    return -(tf.linalg.matvec(r_log_r, weights, transpose_a=True)
             + tf.reduce_sum(weights * shift * q))


def joint_entropy_flops(num_points, num_samples, num_configurations, num_classes):
    """Multiply-add FLOPs (2 per MAC) of one greedy step: ``2 N K J C`` (the GEMM)."""
    return 2 * num_points * num_samples * num_configurations * num_classes


_JOINT_ENTROPY_FNS = {}


def _joint_entropy_fn(dtype, num_classes, num_samples, max_configurations, budget_mb):
    """Compiled ``H(y_1..y_{n-1}, y_x)`` for every pool point x, chunked over the pool;
    cached per shape so an active-learning run traces it once."""
    key = (dtype, num_classes, num_samples, max_configurations, budget_mb)
    if key not in _JOINT_ENTROPY_FNS:
        per_point = max_configurations * num_classes * dtype.size * 3
        chunk = int(max(1, min(4096, (budget_mb << 20) // per_point)))
        k = tf.cast(num_samples, dtype)

        @tf.function(input_signature=[tf.TensorSpec([None, num_samples, num_classes], dtype),
                                      tf.TensorSpec([num_samples, None], dtype),
                                      tf.TensorSpec([], tf.bool)])
        def all_points(probs_nkc, log_joint, exact):
            return chunked_map(probs_nkc, lambda part, _: _joint_entropy_chunk(
                part, log_joint, exact, k), chunk, output_signature=dtype)

        _JOINT_ENTROPY_FNS[key] = all_points
    return _JOINT_ENTROPY_FNS[key]


def joint_entropy(log_probs, dtype=tf.float64):
    """Exact joint entropy ``H(y_1..y_n)`` of ``n`` points by enumerating ``C^n`` configurations.

    Args:
        log_probs: ``[K, n, C]`` MC log-probabilities of the n points (consistent samples).
        dtype: float dtype of the computation.

    Returns:
        Scalar, nats: ``-sum_y p(y) log p(y)`` with ``p(y) = (1/K) sum_k prod_i p_k(y_i)``.
        Meant for small n (memory ``K * C^n``).
    """
    log_probs = tf.cast(check_log_probs(log_probs), dtype)
    k = tf.shape(log_probs)[0]
    log_joint = tf.zeros([k, 1], dtype)
    for i in range(int(log_probs.shape[1])):
        log_joint = tf.reshape(log_joint[:, :, None] + log_probs[:, i, None, :], [k, -1])
    log_p = tf.reduce_logsumexp(log_joint, axis=0) - tf.math.log(tf.cast(k, dtype))
    return -tf.reduce_sum(tf.math.multiply_no_nan(log_p, tf.exp(log_p)))


def batchbald(log_probs, batch_size, *, num_configurations=10_000, seed=0, dtype=tf.float64,
              memory_budget_mb=256):
    """Greedy BatchBALD batch of ``batch_size`` pool positions.

    Args:
        log_probs: ``[K, N, C]`` MC log-softmax of the pool with consistent dropout masks
            (the same K weight samples for every point).
        batch_size: points to acquire, ``1 <= batch_size <= N``.
        num_configurations: M. The joint entropy is exact while the points already chosen
            have at most M class configurations (``C^(n-1) <= M``), else estimated from M
            sampled configurations (the original used 40000 // K * K).
        seed: int or two ints, the stateless seed of the configuration samples.
        dtype: computation dtype (float64 as the original; float32 is ~3x faster on CPU).
        memory_budget_mb: bound on the per-chunk ``[chunk, M, C]`` intermediate, MiB.

    Returns:
        ``(positions, gains)``: ``int64 [batch_size]`` positions into the pool in the order
        chosen, and ``[batch_size]`` the BatchBALD value ``a(x_1..x_n)`` after each step
        (nats, non-decreasing up to estimation noise); ``gains[0]`` is the top BALD score.
    """
    log_probs = check_log_probs(log_probs)
    k, n, c = (int(d) for d in log_probs.shape)
    batch_size = int(batch_size)
    if not 1 <= batch_size <= n:
        raise ValueError(f"Expected 1 <= batch_size <= {n} (pool points). Received: "
                         f"batch_size={batch_size}")
    if int(num_configurations) < 1:
        raise ValueError("Expected num_configurations >= 1. Received: "
                         f"num_configurations={num_configurations}")
    m = int(num_configurations)
    seed = _seed_tensor(seed)
    log_probs = tf.cast(log_probs, dtype)
    if not bool(tf.reduce_all(tf.math.is_finite(tf.reduce_logsumexp(log_probs, -1)))):
        raise ValueError("Expected finite log_probs (log-softmax). Received: NaN or inf "
                         "normalisers; check the model's outputs.")
    probs_nkc = tf.exp(tf.transpose(log_probs, [1, 0, 2]))
    conditional = expected_entropy(log_probs)                            # [N] E_w H(y|w)
    joint_entropies = _joint_entropy_fn(dtype, c, k, m, int(memory_budget_mb))
    # M stratified samples: configuration m uses weight sample k_m = m mod K.
    sample_k = tf.range(m) % k
    exact_log_joint = tf.zeros([k, 1], dtype)
    sampled_log_joint = tf.zeros([k, m], dtype)
    chosen, gains = [], []
    chosen_conditional = tf.zeros([], dtype)
    taken = tf.zeros([n], tf.bool)
    for step in range(batch_size):
        exact = c ** step <= m
        entropies = joint_entropies(probs_nkc, exact_log_joint if exact else sampled_log_joint,
                                     tf.constant(exact))
        values = entropies - conditional - chosen_conditional
        values = tf.where(taken, tf.constant(-np.inf, dtype), values)
        best = int(tf.argmax(values))
        chosen.append(best)
        gains.append(float(values[best]))
        taken = tf.tensor_scatter_nd_update(taken, [[best]], [True])
        chosen_conditional += conditional[best]
        point = log_probs[:, best, :]                                    # [K, C]
        if c ** (step + 1) <= m:
            exact_log_joint = tf.reshape(exact_log_joint[:, :, None] + point[:, None, :], [k, -1])
        labels = tf.random.stateless_categorical(
            tf.gather(point, sample_k), 1,
            tf.random.experimental.stateless_fold_in(seed, step))[:, 0]   # [M]
        sampled_log_joint += tf.gather(point, labels, axis=1)            # [K, M]
    return np.asarray(chosen, np.int64), np.asarray(gains)


# ----------------------------------------------------------------------------- stochastic
@tf.function(input_signature=[tf.TensorSpec([None], tf.float64), tf.TensorSpec([], tf.int32),
                              tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.float64),
                              tf.TensorSpec([2], tf.int64)])
def _gumbel_top_k(scores, k, mode, beta, seed):
    n = tf.shape(scores)[0]
    # rank 1 = highest score; ties broken by position (a stable sort)
    order = tf.argsort(-scores, stable=True)
    ranks = tf.cast(tf.scatter_nd(order[:, None], tf.range(1, n + 1), [n]), tf.float64)
    log_weights = tf.switch_case(
        tf.cast(tf.where(tf.equal(mode, "power"), 0, tf.where(tf.equal(mode, "softmax"), 1, 2)),
                tf.int32),
        [lambda: beta * tf.math.log(scores), lambda: beta * scores,
         lambda: -beta * tf.math.log(ranks)])
    uniform = tf.random.stateless_uniform([n], seed, minval=np.finfo(np.float64).tiny,
                                          maxval=1.0, dtype=tf.float64)
    gumbel = -tf.math.log(-tf.math.log(uniform))
    return tf.math.top_k(log_weights + gumbel, k).indices


def stochastic_probabilities(scores, mode="power", beta=1.0):
    """First-draw probabilities ``p_i`` of :func:`stochastic_batch`, ``[N] -> float64 [N]``.

    power: ``s_i^beta / sum_j s_j^beta``; softmax: ``softmax(beta s)``; softrank:
    ``rank_i^-beta / sum_j rank_j^-beta`` (rank 1 = highest score, ties by position).
    """
    scores, mode, beta = _check_stochastic(scores, mode, beta)
    if mode == "power":
        log_w = beta * np.log(scores, where=scores > 0, out=np.full(scores.shape, -np.inf))
    elif mode == "softmax":
        log_w = beta * scores
    else:
        ranks = np.empty(scores.size)
        ranks[np.argsort(-scores, kind="stable")] = np.arange(1, scores.size + 1)
        log_w = -beta * np.log(ranks)
    w = np.exp(log_w - log_w.max())
    return w / w.sum()


def _check_stochastic(scores, mode, beta):
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"Expected scores of shape [N], N >= 1. Received: shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("Expected finite scores. Received: scores containing NaN or inf.")
    if mode not in STOCHASTIC_MODES:
        raise ValueError(f"Expected mode in {STOCHASTIC_MODES}. Received: mode={mode!r}")
    if not float(beta) >= 0:
        raise ValueError(f"Expected beta >= 0. Received: beta={beta}")
    if mode == "power" and (np.any(scores < 0) or not np.any(scores > 0)):
        raise ValueError("Expected non-negative scores with at least one > 0 for mode='power' "
                         "(p ~ s^beta). Received: min score "
                         f"{scores.min()}, max {scores.max()}. Use mode='softmax' or "
                         "'softrank' for signed scores (e.g. a log-density).")
    return scores, mode, float(beta)


def stochastic_batch(scores, batch_size, *, mode="power", beta=1.0, seed=0):
    """Draw ``batch_size`` distinct positions with probabilities from any single-point score.

    Args:
        scores: ``[N]`` finite scores, higher = more informative (BALD, entropy, a DDU
            density's negative, ...); non-negative for ``mode="power"``.
        batch_size: points to draw, ``1 <= batch_size``; at most the number of points with
            non-zero probability (for power: scores > 0).
        mode: "power" (``p ~ s^beta``), "softmax" (``p ~ exp(beta s)``) or "softrank"
            (``p ~ rank^-beta``).
        beta: inverse temperature ``>= 0`` (0: uniform; large: top-k).
        seed: int or two ints (stateless).

    Returns:
        ``int64 [batch_size]`` positions, in draw order (successive sampling without
        replacement, by the Gumbel-top-k trick).
    """
    scores, mode, beta = _check_stochastic(scores, mode, beta)
    batch_size = int(batch_size)
    support = int(np.sum(scores > 0)) if mode == "power" else scores.size
    if not 1 <= batch_size <= support:
        raise ValueError(f"Expected 1 <= batch_size <= {support} (points with non-zero "
                         f"probability). Received: batch_size={batch_size}")
    return _gumbel_top_k(tf.constant(scores), tf.constant(batch_size, tf.int32),
                         tf.constant(mode), tf.constant(beta, tf.float64),
                         _seed_tensor(seed)).numpy().astype(np.int64)


def selection_scores(positions, num_candidates):
    """Scores ``[num_candidates]`` whose top-``len(positions)`` is ``positions`` in order.

    Lets a chosen batch go through a top-k loop (``ActiveLearningLoop``'s ``score_fn``):
    position ``positions[r]`` gets ``len(positions) - r``, every other point 0.
    """
    positions = np.asarray(positions, dtype=np.int64).ravel()
    if positions.size and (positions.min() < 0 or positions.max() >= num_candidates
                           or np.unique(positions).size != positions.size):
        raise ValueError(f"Expected distinct positions in [0, {num_candidates}). Received: "
                         f"{positions.tolist()}")
    scores = np.zeros(int(num_candidates))
    scores[positions] = np.arange(positions.size, 0, -1)
    return scores


def _stochastic(score_fn, mode):
    def acquire(log_probs, batch_size, *, seed=0, beta=1.0):
        scores = score_fn(check_log_probs(log_probs)).numpy()
        if mode == "power":
            scores = np.maximum(scores, 0.0)  # rounding below 0 of a mutual information
        return stochastic_batch(scores, batch_size, mode=mode, beta=beta, seed=seed)
    acquire.__name__ = f"{mode}_{score_fn.__name__}"
    acquire.__doc__ = (f"``{mode}`` stochastic batch over ``{score_fn.__name__}`` scores: "
                       "``(log_probs [K, N, C], batch_size, *, seed, beta) -> int64 [batch]``.")
    return acquire


def _batchbald_positions(log_probs, batch_size, *, seed=0, **kwargs):
    """:func:`batchbald`'s positions only (the registry signature)."""
    return batchbald(log_probs, batch_size, seed=seed, **kwargs)[0]


BATCH_ACQUISITION_FUNCTIONS = {
    "batchbald": _batchbald_positions,
    "powerbald": _stochastic(mutual_information, "power"),
    "softmaxbald": _stochastic(mutual_information, "softmax"),
    "softrankbald": _stochastic(mutual_information, "softrank"),
    "powerentropy": _stochastic(predictive_entropy, "power"),
}
"""name -> ``fn(log_probs [K, N, C], batch_size, *, seed, ...) -> int64 [batch_size]``."""
