"""The evaluation sets of the Dirty-MNIST protocol: Dirty-MNIST test and the OoD sets.

Every set comes as loader arrays (``images`` float32 ``[n, 28, 28]`` in [0, 1], ``label``
int64 ``[n]``, ``noise_key`` int64 ``[n]``) and goes through ONE transform,
:func:`ddu_tf.data.dirty_mnist.prepare` with the training loader's normalisation
``(x - 0.1307) / 0.3081`` and fixed ``N(0, noise_std^2)`` noise (default 0.05, the
Dirty-MNIST training transform), so no set differs from another by the noise alone (the
confound of scoring ambiguous digits with noise and MNIST / Fashion-MNIST without).

In-distribution (Dirty-MNIST test):

* ``mnist``: MNIST test (10k);
* ``ambiguous``: Ambiguous-MNIST test, one (image, label) pair per unique image (its first
  flattened pair: 6000 images for the official set), because the 10 pairs of one image differ
  only by the noise;
* ``dirty``: both together (``ddu_tf.evaluation.dirty_mnist_protocol`` concatenates their
  scores rather than running the network twice).

Out-of-distribution (:data:`OOD_SETS`):

* ``fashion_mnist``: Fashion-MNIST test (10k);
* ``mnist_rot90``: MNIST test rotated by 90 degrees counter-clockwise (10k; ``np.rot90``);
* ``sklearn_digits``: scikit-learn's 1797 8x8 digits (UCI pen-digits, grey levels 0..16)
  scaled to [0, 1], resized bilinearly to 20x20 and zero-padded by 4 pixels to 28x28, the
  layout of MNIST's 20x20 digit box (a different writer population and acquisition);
* ``uniform_noise``: ``n`` images of i.i.d. U[0, 1) pixels, a pure function of ``seed``.

Noise keys are disjoint from :data:`ddu_tf.data.dirty_mnist.NOISE_KEY_OFFSETS` (offsets in
:data:`NOISE_KEY_OFFSETS`), so every image of every set has its own fixed noise.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from ddu_tf.data import dirty_mnist

NOISE_KEY_OFFSETS = {"fashion_mnist": 10_000_000, "mnist_rot90": 11_000_000,
                     "sklearn_digits": 12_000_000, "uniform_noise": 13_000_000}
"""First noise key of each OoD set (keys ``offset + i``)."""

IN_DISTRIBUTION_SETS = ("mnist", "ambiguous")
"""Names of the in-distribution parts of Dirty-MNIST test, in table order."""


def _arrays(images, labels, offset):
    n = len(labels)
    return {"images": np.asarray(images, np.float32), "label": np.asarray(labels, np.int64),
            "noise_key": offset + np.arange(n, dtype=np.int64)}


def fashion_mnist(data_dir=None, **_) -> Dict[str, np.ndarray]:
    """Fashion-MNIST test: ``images [10000, 28, 28]`` in [0, 1], labels, noise keys."""
    f = dirty_mnist.load_mnist_arrays("test", "fashion_mnist", data_dir)
    return _arrays(f["images"], f["label"], NOISE_KEY_OFFSETS["fashion_mnist"])


def mnist_rot90(data_dir=None, **_) -> Dict[str, np.ndarray]:
    """MNIST test rotated by 90 degrees counter-clockwise (``np.rot90(image, 1)``); labels are
    the digits' classes."""
    m = dirty_mnist.load_mnist_arrays("test", "mnist", data_dir)
    return _arrays(np.rot90(m["images"], 1, axes=(1, 2)), m["label"],
                   NOISE_KEY_OFFSETS["mnist_rot90"])


def sklearn_digits(**_) -> Dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits in MNIST's layout: ``images [1797, 28, 28]`` in [0, 1].

    ``x / 16`` -> bilinear resize to 20x20 (``tf.image.resize``, clipped to [0, 1]) -> 4-pixel
    zero border, as MNIST centres its digits in a 20x20 box of the 28x28 frame.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[..., None] / np.float32(16.0)
    x = np.clip(tf.image.resize(x, (20, 20), method="bilinear").numpy()[..., 0], 0.0, 1.0)
    x = np.pad(x, ((0, 0), (4, 4), (4, 4)))
    return _arrays(x, digits.target, NOISE_KEY_OFFSETS["sklearn_digits"])


def uniform_noise(num_images: int = 10_000, seed: int = 0, **_) -> Dict[str, np.ndarray]:
    """``num_images`` images of i.i.d. U[0, 1) pixels (``np.random.default_rng(seed)``);
    labels are 0 (meaningless for OoD)."""
    if int(num_images) < 1:
        raise ValueError(f"Expected num_images >= 1. Received: num_images={num_images!r}.")
    x = np.random.default_rng(seed).random((int(num_images), 28, 28), dtype=np.float32)
    return _arrays(x, np.zeros(int(num_images), np.int64), NOISE_KEY_OFFSETS["uniform_noise"])


OOD_SETS = {"fashion_mnist": fashion_mnist, "mnist_rot90": mnist_rot90,
            "sklearn_digits": sklearn_digits, "uniform_noise": uniform_noise}
"""OoD set name -> loader ``fn(data_dir=None) -> arrays`` (see the module docstring)."""


def ambiguous_test(variant: str = "official", data_dir=None, tfds_data_dir=None):
    """Ambiguous-MNIST test, one pair per unique image (its first flattened pair), with the
    pair's Dirty-MNIST noise key."""
    a = dirty_mnist.load_ambiguous_arrays("test", variant, data_dir, tfds_data_dir)
    first = np.unique(a["sample_id"], return_index=True)[1]
    return {"images": a["images"][first], "label": a["label"][first],
            "noise_key": a["pair_id"][first] + dirty_mnist.NOISE_KEY_OFFSETS["ambiguous"]}


def evaluation_sets(variant: str = "official", ood=tuple(OOD_SETS), *, data_dir=None,
                    tfds_data_dir=None, noise_std: float = dirty_mnist.NOISE_STD,
                    noise_seed: int = 0, max_per_set: Optional[int] = None):
    """Model inputs of the Dirty-MNIST protocol, all with the same transform.

    Args:
      variant: Ambiguous-MNIST variant ("official", "generated", "generated_tiny").
      ood: names of :data:`OOD_SETS` to include.
      data_dir: manual data directory (else ``$DDU_TF_DATA_DIR``).
      tfds_data_dir: TFDS directory of the generated Ambiguous-MNIST.
      noise_std: std of the fixed noise added after normalisation to EVERY set (0.05 = the
        Dirty-MNIST training transform; 0 = none anywhere).
      noise_seed: seed of the fixed noise.
      max_per_set: keep at most the first N images of each set (quick looks).

    Returns:
      dict ``name -> (x float32 [n, 28, 28, 1], y int64 [n])`` with the names
      :data:`IN_DISTRIBUTION_SETS` followed by ``ood``.
    """
    unknown = [name for name in ood if name not in OOD_SETS]
    if unknown:
        raise ValueError(f"Expected OoD set names in {sorted(OOD_SETS)}. Received: {unknown}.")
    if not noise_std >= 0:
        raise ValueError(f"Expected noise_std >= 0. Received: noise_std={noise_std!r}.")
    m = dirty_mnist.load_mnist_arrays("test", "mnist", data_dir)
    raw = {"mnist": {k: m[k] for k in ("images", "label", "noise_key")},
           "ambiguous": ambiguous_test(variant, data_dir, tfds_data_dir)}
    raw.update({name: OOD_SETS[name](data_dir=data_dir) for name in ood})
    if max_per_set:
        raw = {name: {k: v[:max_per_set] for k, v in a.items()} for name, a in raw.items()}
    return {name: dirty_mnist.prepare(a, noise_std=noise_std, noise_seed=noise_seed)
            for name, a in raw.items()}


__all__ = ["IN_DISTRIBUTION_SETS", "NOISE_KEY_OFFSETS", "OOD_SETS", "ambiguous_test",
           "evaluation_sets", "fashion_mnist", "mnist_rot90", "sklearn_digits", "uniform_noise"]
