"""How ambiguous a generated Ambiguous-MNIST is, measured against the official set (issue 13).

Two groups of numbers for a file read by :func:`ddu_tf.io.ambiguous_mnist.load_generated`
(``N`` images, ``[0, N/2)`` train, ``[N/2, N)`` test):

* :func:`set_statistics` -- arrays only, no model: the scoring ensemble's predictive entropy
  (PE, nats) of the TEST images histogrammed over the official 16 equal bins on
  ``[0.05, 1.6]`` beside the official test histogram
  (:data:`~ddu_tf.generation.ambiguous_mnist.OFFICIAL_TEST_HIST`, printed by notebook
  ``02_dirtymnist`` of BlackHC/ddu_dirty_mnist), the total-variation distance between the two
  normalised histograms ``TV = 0.5 sum_b |p_b - q_b|`` (0 = same shape, 1 = disjoint), the
  largest mutual information (the recipe keeps MI <= 0.05 nats), and the entropy (nats) of each
  image's empirical distribution of its 10 labels (mean, and the share of images whose 10
  labels are identical, i.e. label entropy 0).
* :func:`independent_lenet_check` -- the property DDU builds on, checked with a model that did
  not take part in the generation: a LeNet (:func:`ddu_tf.generation.ambiguous_mnist.train_lenet`,
  Adam, a few epochs, its own seed) trained on Dirty-MNIST train built from the file (the 60k
  MNIST training images + the flattened ambiguous train pairs, ``dirty_mnist/generated``'s
  ``train_full`` without noise), then the softmax entropy of its logits on MNIST test,
  Ambiguous-MNIST test (unique images: each image's 10 pairs share one entropy, so the AUROCs
  equal those over pairs) and Fashion-MNIST test, and the AUROCs (sklearn, OoD / the second set
  = positive, higher entropy = more uncertain) of each pair of sets. On the official set the
  paper's Fig. 1 shows softmax entropy unable to tell ambiguous digits from Fashion-MNIST (an
  AUROC near 0.5); a value near 1 means the generated digits are not ambiguous enough.

Example::

    data = load_generated("results/ambiguous_mnist/ambiguous_mnist_generated.npz", sha256=...)
    stats = set_statistics(data)
    stats["test_pe_histogram"]["total_variation"]     # goal <= 0.10
"""
from __future__ import annotations

import time
from typing import Any, Dict

import numpy as np

from ddu_tf import metrics, uncertainty
from ddu_tf.data.dirty_mnist import flatten_pairs, normalize
from ddu_tf.generation.ambiguous_mnist import (OFFICIAL_TEST_HIST, OFFICIAL_TEST_RANGE,
                                               histogram_vs_official, label_entropy,
                                               train_lenet)

#: Goals of issue 13 for a generated set.
TV_GOAL = 0.10
MAX_MI_GOAL = 0.05


def _label_entropy_stats(labels: np.ndarray) -> Dict[str, float]:
    h = label_entropy(labels)
    return {"mean": float(h.mean()), "median": float(np.median(h)),
            "fraction_identical_labels": float((labels == labels[:, :1]).all(1).mean()),
            "fraction_above_1_nat": float((h > 1.0).mean())}


def _centre_mean(counts: np.ndarray, lo: float, hi: float):
    edges = np.linspace(lo, hi, len(counts) + 1)
    if not counts.sum():
        return None
    return float((counts * (edges[:-1] + edges[1:]) / 2).sum() / counts.sum())


def set_statistics(data) -> Dict[str, Any]:
    """Model-free statistics of a generated set against the official numbers.

    Args:
      data: a :class:`ddu_tf.io.ambiguous_mnist.GeneratedAmbiguousMnist` (``labels`` int
        ``[N, 10]``, ``predictive_entropy`` and ``mutual_information`` float ``[N]`` in nats).

    Returns:
      JSON-ready dict: ``test_pe_histogram`` (``counts`` of our N/2 test images over the
      official bins, ``official_counts``, both normalised, ``total_variation``,
      ``outside_range``: test images whose PE falls outside ``[0.05, 1.6]``), ``pe_mean``
      (ours, test), ``pe_mean_from_bin_centres`` (ours and official, comparable),
      ``max_mutual_information`` (nats, all images), ``label_entropy`` (``all``,
      ``train``, ``test``: mean, median, fraction of images with 10 identical labels, fraction
      above 1 nat) and the goals (``tv_goal`` 0.10, ``max_mi_goal`` 0.05) with pass flags.
    """
    labels = np.asarray(data.labels)
    pe = np.asarray(data.predictive_entropy, np.float64)
    mi = np.asarray(data.mutual_information, np.float64)
    n = labels.shape[0]
    if labels.ndim != 2 or pe.shape != (n,) or mi.shape != (n,) or n < 2 or n % 2:
        raise ValueError("Expected labels [N, k], predictive_entropy [N] and mutual_information "
                         f"[N] with an even N >= 2. Received: labels {labels.shape}, PE "
                         f"{pe.shape}, MI {mi.shape}.")
    half = n // 2
    test_pe = pe[half:]
    hist = histogram_vs_official(test_pe, OFFICIAL_TEST_HIST, OFFICIAL_TEST_RANGE)
    lo, hi = OFFICIAL_TEST_RANGE
    ours = np.asarray(hist["counts"], np.float64)
    official = np.asarray(OFFICIAL_TEST_HIST, np.float64)
    hist.update({
        "edges": np.linspace(lo, hi, len(OFFICIAL_TEST_HIST) + 1).round(6).tolist(),
        "normalised": (ours / ours.sum()).tolist() if ours.sum() else None,
        "official_normalised": (official / official.sum()).tolist(),
        "outside_range": int(((test_pe < lo) | (test_pe > hi)).sum()),
        "num_test_images": int(half),
    })
    tv, max_mi = hist["total_variation"], float(mi.max())
    return {
        "num_images": int(n),
        "test_pe_histogram": hist,
        "pe_mean_test": float(test_pe.mean()),
        # Means from the bin centres: the official set is known only through its histogram.
        "pe_mean_from_bin_centres": {"ours": _centre_mean(ours, lo, hi),
                                     "official": _centre_mean(official, lo, hi)},
        "max_mutual_information": max_mi,
        "label_entropy": {"all": _label_entropy_stats(labels),
                          "train": _label_entropy_stats(labels[:half]),
                          "test": _label_entropy_stats(labels[half:])},
        "goals": {"tv_goal": TV_GOAL, "tv_met": tv is not None and tv <= TV_GOAL,
                  "max_mi_goal": MAX_MI_GOAL, "max_mi_met": max_mi <= MAX_MI_GOAL + 1e-6},
    }


def independent_lenet_check(data, mnist_train, mnist_test, fashion_test, *, seed: int = 12345,
                            epochs: int = 3, batch_size: int = 128) -> Dict[str, Any]:
    """Softmax entropy of a LeNet trained on Dirty-MNIST built from ``data``, and its AUROCs.

    Args:
      data: a :class:`ddu_tf.io.ambiguous_mnist.GeneratedAmbiguousMnist` (images float
        ``[N, 28, 28]`` in [0, 1], labels int ``[N, 10]``).
      mnist_train: ``(images [60000, 28, 28] float in [0, 1], labels [60000] int)``.
      mnist_test, fashion_test: ``(images [n, 28, 28] float in [0, 1], labels [n])``.
      seed: the LeNet's initialisation and batch-order seed (the generating LeNets use
        ``config.seed + 100 + m``; keep it away from those).
      epochs: Adam epochs over the 60k + N*10/2 Dirty-MNIST training samples.
      batch_size: training batch size.

    Returns:
      dict with ``entropy`` (set name -> float64 ``[n]`` softmax entropies in nats, for the
      histograms; not JSON), and JSON-ready ``summary``: training set size, seed, epochs,
      seconds, MNIST test accuracy, per set the mean / median / fraction above 1 nat, and
      ``auroc`` for "Ambiguous-MNIST vs Fashion-MNIST" (the issue's check), "MNIST vs
      Fashion-MNIST" and "MNIST vs Ambiguous-MNIST" (second set = positive).
    """
    start = time.time()
    amb_train = flatten_pairs(np.asarray(data.images, np.float32), np.asarray(data.labels),
                              "train")
    x = np.concatenate([np.asarray(mnist_train[0], np.float32), amb_train["images"]])
    y = np.concatenate([np.asarray(mnist_train[1], np.int64), amb_train["label"]])
    model = train_lenet(x, y, seed=seed, epochs=epochs, batch_size=batch_size)
    half = len(data.labels) // 2

    def entropy_and_logits(images01):
        logits = model.predict(normalize(np.asarray(images01, np.float32))[..., None],
                               batch_size=2048, verbose=0)
        return np.asarray(uncertainty.softmax_entropy(logits), np.float64), logits

    mnist_h, mnist_logits = entropy_and_logits(mnist_test[0])
    entropy = {"MNIST": mnist_h,
               "Ambiguous-MNIST": entropy_and_logits(data.images[half:])[0],
               "Fashion-MNIST": entropy_and_logits(fashion_test[0])[0]}
    aurocs = {}
    for a, b in (("Ambiguous-MNIST", "Fashion-MNIST"), ("MNIST", "Fashion-MNIST"),
                 ("MNIST", "Ambiguous-MNIST")):
        aurocs[f"{a} vs {b}"] = metrics.ood_auroc_auprc(entropy[a], entropy[b],
                                                        higher_is_uncertain=True)[0]
    summary = {
        "model": "lenet (ddu_tf.models.lenet), Adam lr 1e-3, no noise",
        "train_samples": int(len(y)), "train_ambiguous_pairs": int(len(amb_train["label"])),
        "seed": int(seed), "epochs": int(epochs), "batch_size": int(batch_size),
        "mnist_test_accuracy": metrics.accuracy(np.asarray(mnist_test[1]),
                                                mnist_logits.argmax(1)),
        "softmax_entropy": {name: {"n": int(h.size), "mean": float(h.mean()),
                                   "median": float(np.median(h)),
                                   "fraction_above_1_nat": float((h > 1.0).mean())}
                            for name, h in entropy.items()},
        "auroc": aurocs,
        "seconds": time.time() - start,
    }
    return {"entropy": entropy, "summary": summary}


__all__ = ["MAX_MI_GOAL", "TV_GOAL", "independent_lenet_check", "set_statistics"]
