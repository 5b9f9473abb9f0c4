"""TFDS builder of MNIST-1D (Greydanus 2020), generated locally (no download).

Configs:
  * ``default``: the reference arguments (5000 samples: 4000 train / 1000 test, seed 42).
  * ``shuffled``: the same samples with the spatial axis permuted by one fixed permutation
    (the reference's ``shuffle_seq=True``: drawn from the same stream after the sample
    permutation), as in the paper's "shuffled MNIST-1D" experiment.
  * ``large``: 100 000 samples (80 000 train / 20 000 test) from the same recipe.

Features: ``x`` float32 ``[40]`` (the reference's float64 output cast to float32; globally
standardised, dimensionless), ``y`` ClassLabel(10).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from ddu_tf.io import mnist1d

_DESCRIPTION = """\
MNIST-1D: a procedurally generated 1-D analogue of MNIST. Ten hand-made 12-point templates
(one per digit) are padded, dilated, scaled, translated, given correlated and i.i.d. noise,
sheared and resampled to 40 points. Small models separate clearly (logistic ~32%, MLP ~68%,
CNN ~94%, GRU ~91% test accuracy), which makes it a fast benchmark for deep-learning ideas.
Generated bit-exactly like the reference package `mnist1d` (0.0.2.post1).
"""

_CITATION = """\
@article{greydanus2020scaling,
  title={Scaling down Deep Learning},
  author={Greydanus, Sam},
  journal={arXiv preprint arXiv:2011.14439},
  year={2020}
}
"""


@dataclasses.dataclass
class Mnist1dConfig(tfds.core.BuilderConfig):
    """A BuilderConfig carrying the generation arguments that differ from the reference's."""

    num_samples: int = 5000
    shuffle_seq: bool = False


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for MNIST-1D."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release, bit-exact with mnist1d 0.0.2.post1."}
    BUILDER_CONFIGS = [
        Mnist1dConfig(name="default", description="Reference arguments: 4000 train, 1000 test."),
        Mnist1dConfig(name="shuffled", shuffle_seq=True,
                      description="Reference samples with one fixed permutation of the 40 "
                                  "positions (paper's shuffle experiment)."),
        Mnist1dConfig(name="large", num_samples=100_000,
                      description="100 000 samples: 80 000 train, 20 000 test."),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        args = mnist1d.get_dataset_args()
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "x": tfds.features.Tensor(shape=(args.final_seq_length,), dtype=np.float32),
                "y": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("x", "y"),
            homepage="https://github.com/greydanus/mnist1d",
            citation=_CITATION,
            disable_shuffling=True,  # keep the reference order (the recipe trains in fixed order)
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # generated locally
        data = mnist1d.make_dataset(num_samples=self.builder_config.num_samples,
                                    shuffle_seq=self.builder_config.shuffle_seq)
        return {
            "train": self._generate_examples(data["x"], data["y"]),
            "test": self._generate_examples(data["x_test"], data["y_test"]),
        }

    def _generate_examples(self, x: np.ndarray, y: np.ndarray):
        """Yields ``(index, {"x": float32 [40], "y": int})`` in the reference's order."""
        x = x.astype(np.float32)
        for i in range(x.shape[0]):
            yield i, {"x": x[i], "y": int(y[i])}
