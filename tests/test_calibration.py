"""Temperature scaling: continuous optimum never worse than the original's grid."""
import numpy as np
import pytest
from scipy import special

from ddu_tf import calibration as C


def _grid_best_nll(logits, labels):
    """The original's search: T = 0.1, 0.2, ..., 10.0 (accumulated as in the original)."""
    best, t = np.inf, 0.1
    for _ in range(100):
        best = min(best, C.nll(logits, labels, t))
        t += 0.1
    return best


@pytest.mark.parametrize("scale,seed", [(8.0, 0), (0.3, 1), (40.0, 2)])
def test_fit_temperature_no_worse_than_grid(scale, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, size=400)
    logits = rng.normal(size=(400, 5)) + 2.0 * np.eye(5)[labels]
    logits *= scale  # over- (large scale) or under-confident (small scale) logits
    t = C.fit_temperature(logits, labels)
    assert 0.1 <= t <= 10.0
    assert C.nll(logits, labels, t) <= _grid_best_nll(logits, labels) + 1e-12


def test_nll_hand_computed():
    logits = np.array([[0.0, 0.0], [2.0, 0.0]])
    labels = np.array([0, 1])
    # row 1: log 2; row 2 at T=2: logits (1, 0) -> -log(1 / (1 + e)) = log(1 + e).
    expected = 0.5 * (np.log(2.0) + special.logsumexp([1.0, 0.0]))
    assert C.nll(logits, labels, 2.0) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(C.apply_temperature(logits, 2.0), logits / 2.0)


def test_errors():
    with pytest.raises(ValueError, match="labels in"):
        C.fit_temperature(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="temperature > 0"):
        C.nll(np.zeros((1, 2)), np.array([0]), 0.0)
