"""ddu_tf.uncertainty against hand-computed values."""
import numpy as np
import pytest

from ddu_tf import uncertainty as U

LOG2, LOG3 = np.log(2.0), np.log(3.0)


def test_softmax_entropy_hand_computed():
    logits = np.array([[0.0, 0.0, 0.0], [1e4, 0.0, -1e4], [0.0, 0.0, -np.inf], [np.log(3.0), 0.0, -1e30]])
    # uniform: log 3; one-hot: 0; two equal + impossible: log 2; p = (3/4, 1/4, 0).
    expected = [LOG3, 0.0, LOG2, -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))]
    out = U.softmax_entropy(logits).numpy()
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-300)


def test_logsumexp_energy_and_confidence():
    logits = np.array([[0.0, 0.0], [1e4, 1e4], [2.0, -np.inf]], dtype=np.float32)
    np.testing.assert_allclose(U.logsumexp(logits).numpy(), [LOG2, 1e4 + LOG2, 2.0], rtol=1e-6)
    np.testing.assert_allclose(U.energy(logits).numpy(), [-LOG2, -(1e4 + LOG2), -2.0], rtol=1e-6)
    # T = 2: -2 logsumexp(l / 2) = -2 (0 + log 2) for the first row.
    np.testing.assert_allclose(U.energy(logits[:1], temperature=2.0).numpy(), [-2 * LOG2], rtol=1e-6)
    np.testing.assert_allclose(U.max_softmax_probability(logits).numpy(), [0.5, 0.5, 1.0])
    with pytest.raises(ValueError, match="temperature"):
        U.energy(logits, temperature=0.0)


def test_ensemble_pe_and_mi_hand_computed():
    # Two confident members that disagree: PE = log 2, each member entropy 0, MI = log 2.
    # Two identical uniform members: PE = log 2, MI = 0.
    members = np.array(
        [
            [[1e4, -1e4], [0.0, 0.0]],
            [[-1e4, 1e4], [0.0, 0.0]],
        ]
    )
    np.testing.assert_allclose(U.ensemble_predictive_entropy(members).numpy(), [LOG2, LOG2],
                               rtol=1e-12)
    np.testing.assert_allclose(U.ensemble_expected_entropy(members).numpy(), [0.0, LOG2],
                               atol=1e-12)
    np.testing.assert_allclose(U.ensemble_mutual_information(members).numpy(), [LOG2, 0.0],
                               atol=1e-12)
    np.testing.assert_allclose(np.exp(U.ensemble_log_mean_probs(members).numpy()),
                               [[0.5, 0.5], [0.5, 0.5]], rtol=1e-12)


def test_ensemble_matches_direct_formula_on_random_logits():
    rng = np.random.default_rng(0)
    members = rng.normal(scale=3.0, size=(5, 8, 4))
    p = np.exp(members) / np.exp(members).sum(-1, keepdims=True)
    pbar = p.mean(0)
    pe = -(pbar * np.log(pbar)).sum(-1)
    mi = pe - (-(p * np.log(p)).sum(-1)).mean(0)
    np.testing.assert_allclose(U.ensemble_predictive_entropy(members).numpy(), pe, rtol=1e-10)
    np.testing.assert_allclose(U.ensemble_mutual_information(members).numpy(), mi, rtol=1e-9)


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="logits"):
        U.softmax_entropy(np.zeros(3))
    with pytest.raises(ValueError, match="member_logits"):
        U.ensemble_mutual_information(np.zeros((2, 3)))
