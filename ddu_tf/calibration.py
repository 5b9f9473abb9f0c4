"""Temperature scaling (Guo et al. 2017): one scalar ``T`` with ``p = softmax(logits / T)``.

The original (``utils/temperature_scaling.py``) grid-searches ``T = 0.1, 0.2, ..., 10.0`` for the
lowest validation NLL. Here ``T`` minimises the same NLL continuously over the same range
``[0.1, 10]``: the NLL is convex in the inverse temperature ``beta = 1/T`` (a log-sum-exp of
functions linear in ``beta`` minus a linear term), so bounded Brent search on ``beta`` finds
the global minimum on the interval, which is never worse than the grid's best point (up to
the solver tolerance, 1e-10 in ``beta``; the end points are checked explicitly).
"""
from __future__ import annotations

import numpy as np
from scipy import optimize, special

#: Range of the original's temperature grid.
T_MIN, T_MAX = 0.1, 10.0


def _logits_labels(logits, labels):
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(f"Expected logits of shape [batch, classes]. Received: {logits.shape}.")
    if labels.shape != (logits.shape[0],):
        raise ValueError(
            f"Expected labels of shape [{logits.shape[0]}]. Received: labels.shape={labels.shape}."
        )
    if labels.size == 0:
        raise ValueError("Expected at least one validation sample. Received none.")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(
            f"Expected labels in [0, {logits.shape[1]}). Received labels in "
            f"[{labels.min()}, {labels.max()}]."
        )
    if not np.all(np.isfinite(logits)):
        raise ValueError("Expected finite logits. Received NaN/Inf entries.")
    return logits, labels


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats) of ``softmax(logits / T)``.

    Args:
      logits: ``[batch, classes]``; labels: ``[batch]``; temperature: ``T > 0``.
    """
    logits, labels = _logits_labels(logits, labels)
    if not temperature > 0:
        raise ValueError(f"Expected temperature > 0. Received: temperature={temperature!r}.")
    scaled = logits / temperature
    true = scaled[np.arange(labels.size), labels]
    return float(np.mean(special.logsumexp(scaled, axis=1) - true))


def fit_temperature(logits, labels, t_min: float = T_MIN, t_max: float = T_MAX) -> float:
    """Temperature in ``[t_min, t_max]`` minimising the validation NLL.

    Args:
      logits: ``[batch, classes]`` validation logits.
      labels: ``[batch]`` validation labels.
      t_min, t_max: search range (the original's grid spans 0.1 to 10.0).

    Returns:
      The optimal ``T`` (float); divide logits by it.
    """
    logits, labels = _logits_labels(logits, labels)
    if not 0 < t_min < t_max:
        raise ValueError(f"Expected 0 < t_min < t_max. Received: t_min={t_min}, t_max={t_max}.")
    true = logits[np.arange(labels.size), labels]

    def objective(beta):
        return float(np.mean(special.logsumexp(beta * logits, axis=1) - beta * true))

    result = optimize.minimize_scalar(
        objective, bounds=(1.0 / t_max, 1.0 / t_min), method="bounded",
        options={"xatol": 1e-10, "maxiter": 500},
    )
    # Bounded Brent never evaluates the end points; the minimum of a convex function on an
    # interval may sit on one of them.
    candidates = [float(result.x), 1.0 / t_max, 1.0 / t_min]
    best = min(candidates, key=objective)
    return float(1.0 / best)


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """``logits / T`` as float64 ``[batch, classes]``."""
    if not temperature > 0:
        raise ValueError(f"Expected temperature > 0. Received: temperature={temperature!r}.")
    return np.asarray(logits, np.float64) / temperature
