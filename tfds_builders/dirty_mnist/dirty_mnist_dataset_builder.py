"""TFDS builder of Dirty-MNIST = MNIST + Ambiguous-MNIST (Mukhoti et al. 2021).

Splits: ``train`` = 60k MNIST train + 60k Ambiguous-MNIST train pairs (120k), ``test`` = 10k MNIST
test + 60k Ambiguous-MNIST test pairs (70k). Images are float32 ``[28, 28, 1]`` in [0, 1]
(MNIST: uint8 / 255; Ambiguous-MNIST: the stored floats), NOT normalised and without noise:
`ddu_tf.data.dirty_mnist` adds the normalisation (0.1307, 0.3081) and the fixed N(0, 0.05^2)
noise, and the validation split from the MNIST half.

Features: ``image``, ``label`` (ClassLabel 10), ``is_ambiguous`` (bool), ``sample_id``: the MNIST
index within its IDX split for MNIST examples, the ambiguous IMAGE index for ambiguous ones
(its 10 pairs share it). Example keys: ``mnist-<index>`` and ``amnist-<pair index>``.

Configs: ``official`` (released Ambiguous-MNIST), ``generated`` (the `ambiguous_mnist/generated`
regeneration, built on first use into the same TFDS data dir and reused) and
``generated_tiny`` (smoke-test scale: the first 100 MNIST images per split +
`ambiguous_mnist/generated_tiny`).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from ddu_tf.data import dirty_mnist
from ddu_tf.io import mnist_idx
from tfds_builders.ambiguous_mnist import ambiguous_mnist_dataset_builder as amnist_builder


@dataclasses.dataclass
class DirtyMnistConfig(tfds.core.BuilderConfig):
    """``ambiguous_config``: the `ambiguous_mnist` config used; ``mnist_limit``: keep only the
    first n MNIST images per split (None = all; smoke tests only)."""

    ambiguous_config: str = "official"
    mnist_limit: Optional[int] = None


class Builder(tfds.core.GeneratorBasedBuilder):
    """Dirty-MNIST: MNIST and Ambiguous-MNIST pairs, flagged by ``is_ambiguous``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Offline use: put the files in the manual dir (or in $DDU_TF_DATA_DIR) as
      mnist/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz  (from {mnist_idx.URLS['mnist']})
      ambiguous_mnist/amnist_samples.pt, ambiguous_mnist/amnist_labels.pt  (config `official`,
        from {dirty_mnist.AMBIGUOUS_URL})
    Without them the builder downloads from those URLs.
    """
    BUILDER_CONFIGS = [
        DirtyMnistConfig(name="official", ambiguous_config="official",
                         description="MNIST + the released Ambiguous-MNIST."),
        DirtyMnistConfig(name="generated", ambiguous_config="generated",
                         description="MNIST + ambiguous_mnist/generated (offline regeneration, "
                                     "see that config for its scale)."),
        DirtyMnistConfig(name="generated_tiny", ambiguous_config="generated_tiny",
                         mnist_limit=100,
                         description="Smoke test: first 100 MNIST images per split + "
                                     "ambiguous_mnist/generated_tiny."),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.float32,
                                              encoding=tfds.features.Encoding.ZLIB),
                "label": tfds.features.ClassLabel(num_classes=10),
                "is_ambiguous": tfds.features.Scalar(dtype=np.bool_),
                "sample_id": tfds.features.Scalar(
                    dtype=np.int64, doc="MNIST index (MNIST) or ambiguous image index."),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/BlackHC/ddu_dirty_mnist",
            citation=amnist_builder._CITATION,
        )

    def _ambiguous(self, dl_manager):
        name = self.builder_config.ambiguous_config
        if name == "official":
            images, labels = amnist_builder.official_arrays(dl_manager)
            return {s: dirty_mnist.flatten_pairs(images, labels, s) for s in ("train", "test")}
        manual = amnist_builder.manual_dir_or_none(dl_manager)
        nested = tfds.builder(f"ambiguous_mnist/{name}", data_dir=self.data_dir_root)
        nested.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual))
        out = {}
        for s in ("train", "test"):
            d = tfds.as_numpy(nested.as_dataset(split=s, batch_size=-1))
            order = np.argsort(d["pair_id"], kind="stable")
            out[s] = {"images": d["image"][order, :, :, 0], "label": d["label"][order],
                      "sample_id": d["sample_id"][order], "pair_id": d["pair_id"][order]}
        return out

    def _split_generators(self, dl_manager):
        manual = amnist_builder.manual_dir_or_none(dl_manager)
        mnist = {s: mnist_idx.load_idx_arrays_or_fetch("mnist", s, manual, dl_manager.download)
                 for s in ("train", "test")}
        ambiguous = self._ambiguous(dl_manager)
        return {s: self._generate_examples(mnist[s], ambiguous[s]) for s in ("train", "test")}

    def _generate_examples(self, mnist, ambiguous):
        images, labels = mnist
        limit = self.builder_config.mnist_limit
        n = len(labels) if limit is None else min(limit, len(labels))
        for i in range(n):
            image = images[i].astype(np.float32) / np.float32(255.0)
            yield f"mnist-{i}", {"image": image[..., None], "label": int(labels[i]),
                                 "is_ambiguous": False, "sample_id": i}
        for j in range(len(ambiguous["label"])):
            yield f"amnist-{int(ambiguous['pair_id'][j])}", {
                "image": ambiguous["images"][j][..., None].astype(np.float32),
                "label": int(ambiguous["label"][j]), "is_ambiguous": True,
                "sample_id": int(ambiguous["sample_id"][j])}
