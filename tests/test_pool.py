"""Pool bookkeeping: balanced initial set, disjoint splits, seeded subsets, JSON round trip."""
import numpy as np
import pytest

from ddu_tf.active_learning.pool import PoolState, initial_state


def _labels(n=600, classes=10):
    return np.arange(n) % classes


def test_initial_split_is_balanced_disjoint_and_seeded(tmp_path):
    labels = _labels()
    state = initial_state(labels, num_initial=20, num_validation=100, test_size=50,
                          num_test=30, seed=3)
    assert np.bincount(labels[state.labelled], minlength=10).tolist() == [2] * 10
    assert len(state.validation) == 100 and len(state.test) == 30
    everything = state.labelled + state.pool + state.validation
    assert sorted(everything) == list(range(600))
    again = initial_state(labels, num_initial=20, num_validation=100, test_size=50,
                          num_test=30, seed=3)
    assert again == state
    assert initial_state(labels, seed=4).labelled != state.labelled
    path = tmp_path / "state.json"
    state.save(path)
    assert PoolState.load(path) == state


def test_uneven_initial_counts_and_pool_size():
    state = initial_state(_labels(), num_initial=13, num_validation=5, pool_size=40, seed=0)
    counts = np.bincount(_labels()[state.labelled], minlength=10)
    assert counts.sum() == 13 and counts.max() - counts.min() == 1
    assert len(state.pool) == 40


def test_pool_subset_is_stateless_and_acquire_moves_indices():
    state = initial_state(_labels(), num_initial=10, num_validation=10, seed=1)
    a = state.pool_subset(round_index=2, size=25)
    np.testing.assert_array_equal(a, state.pool_subset(2, 25))
    assert not np.array_equal(a, state.pool_subset(3, 25))
    assert len(set(a.tolist())) == 25 and set(a.tolist()) <= set(state.pool)
    np.testing.assert_array_equal(state.pool_subset(0, None), state.pool)
    state.acquire(a[:4])
    assert state.labelled[-4:] == a[:4].tolist()
    assert not set(a[:4].tolist()) & set(state.pool)


def test_errors_name_the_argument():
    state = initial_state(_labels(), num_initial=10, num_validation=10, seed=1)
    with pytest.raises(ValueError, match="in the pool"):
        state.acquire([state.labelled[0]])
    with pytest.raises(ValueError, match="distinct"):
        state.acquire([state.pool[0], state.pool[0]])
    with pytest.raises(ValueError, match="disjoint"):
        PoolState(labelled=[1], pool=[1], validation=[], test=[])
    with pytest.raises(ValueError, match="num_initial"):
        initial_state(_labels(), num_initial=0)
