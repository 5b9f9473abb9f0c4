"""Acquisition functions against hand-computed values and an independent NumPy oracle."""
import math

import numpy as np
import pytest

from ddu_tf.active_learning import acquisition as acq


def _numpy_oracle(probs):
    """Probability-space formulas of Gal et al. (2017), eqs. 2-5, with 0 log 0 = 0."""
    def ent(p):
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=-1)
    mean = probs.mean(axis=0)
    return {
        "max_entropy": ent(mean),
        "bald": ent(mean) - ent(probs).mean(axis=0),
        "var_ratios": 1.0 - mean.max(axis=-1),
        "mean_std": np.sqrt(np.maximum((probs ** 2).mean(0) - mean ** 2, 0.0)).mean(-1),
    }


def _log(p):
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(p, dtype=np.float64)).astype(np.float32)


def test_hand_computed_two_points():
    # point 0: two confident, disagreeing passes; point 1: two identical passes.
    probs = np.array([[[1.0, 0.0], [0.7, 0.3]],
                      [[0.0, 1.0], [0.7, 0.3]]])  # [T=2, B=2, C=2]
    log_probs = _log(probs)
    h1 = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    np.testing.assert_allclose(acq.max_entropy(log_probs), [math.log(2), h1], atol=1e-6)
    np.testing.assert_allclose(acq.bald(log_probs), [math.log(2), 0.0], atol=1e-6)
    np.testing.assert_allclose(acq.variation_ratios(log_probs), [0.5, 0.3], atol=1e-6)
    np.testing.assert_allclose(acq.mean_std(log_probs), [0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(np.exp(acq.log_mean_prob(log_probs)),
                               [[0.5, 0.5], [0.7, 0.3]], atol=1e-6)


@pytest.mark.parametrize("name", ["max_entropy", "bald", "var_ratios", "mean_std"])
def test_matches_numpy_oracle_and_bounds(name):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(5, 0.3), size=(7, 11))  # [T=7, B=11, C=5]
    probs[:, 0] = 0.0
    probs[:, 0, 2] = 1.0  # a point with exact zeros: log 0 = -inf must not give NaN
    scores = acq.get_acquisition(name)(_log(probs)).numpy()
    assert scores.shape == (11,)
    assert np.all(np.isfinite(scores))
    np.testing.assert_allclose(scores, _numpy_oracle(probs)[name], atol=2e-5)


def test_bald_nonnegative_and_entropy_bounded():
    rng = np.random.default_rng(1)
    log_probs = _log(rng.dirichlet(np.full(10, 0.1), size=(20, 50)))
    bald = acq.bald(log_probs).numpy()
    entropy = acq.max_entropy(log_probs).numpy()
    assert np.all(bald >= 0.0)
    assert np.all(entropy <= math.log(10) + 1e-6)
    assert np.all(bald <= entropy + 1e-6)
    same = np.repeat(log_probs[:1], 20, axis=0)  # identical passes: no disagreement
    np.testing.assert_allclose(acq.bald(same).numpy(), 0.0, atol=1e-6)


def test_stable_for_extreme_logits():
    logits = np.array([[[1000.0, -1000.0, 0.0]], [[-1000.0, 1000.0, 0.0]]], np.float32)
    log_probs = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)),
                                       -1, keepdims=True)) - logits.max(-1, keepdims=True)
    for name in acq.ACQUISITION_FUNCTIONS:
        assert np.all(np.isfinite(acq.get_acquisition(name)(log_probs).numpy()))
    np.testing.assert_allclose(acq.bald(log_probs), [math.log(2)], atol=1e-5)


def test_random_scores_seeded():
    log_probs = np.zeros((1, 6, 3), np.float32)
    a = acq.random_scores(log_probs, seed=(1, 2)).numpy()
    np.testing.assert_array_equal(a, acq.random_scores(log_probs, seed=(1, 2)).numpy())
    assert not np.array_equal(a, acq.random_scores(log_probs, seed=(1, 3)).numpy())
    assert np.all((a >= 0) & (a < 1))


def test_select_top_k_ties_and_duplicates():
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    np.testing.assert_array_equal(acq.select_top_k(scores, 3), [1, 3, 0])
    ids = np.array([7, 7, 4, 2, 9])  # id 7 twice: keep its best entry once
    np.testing.assert_array_equal(acq.select_top_k(scores, 3, candidate_ids=ids), [7, 2, 4])


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="log_probs"):
        acq.bald(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="name"):
        acq.get_acquisition("entropy")
    with pytest.raises(ValueError, match="k >= 1"):
        acq.select_top_k([1.0], 0)
    with pytest.raises(ValueError, match="finite"):
        acq.select_top_k([np.nan, 1.0], 1)


def test_harmonic_chain_hand_computed():
    # chain 0 - 1 - 2 - 3 with unit weights, f(0) = 1, f(3) = 0: f is linear, 2/3 and 1/3.
    weights = np.diag(np.ones(3), 1) + np.diag(np.ones(3), -1)
    unlabelled, f_u, _ = acq.harmonic_solution(weights, [0, 3], [1, 0])
    np.testing.assert_array_equal(unlabelled, [1, 2])
    np.testing.assert_allclose(f_u, [2 / 3, 1 / 3])


def test_mbr_rank_one_update_matches_resolving():
    rng = np.random.default_rng(2)
    weights = acq.rbf_graph(rng.normal(size=(12, 3)))
    labelled, labels = np.array([0, 5]), np.array([1, 0])
    candidates = np.array([1, 4, 9])
    risks = acq.mbr_expected_risk(weights, labelled, labels, candidates)
    unlabelled, f_u, _ = acq.harmonic_solution(weights, labelled, labels)
    for k, expected in zip(candidates, risks):
        f_k = f_u[list(unlabelled).index(k)]
        total = 0.0
        for y, prob in ((0, 1 - f_k), (1, f_k)):
            _, f_new, _ = acq.harmonic_solution(weights, np.r_[labelled, k], np.r_[labels, y])
            total += prob * np.minimum(f_new, 1 - f_new).sum()  # k itself has risk 0
        np.testing.assert_allclose(expected, total, rtol=1e-8, atol=1e-10)


def test_class_mass_normalization_hand_computed():
    # f = [0.6, 0.55, 0.7, 0.52]: thresholding at 0.5 calls all four class 1. CMN with prior
    # q compares q f_i / 2.37 with (1 - q)(1 - f_i) / 1.63; at q = 0.5 only 0.6 and 0.7 clear
    # it (0.1266 > 0.1227, 0.1477 > 0.0920; 0.1160 < 0.1380, 0.1097 < 0.1472).
    f = np.array([0.6, 0.55, 0.7, 0.52])
    np.testing.assert_array_equal(acq.class_mass_normalized(f, 0.5), [True, False, True, False])
    # A larger class-1 prior moves the boundary down: at q = 0.6 all four are class 1
    # (0.1392 > 0.1104, 0.1316 > 0.1178).
    np.testing.assert_array_equal(acq.class_mass_normalized(f, 0.6), [True] * 4)
    with pytest.raises(ValueError, match="prior"):
        acq.class_mass_normalized(f, 1.0)


def test_two_classes_max_entropy_and_var_ratios_rank_alike():
    # Both are increasing in min(p_bar, 1 - p_bar) for C = 2: the same order, the same batch.
    rng = np.random.default_rng(4)
    log_probs = _log(rng.dirichlet([0.5, 0.5], size=(6, 40)))
    entropy = acq.max_entropy(log_probs).numpy()
    ratios = acq.variation_ratios(log_probs).numpy()
    np.testing.assert_array_equal(np.argsort(entropy), np.argsort(ratios))
    three = _log(rng.dirichlet([0.5, 0.5, 0.5], size=(6, 40)))  # not so for C = 3
    assert not np.array_equal(np.argsort(acq.max_entropy(three).numpy()),
                              np.argsort(acq.variation_ratios(three).numpy()))


def test_knn_rbf_graph_matches_sklearn_neighbours():
    from sklearn.neighbors import kneighbors_graph

    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 6))
    sigma = 1.7
    weights = acq.rbf_graph(x, sigma=sigma, num_neighbors=4)
    distances = kneighbors_graph(x, 4, mode="distance", include_self=False).toarray()
    knn = np.where(distances > 0, np.exp(-distances ** 2 / sigma ** 2), 0.0)
    np.testing.assert_allclose(weights, np.maximum(knn, knn.T), rtol=1e-10, atol=1e-12)
    dense = acq.rbf_graph(x, sigma=sigma)
    np.testing.assert_allclose(np.diag(dense), 0.0)
    assert np.count_nonzero(dense) == 40 * 39
    with pytest.raises(ValueError, match="num_neighbors"):
        acq.rbf_graph(x, num_neighbors=40)


def _two_moons_graph(num_neighbors=6):
    from scipy.sparse.csgraph import connected_components
    from sklearn.datasets import make_moons

    x, y = make_moons(80, noise=0.08, random_state=0)
    weights = acq.rbf_graph(x, num_neighbors=num_neighbors)
    assert connected_components(weights > 0, directed=False)[0] == 1
    return x, y, weights


def test_knn_harmonic_solution_matches_sklearn_label_propagation():
    # sklearn's LabelPropagation iterates f <- D^-1 W f with the labels clamped: its fixed
    # point is the harmonic function of the same graph (an independent, iterative oracle).
    from sklearn.semi_supervised import LabelPropagation

    x, y, weights = _two_moons_graph()
    labelled = np.r_[np.flatnonzero(y == 0)[:3], np.flatnonzero(y == 1)[:3]]
    targets = np.full(len(y), -1)
    targets[labelled] = y[labelled]
    oracle = LabelPropagation(kernel=lambda a, b: weights, max_iter=200_000, tol=1e-12)
    oracle.fit(x, targets)
    unlabelled, f_u, _ = acq.harmonic_solution(weights, labelled, y[labelled])
    np.testing.assert_allclose(f_u, oracle.label_distributions_[unlabelled, 1], atol=1e-6)
    # The kNN graph follows the moons: thresholding alone labels nearly all points right.
    assert np.mean((f_u > 0.5) == y[unlabelled]) > 0.95


def test_harmonic_solution_grounds_components_without_labels():
    _, y, weights = _two_moons_graph()
    island = np.zeros((3, 3)) + 0.5 - 0.5 * np.eye(3)  # a 3-node component, no labels
    full = np.block([[weights, np.zeros((80, 3))], [np.zeros((3, 80)), island]])
    labelled = np.r_[np.flatnonzero(y == 0)[:2], np.flatnonzero(y == 1)[:2]]
    unlabelled, f_u, _ = acq.harmonic_solution(full, labelled, y[labelled], ground_value=0.3)
    assert np.all(np.isfinite(f_u))
    np.testing.assert_allclose(f_u[-3:], 0.3, atol=1e-12)
    _, alone, _ = acq.harmonic_solution(weights, labelled, y[labelled])
    np.testing.assert_allclose(f_u[:-3], alone, atol=1e-6)


def test_harmonic_update_equals_solving_again():
    _, y, weights = _two_moons_graph()
    labelled = np.array([0, 7])
    solution = acq.harmonic_solution(weights, labelled, y[labelled])
    new = np.array([30, 3, 55])
    updated = acq.harmonic_update(*solution, new, y[new])
    resolved = acq.harmonic_solution(weights, np.r_[labelled, new], y[np.r_[labelled, new]])
    np.testing.assert_array_equal(updated[0], resolved[0])
    np.testing.assert_allclose(updated[1], resolved[1], atol=1e-9)
    np.testing.assert_allclose(updated[2], resolved[2], rtol=1e-7, atol=1e-9)
    candidates = updated[0][:5]
    np.testing.assert_allclose(
        acq.mbr_expected_risk(weights, np.r_[labelled, new], y[np.r_[labelled, new]],
                              candidates, solution=updated),
        acq.mbr_expected_risk(weights, np.r_[labelled, new], y[np.r_[labelled, new]],
                              candidates), rtol=1e-7)
    with pytest.raises(ValueError, match="unlabelled"):
        acq.harmonic_update(*solution, [0], [1])
