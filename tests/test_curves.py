"""ddu_tf.active_learning.first_reaching on hand-computed curves."""
import numpy as np
import pytest

from ddu_tf.active_learning import first_reaching


def test_accuracy_curve_first_crossing_not_the_best_round():
    sizes = [20, 30, 40, 50]
    accuracy = [0.5, 0.91, 0.89, 0.96]
    assert first_reaching(sizes, accuracy, 0.9) == 30  # the later dip does not matter
    assert first_reaching(sizes, accuracy, 0.96) == 50  # equality reaches
    assert first_reaching(sizes, accuracy, 0.97) is None


def test_error_curve_and_nan_rounds():
    acquired = np.arange(0, 50, 10)
    error = [0.4, np.nan, 0.1, 0.12, 0.05]
    assert first_reaching(acquired, error, 0.10, higher_is_better=False) == 20
    assert first_reaching(acquired, error, 0.05, higher_is_better=False) == 40
    assert first_reaching(acquired, error, 0.01, higher_is_better=False) is None
    # a NaN round (diverged training) never counts as reaching, whichever direction
    assert first_reaching([0, 10], [np.nan, 0.0], 0.5, higher_is_better=False) == 10
    assert first_reaching([0, 10], [np.nan, 1.0], 0.5) == 10
    assert isinstance(first_reaching(acquired, error, 0.10, higher_is_better=False), int)


def test_mismatched_curve_is_rejected():
    with pytest.raises(ValueError, match="same length"):
        first_reaching([20, 30], [0.5, 0.6, 0.7], 0.9)
