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


def _oracle(probs):
    """Probability-space PE, expected entropy and MI of ``[S, batch, classes]``."""
    def ent(p):
        return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
    pe = ent(probs.mean(0))
    expected = ent(probs).mean(0)
    return pe, expected, pe - expected


def test_sample_functions_match_probability_space_oracle():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=2.0, size=(7, 5, 4))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    log_probs = np.log(probs)
    pe, expected, mi = _oracle(probs)
    np.testing.assert_allclose(np.exp(U.log_mean_prob(log_probs).numpy()), probs.mean(0),
                               rtol=1e-12)
    np.testing.assert_allclose(U.predictive_entropy(log_probs).numpy(), pe, rtol=1e-12)
    np.testing.assert_allclose(U.expected_entropy(log_probs).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(U.mutual_information(log_probs).numpy(), mi, rtol=1e-9,
                               atol=1e-14)
    np.testing.assert_allclose(U.entropy_from_log_probs(log_probs, axis=-1).numpy(),
                               -(probs * log_probs).sum(-1), rtol=1e-12)
    with pytest.raises(ValueError, match="log_probs"):
        U.predictive_entropy(log_probs[0])


def test_ensemble_functions_take_logits_or_log_probs():
    # The Ambiguous-MNIST generator scores its LeNet ensemble from log-probabilities: the
    # ensemble functions must give the same values for logits and for their log-softmax.
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3.0, size=(5, 9, 10))
    log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    for fn in (U.ensemble_predictive_entropy, U.ensemble_expected_entropy,
               U.ensemble_mutual_information, U.ensemble_log_mean_probs):
        np.testing.assert_allclose(fn(log_probs).numpy(), fn(logits).numpy(), rtol=1e-12,
                                   atol=1e-14, err_msg=fn.__name__)
    pe, _, mi = _oracle(np.exp(log_probs))
    np.testing.assert_allclose(U.ensemble_predictive_entropy(log_probs).numpy(), pe, rtol=1e-12)
    np.testing.assert_allclose(U.ensemble_mutual_information(log_probs).numpy(), mi, rtol=1e-9,
                               atol=1e-14)
