"""BatchBALD and stochastic batch acquisition against independent NumPy / SciPy oracles."""
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from ddu_tf.active_learning import (BATCH_ACQUISITION_FUNCTIONS, batchbald, get_acquisition,
                                    get_batch_acquisition, joint_entropy, select_top_k,
                                    selection_scores, stochastic_batch,
                                    stochastic_probabilities)


def random_log_probs(k, n, c, seed, sharpness=3.0):
    logits = np.random.default_rng(seed).normal(scale=sharpness, size=(k, n, c))
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def brute_joint_entropy(probs_knc, points):
    """``H(y_points)`` from the full ``[K, C, ..., C]`` table of ``prod_i p_k(y_i)`` (NumPy)."""
    table = np.ones(probs_knc.shape[:1])
    for i in points:
        table = table[..., None] * probs_knc[:, i].reshape(
            (probs_knc.shape[0],) + (1,) * (table.ndim - 1) + (-1,))
    p = table.mean(0).ravel()
    return -np.sum(p[p > 0] * np.log(p[p > 0]))


def test_brute_force_oracle_enumerates_configurations():
    probs = np.exp(random_log_probs(3, 2, 3, seed=9))
    p = [np.mean(probs[:, 0, a] * probs[:, 1, b]) for a in range(3) for b in range(3)]
    assert brute_joint_entropy(probs, [0, 1]) == pytest.approx(-sum(x * np.log(x) for x in p))


def brute_batch_mi(probs_knc, points):
    """``I(y_points; w) = H(y_points) - sum_i mean_k H(p_k(y_i))``."""
    p = probs_knc[:, list(points)]
    conditional = -np.sum(p * np.log(p), axis=-1).mean(0).sum()
    return brute_joint_entropy(probs_knc, points) - conditional


def brute_greedy(probs_knc, batch_size):
    chosen, gains = [], []
    for _ in range(batch_size):
        values = {x: brute_batch_mi(probs_knc, chosen + [x])
                  for x in range(probs_knc.shape[1]) if x not in chosen}
        best = max(values, key=values.get)
        chosen.append(best)
        gains.append(values[best])
    return chosen, gains


def test_joint_entropy_matches_enumeration():
    log_probs = random_log_probs(7, 3, 4, seed=0)
    expected = brute_joint_entropy(np.exp(log_probs), [0, 1, 2])
    np.testing.assert_allclose(joint_entropy(log_probs).numpy(), expected, rtol=1e-10)


def test_batch_of_one_is_bald():
    log_probs = random_log_probs(20, 50, 10, seed=1)
    bald = get_acquisition("bald")(log_probs).numpy()
    positions, gains = batchbald(log_probs, 1)
    assert positions.tolist() == [int(np.argmax(bald))]
    np.testing.assert_allclose(gains[0], bald.max(), rtol=1e-9)


def test_exact_greedy_matches_brute_force():
    log_probs = random_log_probs(8, 7, 3, seed=2)
    positions, gains = batchbald(log_probs, 4, num_configurations=27)  # all steps exact
    expected_positions, expected_gains = brute_greedy(np.exp(log_probs), 4)
    assert positions.tolist() == expected_positions
    np.testing.assert_allclose(gains, expected_gains, rtol=1e-9)


def test_sampled_joint_entropy_close_to_exact():
    log_probs = random_log_probs(16, 6, 10, seed=3, sharpness=1.5)
    # 10^step <= 2000 for steps 0..3 (exact); step 4 uses 2000 sampled configurations
    positions, gains = batchbald(log_probs, 5, num_configurations=2000, seed=7)
    exact = brute_batch_mi(np.exp(log_probs), positions.tolist())
    assert gains[4] == pytest.approx(exact, abs=0.05)
    assert gains[3] == pytest.approx(brute_batch_mi(np.exp(log_probs), positions[:4].tolist()),
                                     rel=1e-9)
    again = batchbald(log_probs, 5, num_configurations=2000, seed=7)
    np.testing.assert_array_equal(again[0], positions)
    np.testing.assert_array_equal(again[1], gains)


def test_float32_agrees_with_float64():
    log_probs = random_log_probs(30, 200, 10, seed=4)
    p64, g64 = batchbald(log_probs, 5, num_configurations=500, seed=1)
    p32, g32 = batchbald(log_probs, 5, num_configurations=500, seed=1, dtype=tf.float32)
    assert p32.tolist() == p64.tolist()
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5)


def test_small_memory_budget_gives_the_same_batch():
    log_probs = random_log_probs(10, 60, 5, seed=5)
    big = batchbald(log_probs, 3, num_configurations=25)
    small = batchbald(log_probs, 3, num_configurations=25, memory_budget_mb=0)  # chunk 1
    np.testing.assert_array_equal(big[0], small[0])
    np.testing.assert_allclose(big[1], small[1], rtol=1e-12)


def test_batchbald_skips_a_duplicate_that_top_k_takes():
    # K = 4 weight samples; A separates {0, 1} from {2, 3}, B separates {0, 2} from {1, 3}
    # slightly less sharply. Pool = [A, A, B].
    a = np.array([[.99, .01], [.99, .01], [.01, .99], [.01, .99]])
    b = np.array([[.97, .03], [.03, .97], [.97, .03], [.03, .97]])
    log_probs = np.log(np.stack([a, a, b], axis=1))  # [4, 3, 2]
    bald = get_acquisition("bald")(log_probs).numpy()
    assert select_top_k(bald, 2).tolist() == [0, 1]
    assert batchbald(log_probs, 2)[0].tolist() == [0, 2]


def draw_counts(scores, batch_size, mode, beta, draws):
    counts = {}
    for s in range(draws):
        key = tuple(stochastic_batch(scores, batch_size, mode=mode, beta=beta, seed=(11, s)))
        counts[key] = counts.get(key, 0) + 1
    return counts


def oracle_probabilities(scores, mode, beta):
    if mode == "power":
        w = scores ** beta
    elif mode == "softmax":
        w = np.exp(beta * scores)
    else:
        w = (stats.rankdata(-scores, method="ordinal")) ** -beta
    return w / w.sum()


@pytest.mark.parametrize("mode,beta", [("power", 1.0), ("softmax", 2.0), ("softrank", 1.0)])
def test_stochastic_first_draw_frequencies(mode, beta):
    scores = np.array([0.05, 0.4, 0.1, 0.9, 0.25, 0.6])
    p = oracle_probabilities(scores, mode, beta)
    np.testing.assert_allclose(stochastic_probabilities(scores, mode, beta), p, rtol=1e-12)
    counts = draw_counts(scores, 1, mode, beta, 2000)
    observed = np.array([counts.get((i,), 0) for i in range(scores.size)])
    assert stats.chisquare(observed, 2000 * p).pvalue > 1e-3


def test_stochastic_pairs_are_successive_draws_without_replacement():
    scores = np.array([0.2, 0.5, 0.1, 0.7])
    p = oracle_probabilities(scores, "power", 1.0)
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    expected = np.array([p[i] * p[j] / (1 - p[i]) for i, j in pairs])
    counts = draw_counts(scores, 2, "power", 1.0, 3000)
    assert set(counts) <= set(pairs)
    observed = np.array([counts.get(pair, 0) for pair in pairs])
    assert stats.chisquare(observed, 3000 * expected).pvalue > 1e-3


def test_stochastic_batch_limits():
    assert stochastic_batch([1.0, 2.0, 3.0], 3, beta=0.0, seed=0).tolist() != []
    np.testing.assert_allclose(stochastic_probabilities([1.0, 2.0, 3.0], "power", 0.0), 1 / 3)
    # a large beta is the top-k
    assert stochastic_batch([0.1, 0.9, 0.5], 2, mode="softmax", beta=1e4).tolist() == [1, 2]
    # zero scores are never drawn by power sampling
    assert sorted(stochastic_batch([0.0, 0.3, 0.0, 0.2], 2, seed=3).tolist()) == [1, 3]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="non-negative"):
        stochastic_batch([0.5, -0.1], 1)
    with pytest.raises(ValueError, match="batch_size"):
        stochastic_batch([0.0, 0.3], 2)
    with pytest.raises(ValueError, match="mode"):
        stochastic_batch([0.5], 1, mode="gibbs")
    with pytest.raises(ValueError, match="finite"):
        stochastic_batch([np.nan, 1.0], 1)
    with pytest.raises(ValueError, match="batch_size"):
        batchbald(random_log_probs(3, 4, 2, seed=0), 5)
    with pytest.raises(ValueError, match="finite"):
        batchbald(np.full((3, 4, 2), np.nan), 1)
    with pytest.raises(ValueError, match="get_batch_acquisition"):
        get_acquisition("batchbald")
    with pytest.raises(ValueError, match="Unknown batch acquisition"):
        get_batch_acquisition("bald")


def test_selection_scores_round_trip_through_top_k():
    scores = selection_scores([5, 2, 7], 9)
    assert select_top_k(scores, 3).tolist() == [5, 2, 7]
    with pytest.raises(ValueError, match="distinct"):
        selection_scores([1, 1], 3)


@pytest.mark.parametrize("name", sorted(BATCH_ACQUISITION_FUNCTIONS))
def test_registry_returns_distinct_pool_positions(name):
    log_probs = random_log_probs(10, 40, 10, seed=6)
    positions = get_batch_acquisition(name)(log_probs, 5, seed=3)
    assert positions.dtype == np.int64 and positions.shape == (5,)
    assert len(set(positions.tolist())) == 5 and 0 <= positions.min() and positions.max() < 40
