"""TFDS builder of Dirty-MNIST = MNIST + Ambiguous-MNIST (Mukhoti et al. 2021).

Published order (``disable_shuffling``), as the official concatenation
(`ddu_tf.data.dirty_mnist.load_dirty_arrays` with split ``train_full`` / ``test``): ``train`` =
the 60k MNIST training images in IDX order, then the Ambiguous-MNIST train pairs image by image
(an image's 10 labels adjacent), 120k in all; ``test`` = the 10k MNIST test images, then the
Ambiguous-MNIST test pairs, 70k. So ``split="train[:60000]"`` is exactly MNIST train, and
``train[60000 + 10 * a:60000 + 10 * b]`` holds exactly ambiguous train images ``a..b-1`` (of the
split; `ddu_tf.data.dirty_mnist.tfds_slice` writes these strings). Images are float32
``[28, 28, 1]`` in [0, 1] (MNIST: uint8 / 255; Ambiguous-MNIST: the stored floats), NOT
normalised and without noise: `ddu_tf.data.dirty_mnist.tfds_transform` is the pip package's
transform (normalisation (0.1307, 0.3081) + fixed N(0, 0.05^2) noise) as a ``tf.data`` map, and
`ddu_tf.data.dirty_mnist.load_tfds` takes the validation split from the MNIST half.

Features: ``image``, ``label`` (ClassLabel 10), ``is_ambiguous`` (bool), ``sample_id`` (the
source image: MNIST index within its IDX split, or the ambiguous IMAGE index, shared by its 10
pairs), ``pair_id`` (global flattened Ambiguous-MNIST pair index ``10 * image + slot``; -1 for
MNIST). ``info.metadata``: ``mnist_examples`` and ``ambiguous_images`` per split, and
``labels_per_image``.

Configs: ``official`` (released Ambiguous-MNIST), ``generated`` (the shipped regenerated file,
read in seconds, nothing trained), ``generated_tiny`` (smoke test: the first 100 MNIST images per
split + `ambiguous_mnist/generated_tiny`), and any generated file through ``builder_kwargs``
``generated_file`` / ``generated_sha256`` (as for `ambiguous_mnist`).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from ddu_tf.io import ambiguous_mnist as amnist_io
from ddu_tf.io import mnist_idx
from tfds_builders.ambiguous_mnist import ambiguous_mnist_dataset_builder as amnist_builder

#: The Ambiguous-MNIST configs by name.
AMBIGUOUS_CONFIGS = {c.name: c for c in amnist_builder.Builder.BUILDER_CONFIGS}


@dataclasses.dataclass
class DirtyMnistConfig(tfds.core.BuilderConfig):
    """``ambiguous``: the `ambiguous_mnist` config whose images are used; ``mnist_limit``: keep
    only the first n MNIST images per split (None = all; smoke tests only)."""

    ambiguous: Optional[amnist_builder.AmbiguousMnistConfig] = None
    mnist_limit: Optional[int] = None


class Builder(tfds.core.GeneratorBasedBuilder):
    """Dirty-MNIST: MNIST, then Ambiguous-MNIST pairs, flagged by ``is_ambiguous``."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "2.0.0": "Published order (disable_shuffling): MNIST, then the Ambiguous-MNIST pairs "
                 "image by image; `pair_id` feature; counts in info.metadata; `generated` reads "
                 "the shipped SHA-256-checked file (no training at load time); other generated "
                 "files via builder_kwargs generated_file / generated_sha256.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Offline use: put the files in the manual dir (or in $DDU_TF_DATA_DIR) as
      mnist/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz  (from {mnist_idx.URLS['mnist']})
      ambiguous_mnist/amnist_samples.pt, ambiguous_mnist/amnist_labels.pt  (config `official`,
        from {amnist_io.AMBIGUOUS_URL})
    Without them the builder downloads from those URLs.
    """
    BUILDER_CONFIGS = [
        DirtyMnistConfig(name="official", ambiguous=AMBIGUOUS_CONFIGS["official"],
                         description="MNIST + the released Ambiguous-MNIST."),
        DirtyMnistConfig(name="generated", ambiguous=AMBIGUOUS_CONFIGS["generated"],
                         description="MNIST + the regenerated Ambiguous-MNIST shipped with "
                                     "ddu_tf (ambiguous_mnist/generated)."),
        DirtyMnistConfig(name="generated_tiny", ambiguous=AMBIGUOUS_CONFIGS["generated_tiny"],
                         mnist_limit=100,
                         description="Smoke test: first 100 MNIST images per split + "
                                     "ambiguous_mnist/generated_tiny."),
    ]

    def __init__(self, *, config=None, **kwargs):
        """Args: ``config`` (name or `DirtyMnistConfig`), ``generated_file`` and
        ``generated_sha256`` (Ambiguous-MNIST from that generated file), TFDS' own."""
        amb = amnist_builder.config_from_kwargs(config, kwargs)
        if amb is not config:
            config = DirtyMnistConfig(name=amb.name, ambiguous=amb,
                                      description="MNIST + " + amb.description)
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.float32,
                                              encoding=tfds.features.Encoding.ZLIB),
                "label": tfds.features.ClassLabel(num_classes=10),
                "is_ambiguous": tfds.features.Scalar(dtype=np.bool_),
                "sample_id": tfds.features.Scalar(
                    dtype=np.int64, doc="MNIST index (MNIST) or ambiguous image index."),
                "pair_id": tfds.features.Scalar(
                    dtype=np.int64, doc="Ambiguous-MNIST pair index 10 * image + slot; -1 for "
                                        "MNIST."),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
            homepage="https://github.com/BlackHC/ddu_dirty_mnist",
            citation=amnist_builder._CITATION,
        )

    def _split_generators(self, dl_manager):
        manual = amnist_builder.manual_dir_or_none(dl_manager)
        limit = self.builder_config.mnist_limit
        mnist = {}
        for s in ("train", "test"):
            images, labels = mnist_idx.load_idx_arrays_or_fetch("mnist", s, manual,
                                                                dl_manager.download)
            n = len(labels) if limit is None else min(limit, len(labels))
            mnist[s] = images[:n], labels[:n]
        images, labels = amnist_builder.ambiguous_arrays(dl_manager, self.builder_config.ambiguous)
        half = len(labels) // 2
        self.info.metadata.update({
            "mnist_examples": {s: len(mnist[s][1]) for s in mnist},
            "ambiguous_images": {"train": half, "test": len(labels) - half},
            "labels_per_image": int(labels.shape[1]),
        })
        return {s: self._generate_examples(mnist[s], (images, labels), s)
                for s in ("train", "test")}

    def _generate_examples(self, mnist, ambiguous, split):
        images, labels = mnist
        for i in range(len(labels)):
            yield i, {"image": (images[i].astype(np.float32) / np.float32(255.0))[..., None],
                      "label": int(labels[i]), "is_ambiguous": False, "sample_id": i,
                      "pair_id": -1}
        for k, (_, record) in enumerate(amnist_builder.pair_records(*ambiguous, split)):
            del record["label_distribution"]
            yield len(labels) + k, record
