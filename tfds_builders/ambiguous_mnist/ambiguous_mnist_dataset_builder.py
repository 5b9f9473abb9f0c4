"""TFDS builder of Ambiguous-MNIST (Mukhoti et al. 2021, BlackHC/ddu_dirty_mnist).

Configs:
  official: the released ``amnist_samples.pt`` / ``amnist_labels.pt`` (12k images x 10 labels),
    read from the manual dir (``<manual_dir>/ambiguous_mnist/`` or ``$DDU_TF_DATA_DIR``) or
    downloaded from the GitHub release ``data-v1.0.0``; MD5-verified; parsed without torch.
  generated: regenerated offline from MNIST by `ddu_tf.generation.ambiguous_mnist.generate`
    (default scale: `GenerationConfig()`, 12k images; the full candidate pool takes tens of
    minutes on 2 CPU cores). Same seed and machine -> identical bytes.
  generated_tiny: the same recipe at smoke-test scale (20 images; seconds).

Each example is one flattened (image, label) pair: pair ``j`` = image ``j // 10`` with its
``(j % 10)``-th label; the first half of the pairs (60k) is ``train``, the rest ``test``.
Images are stored as float32 ``[28, 28, 1]`` (zlib-compressed Tensor feature), so the
released float values in [0, 1] are kept bit-exactly (a uint8 image would round them).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from ddu_tf.data import dirty_mnist
from ddu_tf.generation import ambiguous_mnist as ambiguous_generation
from ddu_tf.io import mnist_idx

_CITATION = """
@article{mukhoti2021deterministic,
  title={Deterministic Neural Networks with Appropriate Inductive Biases Capture Epistemic and
         Aleatoric Uncertainty},
  author={Mukhoti, Jishnu and Kirsch, Andreas and van Amersfoort, Joost and Torr, Philip HS and
          Gal, Yarin},
  journal={arXiv preprint arXiv:2102.11582},
  year={2021}
}
"""


@dataclasses.dataclass
class AmbiguousMnistConfig(tfds.core.BuilderConfig):
    """``generation`` None = official release; else the generation recipe's parameters."""

    generation: Optional[ambiguous_generation.GenerationConfig] = None


def _scale(g: ambiguous_generation.GenerationConfig) -> str:
    return (f"{g.num_images} images from {g.num_candidates} candidates; VAE {g.vae_epochs} "
            f"epochs; {g.ensemble_size} LeNets x {g.ensemble_epochs} epochs; MNIST images used: "
            f"{g.mnist_subset or 60000}; MI <= {g.mi_threshold}; seed {g.seed}")


def manual_dir_or_none(dl_manager) -> Optional[str]:
    """The TFDS manual dir if one exists and is non-empty, else None."""
    try:
        return os.fspath(dl_manager.manual_dir)
    except (AssertionError, ValueError):
        return None


def official_arrays(dl_manager):
    """Official images float32 [N, 28, 28] and labels int64 [N, 10]: manual dir, then
    ``$DDU_TF_DATA_DIR``, then download through ``dl_manager``; MD5-verified either way."""
    found = dirty_mnist.find_ambiguous_files(manual_dir_or_none(dl_manager))
    if found is None:
        try:
            found = dl_manager.download({role: dirty_mnist.AMBIGUOUS_URL + name
                                         for role, (name, _) in
                                         dirty_mnist.AMBIGUOUS_FILES.items()})
        except Exception as e:  # network / DNS / HTTP failures differ by TFDS backend
            raise dirty_mnist.ambiguous_missing_error(manual_dir_or_none(dl_manager)) from e
    return dirty_mnist.read_official_ambiguous(found["samples"], found["labels"])


def generated_arrays(dl_manager, config: ambiguous_generation.GenerationConfig):
    """Runs the generation recipe on MNIST train (manual dir, env var or download)."""
    images, labels = mnist_idx.load_idx_arrays_or_fetch(
        "mnist", "train", manual_dir_or_none(dl_manager), dl_manager.download)
    result = ambiguous_generation.generate(images, labels, config)
    logging.info("ambiguous_mnist generation: %s", result.info)
    return result.images, result.labels


class Builder(tfds.core.GeneratorBasedBuilder):
    """Ambiguous-MNIST: flattened (image, label) pairs with the image's label distribution."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Offline use: put the files in the manual dir (or in $DDU_TF_DATA_DIR) as
      ambiguous_mnist/amnist_samples.pt, ambiguous_mnist/amnist_labels.pt   (config `official`,
        from {dirty_mnist.AMBIGUOUS_URL})
      mnist/train-images-idx3-ubyte.gz, mnist/train-labels-idx1-ubyte.gz  (configs `generated*`,
        from {mnist_idx.URLS['mnist']})
    Without them the builder downloads from those URLs.
    """
    BUILDER_CONFIGS = [
        AmbiguousMnistConfig(
            name="official",
            description="The released Ambiguous-MNIST (data-v1.0.0): 12k images x 10 labels."),
        AmbiguousMnistConfig(
            name="generated", generation=ambiguous_generation.GenerationConfig(),
            description="Offline regeneration from MNIST (VAE + LeNet-ensemble filter), scaled "
                        "to 2 CPU cores: " + _scale(ambiguous_generation.GenerationConfig())),
        AmbiguousMnistConfig(
            name="generated_tiny", generation=ambiguous_generation.TINY_CONFIG,
            description="Smoke-test scale of `generated`: "
                        + _scale(ambiguous_generation.TINY_CONFIG)),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.float32,
                                              encoding=tfds.features.Encoding.ZLIB),
                "label": tfds.features.ClassLabel(num_classes=10),
                "sample_id": tfds.features.Scalar(dtype=np.int64,
                                                  doc="Index of the unique image."),
                "pair_id": tfds.features.Scalar(dtype=np.int64,
                                                doc="Flattened pair index = 10 * image + slot."),
                "label_distribution": tfds.features.Tensor(shape=(10,), dtype=np.float32),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/BlackHC/ddu_dirty_mnist",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        if self.builder_config.generation is None:
            images, labels = official_arrays(dl_manager)
        else:
            images, labels = generated_arrays(dl_manager, self.builder_config.generation)
        return {split: self._generate_examples(images, labels, split)
                for split in ("train", "test")}

    def _generate_examples(self, images, labels, split):
        pairs = dirty_mnist.flatten_pairs(images, labels, split)
        for i in range(len(pairs["label"])):
            yield int(pairs["pair_id"][i]), {
                "image": pairs["images"][i][..., None],
                "label": int(pairs["label"][i]),
                "sample_id": int(pairs["sample_id"][i]),
                "pair_id": int(pairs["pair_id"][i]),
                "label_distribution": pairs["label_distribution"][i],
            }
