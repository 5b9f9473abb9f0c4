"""Index bookkeeping of pool-based active learning, as one JSON-serialisable state.

Indices refer to the caller's arrays: ``labelled``, ``pool`` and ``validation`` index the
training split (disjoint), ``test`` indexes the test split. Every random draw is
stateless: a fresh ``numpy.random.Generator`` keyed on ``(seed, purpose[, round])``, so
the same seed gives the same split, initial set and per-round pool subsets whether a
run is fresh or resumed.

Gal et al. (2017) use 20 class-balanced initial points, 100 validation points, the 10k
test set, the rest as pool, and score a random 2000-point pool subset each round.
"""
import dataclasses
import json

import numpy as np

from ddu_tf.io.atomic import atomic_write_text

_SPLIT, _SUBSET = 0, 1


def _rng(*key):
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


@dataclasses.dataclass
class PoolState:
    """Labelled / pool / validation / test indices (lists of ints) and the seed.

    ``labelled`` keeps acquisition order (initial points first).
    """

    labelled: list
    pool: list
    validation: list
    test: list
    seed: int = 0

    def __post_init__(self):
        self.labelled = [int(i) for i in self.labelled]
        self.pool = [int(i) for i in self.pool]
        self.validation = [int(i) for i in self.validation]
        self.test = [int(i) for i in self.test]
        train_sets = [set(self.labelled), set(self.pool), set(self.validation)]
        sizes = [len(self.labelled), len(self.pool), len(self.validation)]
        if [len(s) for s in train_sets] != sizes:
            raise ValueError("Expected no repeated index within labelled, pool or validation. "
                             f"Received: sizes {sizes} but distinct {[len(s) for s in train_sets]}.")
        if (train_sets[0] & train_sets[1]) or (train_sets[0] & train_sets[2]) or (
                train_sets[1] & train_sets[2]):
            raise ValueError("Expected disjoint labelled, pool and validation indices. "
                             "Received: overlapping sets.")

    def acquire(self, indices):
        """Move ``indices`` (pool indices, no repeats) from the pool to the labelled set."""
        indices = [int(i) for i in np.asarray(indices).ravel()]
        if len(set(indices)) != len(indices):
            raise ValueError(f"Expected distinct indices to acquire. Received: indices={indices}")
        pool = set(self.pool)
        missing = [i for i in indices if i not in pool]
        if missing:
            raise ValueError(f"Expected indices in the pool. Received: {missing} not in the pool.")
        chosen = set(indices)
        self.pool = [i for i in self.pool if i not in chosen]
        self.labelled = self.labelled + indices

    def pool_subset(self, round_index, size):
        """A random subset of the pool for one round, ``int64 [min(size, len(pool))]``.

        Stateless: depends only on ``(seed, round_index)`` and the current pool.
        ``size=None`` returns the whole pool.
        """
        pool = np.asarray(self.pool, dtype=np.int64)
        if size is None or int(size) >= pool.size:
            return pool
        if int(size) < 1:
            raise ValueError(f"Expected pool subset size >= 1 or None. Received: size={size}")
        choice = _rng(self.seed, _SUBSET, round_index).choice(pool.size, int(size), replace=False)
        return pool[np.sort(choice)]

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        return cls(**data)

    def to_json(self):
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def save(self, path):
        """Write the state as JSON atomically."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as handle:
            return cls.from_json(handle.read())


def initial_state(train_labels, *, num_initial=20, num_validation=100, num_test=None,
                  test_size=0, seed=0, balanced=True, pool_size=None):
    """Split the training indices into initial labelled, validation and pool sets.

    Args:
        train_labels: ``[N]`` int class labels of the training split.
        num_initial: initial labelled points; with ``balanced`` split evenly over the
            classes present (any remainder goes to randomly chosen classes).
        num_validation: validation points drawn uniformly from the rest.
        num_test: test points kept (``None`` = all ``test_size``), drawn uniformly.
        test_size: number of test examples (indices ``0..test_size-1``).
        seed: int, the stateless seed of every draw.
        balanced: class-balanced initial set (True) or uniform.
        pool_size: keep only this many pool points (``None`` = all the rest).

    Returns:
        ``PoolState``.
    """
    labels = np.asarray(train_labels).ravel()
    if int(num_initial) < 1 or int(num_validation) < 0:
        raise ValueError("Expected num_initial >= 1 and num_validation >= 0. Received: "
                         f"num_initial={num_initial}, num_validation={num_validation}")
    if int(num_initial) + int(num_validation) > labels.size:
        raise ValueError(f"Expected num_initial + num_validation <= {labels.size} (train size). "
                         f"Received: {num_initial} + {num_validation}.")
    rng = _rng(seed, _SPLIT)
    if balanced:
        classes = np.unique(labels)
        per_class = np.full(classes.size, int(num_initial) // classes.size)
        per_class[rng.permutation(classes.size)[:int(num_initial) % classes.size]] += 1
        initial = []
        for cls, count in zip(classes, per_class):
            members = np.flatnonzero(labels == cls)
            if members.size < count:
                raise ValueError(f"Expected >= {count} examples of class {cls} for a balanced "
                                 f"initial set. Received: {members.size}.")
            initial.extend(rng.choice(members, count, replace=False).tolist())
        initial = np.asarray(initial)[rng.permutation(len(initial))]
    else:
        initial = rng.choice(labels.size, int(num_initial), replace=False)
    rest = np.setdiff1d(np.arange(labels.size), initial)
    rest = rest[rng.permutation(rest.size)]
    validation = np.sort(rest[:int(num_validation)])
    pool = rest[int(num_validation):]
    if pool_size is not None:
        pool = pool[:int(pool_size)]
    test = np.arange(int(test_size))
    if num_test is not None and int(num_test) < test.size:
        test = np.sort(rng.choice(test.size, int(num_test), replace=False))
    return PoolState(labelled=initial.tolist(), pool=np.sort(pool).tolist(),
                     validation=validation.tolist(), test=test.tolist(), seed=int(seed))
