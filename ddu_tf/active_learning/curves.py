"""Summaries of active-learning curves: where a test metric first reaches a threshold.

Gal, Islam & Ghahramani (2017, Table 1) report the number of acquired images at which the
test error first falls to 10% / 5%; Kirsch, van Amersfoort & Gal (2019, Table 1) the
training-set size at which test accuracy first reaches 90% / 95%. Both are
:func:`first_reaching` of one run's curve; statistics over runs are taken afterwards.
"""
import numpy as np

__all__ = ["first_reaching", "mean_std_over_runs"]


def first_reaching(sizes, values, threshold, *, higher_is_better=True):
    """The first size at which ``values`` reaches ``threshold``.

    Args:
        sizes: ``[rounds]`` training-set sizes or acquired-image counts, in round order.
        values: ``[rounds]`` the metric after each round (accuracy or error, as a fraction).
        threshold: the level to reach, in the units of ``values``.
        higher_is_better: True for accuracy (reached when ``value >= threshold``), False
            for error (reached when ``value <= threshold``). A NaN value never reaches.

    Returns:
        ``sizes[i]`` of the first round ``i`` that reaches ``threshold`` (as a Python
        number), or None if no round does.

    Raises:
        ValueError: ``sizes`` and ``values`` are not 1-D of the same length.
    """
    sizes = np.asarray(sizes)
    values = np.asarray(values, np.float64)
    if sizes.ndim != 1 or values.shape != sizes.shape:
        raise ValueError(
            "Expected sizes and values as two 1-D sequences of the same length. Received: "
            f"shapes {sizes.shape} and {values.shape}.")
    reached = values >= threshold if higher_is_better else values <= threshold
    hits = np.flatnonzero(reached)
    return sizes[hits[0]].item() if hits.size else None


def mean_std_over_runs(values):
    """Mean and sample standard deviation (ddof 1) of one statistic over runs (seeds).

    Args:
        values: one number per run, None for a run that never reached the level
            (:func:`first_reaching`).

    Returns:
        ``(mean, std)`` as floats; ``std`` is None for a single run; ``(None, None)`` when
        ``values`` is empty or holds a None (the mean of the reached runs alone would be
        biased early).
    """
    if not len(values) or any(v is None for v in values):
        return None, None
    values = np.asarray(values, np.float64)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)
