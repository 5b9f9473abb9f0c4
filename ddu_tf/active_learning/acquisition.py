"""Acquisition functions of Gal, Islam & Ghahramani (2017), computed from MC log-probabilities.

Every scoring function takes ``log_probs`` of shape ``[T, batch, classes]``: the
log-softmax of ``T`` stochastic forward passes (T dropout masks) for each pool point,
and returns scores of shape ``[batch]`` (nats where the score is an entropy). Higher
score = acquire first. All work stays in log space (the maths lives in
:mod:`ddu_tf.uncertainty`: ``log p_bar = logsumexp_t(log p_t) - log T``, entropies with
``0 * log 0 = 0``; no epsilons, no NaN).

Equations (p_bar = mean_t p_t, C classes):

* Max Entropy        ``H[p_bar] = -sum_c p_bar_c log p_bar_c``                 (paper eq. 2)
* BALD               ``H[p_bar] - mean_t H[p_t]``                              (paper eq. 3)
* Variation Ratios   ``1 - max_c p_bar_c``                                     (paper eq. 4)
* Mean STD           ``mean_c sqrt(E_t[p_tc^2] - E_t[p_tc]^2)``                (paper eq. 5)
* Random             i.i.d. uniform scores from a stateless seed.

With two classes Max Entropy and Variation Ratios are both strictly increasing functions of
``min(p_bar_1, 1 - p_bar_1)``, so they rank every pool identically and acquire the same
points (Experiment 3's two curves coincide by construction; ties aside).
"""
import numpy as np
import tensorflow as tf

from ddu_tf.active_learning.batch_acquisition import BATCH_ACQUISITION_FUNCTIONS
from ddu_tf.uncertainty import (check_log_probs, entropy_from_log_probs,  # noqa: F401
                                log_mean_prob, mutual_information, predictive_entropy)


def max_entropy(log_probs):
    """Predictive entropy ``H[p_bar]`` in nats, ``[T, batch, classes] -> [batch]`` (eq. 2);
    :func:`ddu_tf.uncertainty.predictive_entropy`."""
    return predictive_entropy(log_probs)


def bald(log_probs):
    """BALD mutual information ``H[p_bar] - mean_t H[p_t]`` in nats, ``[T, B, C] -> [B]``.

    :func:`ddu_tf.uncertainty.mutual_information`, which is non-negative by Jensen's
    inequality; float rounding below zero (order 1e-7) is clipped to 0 so scores are valid
    mutual informations.
    """
    return tf.maximum(mutual_information(log_probs), 0.0)


def variation_ratios(log_probs):
    """Variation ratio ``1 - max_c p_bar_c`` (unitless, in [0, 1 - 1/C]), ``[T,B,C] -> [B]``."""
    return 1.0 - tf.exp(tf.reduce_max(log_mean_prob(log_probs), axis=-1))


def mean_std(log_probs):
    """Mean over classes of the MC standard deviation of ``p_tc``, ``[T, B, C] -> [B]``.

    Computed as ``sqrt(mean_t (p_tc - p_bar_c)^2)``, equal to
    ``sqrt(E[p^2] - E[p]^2)`` but never negative under rounding.
    """
    log_probs = check_log_probs(log_probs)
    probs = tf.exp(log_probs)
    centred = probs - tf.reduce_mean(probs, axis=0, keepdims=True)
    return tf.reduce_mean(tf.sqrt(tf.reduce_mean(tf.square(centred), axis=0)), axis=-1)


def random_scores(log_probs, seed=(0, 0)):
    """Uniform ``[0, 1)`` scores, ``[T, B, C] -> [B]``, from a stateless seed ``[2]`` ints."""
    log_probs = check_log_probs(log_probs)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    return tf.random.stateless_uniform(tf.shape(log_probs)[1:2], seed=seed,
                                       dtype=log_probs.dtype)


ACQUISITION_FUNCTIONS = {
    "bald": bald,
    "max_entropy": max_entropy,
    "var_ratios": variation_ratios,
    "mean_std": mean_std,
    "random": random_scores,
}


def get_acquisition(name):
    """Return the scoring function registered under ``name`` (see ``ACQUISITION_FUNCTIONS``)."""
    if name not in ACQUISITION_FUNCTIONS:
        hint = (" It is a batch acquisition: use get_batch_acquisition."
                if name in BATCH_ACQUISITION_FUNCTIONS else "")
        raise ValueError(
            f"Unknown acquisition name={name!r}. Expected one of "
            f"{sorted(ACQUISITION_FUNCTIONS)}.{hint}")
    return ACQUISITION_FUNCTIONS[name]


def get_batch_acquisition(name):
    """Return the batch acquisition registered under ``name``: ``fn(log_probs [K, N, C],
    batch_size, *, seed, ...) -> int64 [batch_size]`` positions (see
    :mod:`ddu_tf.active_learning.batch_acquisition`, ``BATCH_ACQUISITION_FUNCTIONS``)."""
    if name not in BATCH_ACQUISITION_FUNCTIONS:
        raise ValueError(f"Unknown batch acquisition name={name!r}. Expected one of "
                         f"{sorted(BATCH_ACQUISITION_FUNCTIONS)}.")
    return BATCH_ACQUISITION_FUNCTIONS[name]


def select_top_k(scores, k, candidate_ids=None):
    """Indices of the ``k`` highest scores; ties go to the lower position.

    Args:
        scores: ``[N]`` finite scores (higher = acquire first).
        k: number to select, ``1 <= k <= N``; fewer are returned only when fewer distinct
            ``candidate_ids`` exist.
        candidate_ids: optional ``[N]`` ids (e.g. pool indices). When given, the batch
            holds each id at most once (a duplicated id keeps its best-scored entry)
            and the ids are returned instead of positions.

    Returns:
        ``int64 [min(k, distinct)]`` positions into ``scores`` (or ids), best first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"Expected scores of shape [N]. Received: scores.shape={scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("Expected finite scores. Received: scores containing NaN or inf.")
    if int(k) < 1:
        raise ValueError(f"Expected k >= 1. Received: k={k}")
    if int(k) > scores.shape[0]:
        pool = "an empty pool" if scores.shape[0] == 0 else f"{scores.shape[0]} candidates"
        raise ValueError(f"Expected k <= N, the number of scored candidates. Received: k={k} "
                         f"for {pool}. Score more pool points or acquire fewer.")
    positions = np.arange(scores.shape[0])
    order = np.lexsort((positions, -scores))  # primary: score desc, then position asc
    if candidate_ids is None:
        return order[:int(k)].astype(np.int64)
    candidate_ids = np.asarray(candidate_ids)
    if candidate_ids.shape != scores.shape:
        raise ValueError(
            "Expected candidate_ids with the shape of scores. Received: "
            f"candidate_ids.shape={candidate_ids.shape}, scores.shape={scores.shape}")
    ids_in_order = candidate_ids[order]
    _, first = np.unique(ids_in_order, return_index=True)
    keep = np.sort(first)[:int(k)]
    return ids_in_order[keep].astype(np.int64)



# --- Minimum Bayes Risk (Zhu, Lafferty & Ghahramani 2003), the graph baseline of Exp. 3 ---

def rbf_graph(features, sigma=None, num_neighbors=None):
    """RBF affinity ``W_ij = exp(-||x_i - x_j||^2 / sigma^2)`` with ``W_ii = 0``, dense or
    restricted to a symmetrised k-nearest-neighbour graph.

    On MNIST pixels the dense graph links every image to every other with weights of the
    same order, so the harmonic solution of a few labelled nodes is nearly constant
    (f in 0.53-0.54 for 4-vs-9) and MBR falls to chance; keeping each node's
    ``num_neighbors`` nearest neighbours (an edge is kept when either end has the other
    among its neighbours, ``W = max(W_knn, W_knn^T)``) makes f follow the data manifold.

    Args:
        features: ``[n, d]`` float array.
        sigma: length scale (same units as ``features``); None uses the median distance
            of each point to its 10th nearest neighbour.
        num_neighbors: None for the dense graph, else k in ``[1, n - 1]``.

    Returns:
        ``float64 [n, n]`` symmetric non-negative weights.
    """
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    sq = np.sum(x ** 2, axis=1)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    np.fill_diagonal(dist2, np.inf)  # a node is not its own neighbour
    if sigma is None:
        kth = min(10, len(x) - 1) - 1
        sigma = float(np.sqrt(np.median(np.partition(dist2, kth, axis=1)[:, kth])))
    if not sigma > 0:
        raise ValueError(f"Expected sigma > 0. Received: sigma={sigma}")
    weights = np.exp(-dist2 / sigma ** 2)  # diagonal: exp(-inf) = 0
    if num_neighbors is not None:
        k = int(num_neighbors)
        if not 1 <= k <= len(x) - 1:
            raise ValueError(f"Expected num_neighbors in [1, {len(x) - 1}] (n - 1) or None. "
                             f"Received: num_neighbors={num_neighbors}")
        nearest = np.argpartition(dist2, k - 1, axis=1)[:, :k]  # [n, k]
        mask = np.zeros(weights.shape, dtype=bool)
        mask[np.repeat(np.arange(len(x)), k), nearest.ravel()] = True
        weights = np.where(mask | mask.T, weights, 0.0)
    return weights


def harmonic_solution(weights, labelled, labels, ground_value=0.5, ground_weight=1e-8):
    """Harmonic function ``f_U = (D_UU - W_UU)^{-1} W_UL f_L`` (Zhu et al. 2003, eq. 5).

    A sparse (k-nearest-neighbour) graph can have components without a labelled node,
    where ``D_UU - W_UU`` is singular. Every unlabelled node is therefore also tied, with
    weight ``gamma = ground_weight * mean(degree)``, to a "dongle" node of value
    ``ground_value`` (Zhu et al.'s dongle construction):
    ``f_U = (D_UU - W_UU + gamma I)^{-1} (W_UL f_L + gamma ground_value)``. A component
    without labels then takes ``ground_value``; elsewhere f moves by ``O(gamma / lambda)``
    from the exact harmonic solution (``lambda``: smallest eigenvalue of the component's
    ``D_UU - W_UU``; below 1e-6 on the graphs used here).

    Args:
        weights: ``[n, n]`` symmetric non-negative affinities.
        labelled: ``[l]`` node indices with known binary labels.
        labels: ``[l]`` labels in {0, 1}.
        ground_value: P(y = 1) of a node with no path to a labelled node, in [0, 1].
        ground_weight: ``gamma`` relative to the mean degree, > 0.

    Returns:
        ``(unlabelled, f_u, green)``: ``[u]`` node indices, ``[u]`` P(y = 1) and the
        ``[u, u]`` Green's function ``(D_UU - W_UU + gamma I)^{-1}``.
    """
    weights = np.asarray(weights, dtype=np.float64)
    labelled = np.asarray(labelled, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.float64)
    if labelled.shape != labels.shape or not np.all((labels == 0) | (labels == 1)):
        raise ValueError("Expected labels in {0, 1} with the shape of labelled. Received: "
                         f"labels={labels}, labelled.shape={labelled.shape}")
    if not (0.0 <= ground_value <= 1.0 and ground_weight > 0):
        raise ValueError("Expected 0 <= ground_value <= 1 and ground_weight > 0. Received: "
                         f"ground_value={ground_value}, ground_weight={ground_weight}")
    unlabelled = np.setdiff1d(np.arange(weights.shape[0]), labelled)
    degree = weights.sum(axis=1)
    gamma = ground_weight * max(float(degree.mean()), np.finfo(np.float64).tiny)
    laplacian_uu = (np.diag(degree[unlabelled] + gamma)
                    - weights[np.ix_(unlabelled, unlabelled)])
    green = np.linalg.inv(laplacian_uu)
    f_u = green @ (weights[np.ix_(unlabelled, labelled)] @ labels + gamma * ground_value)
    return unlabelled, np.clip(f_u, 0.0, 1.0), green


def harmonic_update(unlabelled, f_u, green, nodes, labels):
    """Label more nodes of a harmonic solution without solving again (block Schur complement).

    With ``G = green``, ``U`` the unlabelled nodes and ``S`` the newly labelled ones
    (``U' = U \\ S``): ``G' = G_U'U' - G_U'S G_SS^{-1} G_SU'`` is the inverse of the
    ``U'`` block, and ``f'_U' = f_U' + G_U'S G_SS^{-1} (y_S - f_S)``; the same system as
    :func:`harmonic_solution` with ``S`` labelled, in ``O(u^2 |S|)`` instead of ``O(u^3)``.

    Args:
        unlabelled, f_u, green: a ``harmonic_solution`` (or earlier update) result.
        nodes: ``[s]`` distinct node indices among ``unlabelled`` to label now.
        labels: ``[s]`` their labels in {0, 1}.

    Returns:
        ``(unlabelled', f_u', green')`` as ``harmonic_solution`` returns them.
    """
    nodes = np.asarray(nodes, dtype=np.int64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    if nodes.shape != labels.shape or not np.all((labels == 0) | (labels == 1)):
        raise ValueError("Expected labels in {0, 1} with the shape of nodes. Received: "
                         f"labels={labels}, nodes.shape={nodes.shape}")
    position = np.searchsorted(unlabelled, nodes)
    if (np.unique(nodes).size != nodes.size or np.any(position >= len(unlabelled))
            or np.any(unlabelled[np.minimum(position, len(unlabelled) - 1)] != nodes)):
        raise ValueError("Expected distinct nodes among the unlabelled ones. Received: "
                         f"nodes={nodes.tolist()}")
    keep = np.setdiff1d(np.arange(len(unlabelled)), position)
    coupling = green[np.ix_(keep, position)] @ np.linalg.inv(green[np.ix_(position, position)])
    f_new = f_u[keep] + coupling @ (labels - f_u[position])
    green_new = green[np.ix_(keep, keep)] - coupling @ green[np.ix_(position, keep)]
    return unlabelled[keep], np.clip(f_new, 0.0, 1.0), green_new


def class_mass_normalized(f_u, prior):
    """Class mass normalisation of a harmonic solution (Zhu, Ghahramani & Lafferty 2003).

    Thresholding ``f_u`` at 0.5 labels almost every node alike when the few labelled nodes
    sit far from most of the graph; CMN instead predicts class 1 for node i iff
    ``prior * f_i / sum(f) > (1 - prior) * (1 - f_i) / sum(1 - f)``.

    Args:
        f_u: ``[u]`` harmonic P(y = 1) of the unlabelled nodes.
        prior: P(y = 1), e.g. the labelled nodes' class-1 fraction, in (0, 1).

    Returns:
        ``[u]`` bool predictions (True = class 1).
    """
    f_u = np.asarray(f_u, dtype=np.float64)
    if not 0.0 < prior < 1.0:
        raise ValueError(f"Expected 0 < prior < 1. Received: prior={prior}")
    mass_1, mass_0 = max(f_u.sum(), 1e-300), max((1.0 - f_u).sum(), 1e-300)
    return prior * f_u / mass_1 > (1.0 - prior) * (1.0 - f_u) / mass_0


def mbr_expected_risk(weights, labelled, labels, candidates, ground_value=0.5, solution=None):
    """Expected estimated risk after querying each candidate (Zhu et al. 2003, eq. 10).

    Querying node k with answer y updates ``f+ = f + (y - f_k) G[:, k] / G[k, k]``;
    the risk is ``R(f) = sum_i min(f_i, 1 - f_i)`` over unlabelled nodes and the
    expectation is ``(1 - f_k) R(f+^{y=0}) + f_k R(f+^{y=1})``. MBR queries the lowest.

    Args:
        weights, labelled, labels, ground_value: as ``harmonic_solution``.
        candidates: ``[m]`` unlabelled node indices to evaluate.
        solution: the ``(unlabelled, f_u, green)`` of these labels if already computed
            (``harmonic_solution`` / ``harmonic_update``), else None.

    Returns:
        ``float64 [m]`` expected risks (expected number of errors; lower is better).
    """
    if solution is None:
        solution = harmonic_solution(weights, labelled, labels, ground_value)
    unlabelled, f_u, green = solution
    position = {int(node): i for i, node in enumerate(unlabelled)}
    try:
        cols = np.array([position[int(c)] for c in np.asarray(candidates).ravel()], np.int64)
    except KeyError as missing:
        raise ValueError(f"Expected candidates among unlabelled nodes. Received: {missing}")
    step = green[:, cols] / np.diag(green)[cols][None, :]  # [u, m]
    f_k = f_u[cols]

    def risk(f):
        f = np.clip(f, 0.0, 1.0)
        return np.minimum(f, 1.0 - f).sum(axis=0)

    risk0 = risk(f_u[:, None] - f_k[None, :] * step)
    risk1 = risk(f_u[:, None] + (1.0 - f_k)[None, :] * step)
    return (1.0 - f_k) * risk0 + f_k * risk1
