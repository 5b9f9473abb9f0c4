"""TFDS builder of Ambiguous-MNIST (Mukhoti et al. 2021, BlackHC/ddu_dirty_mnist).

Configs:
  official: the released ``amnist_samples.pt`` / ``amnist_labels.pt`` (12k images x 10 labels),
    read from the manual dir (``<manual_dir>/ambiguous_mnist/`` or ``$DDU_TF_DATA_DIR``) or
    downloaded from the GitHub release ``data-v1.0.0``; MD5-verified; parsed without torch.
  generated: the regenerated set shipped with the package
    (`ddu_tf.io.ambiguous_mnist.DEFAULT_PATH`, SHA-256 checked by
    `ddu_tf.io.ambiguous_mnist.load_generated`). Nothing is trained at load time: preparing it
    takes seconds and needs no MNIST. A missing or corrupt file is one error naming the rebuild
    command (`ddu_tf.io.ambiguous_mnist.REBUILD_COMMAND`).
  generated_tiny: the generation recipe run at smoke-test scale (20 images; seconds; needs MNIST
    train from the manual dir, ``$DDU_TF_DATA_DIR`` or a download).
  Any other generated file (e.g. a rebuild, or a small file in tests) through ``builder_kwargs``:

    tfds.load("ambiguous_mnist", split="train",
              builder_kwargs={"generated_file": path, "generated_sha256": hex_digest})

  which prepares the config ``file_<first 16 hex digits of the digest>`` (one directory per file
  content).

Published order (``disable_shuffling``): each example is one flattened (image, label) pair; pair
``j`` = image ``j // 10`` with its ``(j % 10)``-th label, stored in increasing ``j``, so an image's
10 labels are adjacent and ``train[:10 * k]`` holds exactly the first ``k`` images. The first half
of the pairs (60k for 12k images) is ``train``, the rest ``test``. Images are stored as float32
``[28, 28, 1]`` (zlib-compressed Tensor feature), so the released float values in [0, 1] are kept
bit-exactly (a uint8 image would round them).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
import shutil
from typing import Optional, Tuple, Union

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.constants import INCOMPLETE_PREFIX

from ddu_tf.io import ambiguous_mnist as amnist_io
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

#: Where the images and labels of a config come from.
SOURCES = ("official", "file", "recipe")

VERSION = tfds.core.Version("2.0.0")
RELEASE_NOTES = {
    "1.0.0": "Initial release.",
    "2.0.0": "Published order (disable_shuffling): pairs in flattened order, an image's 10 labels "
             "adjacent; every record has `is_ambiguous` and the source image id `sample_id`; "
             "`generated` reads the shipped SHA-256-checked file (no training at load time); "
             "other generated files via builder_kwargs generated_file / generated_sha256.",
}


@dataclasses.dataclass
class AmbiguousMnistConfig(tfds.core.BuilderConfig):
    """Where the images and labels come from (``source`` in `SOURCES`).

    Attributes:
      source: "official" (release files), "file" (a generated file read by
        `ddu_tf.io.ambiguous_mnist.load_generated`) or "recipe" (run the generation recipe).
      generated_file: for "file": the path; None = the shipped file.
      generated_sha256: for "file": its hex SHA-256; None = the shipped file's
        `ddu_tf.io.ambiguous_mnist.GENERATED_SHA256`.
      recipe: for "recipe": a key of `ddu_tf.generation.ambiguous_mnist.CONFIGS`.
    """

    source: str = "official"
    generated_file: Optional[str] = None
    generated_sha256: Optional[str] = None
    recipe: Optional[str] = None

    @classmethod
    def for_file(cls, generated_file: Union[str, os.PathLike],
                 generated_sha256: str) -> "AmbiguousMnistConfig":
        """The config reading ``generated_file``, named ``file_<16 hex digits of the digest>``.

        Raises:
          ValueError: ``generated_sha256`` is not 64 hex digits.
        """
        digest = str(generated_sha256).lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError("Expected generated_sha256 to be a hex SHA-256 (64 digits; "
                             "`sha256sum <file>`). Received: "
                             f"generated_sha256={generated_sha256!r}")
        return cls(name=f"file_{digest[:16]}", source="file",
                   generated_file=os.fspath(generated_file), generated_sha256=digest,
                   description=f"A generated Ambiguous-MNIST file (SHA-256 {digest}).")


def config_from_kwargs(config, kwargs):
    """Turns ``generated_file`` / ``generated_sha256`` in ``kwargs`` (popped) into the config to
    build: `AmbiguousMnistConfig.for_file`. Returns ``config`` unchanged without them.

    Raises:
      ValueError: only one of the two is given, or they come with a ``config`` other than
        ``generated``.
    """
    path, digest = kwargs.pop("generated_file", None), kwargs.pop("generated_sha256", None)
    if path is None and digest is None:
        return config
    if path is None or digest is None:
        raise ValueError("Expected both generated_file and generated_sha256 (a generated file is "
                         "read only with its digest). Received: "
                         f"generated_file={path!r}, generated_sha256={digest!r}")
    name = getattr(config, "name", config)
    if name not in (None, "generated"):
        raise ValueError("Expected generated_file with config None or 'generated'. Received: "
                         f"config={name!r}")
    return AmbiguousMnistConfig.for_file(path, digest)


def manual_dir_or_none(dl_manager) -> Optional[str]:
    """The TFDS manual dir if one exists and is non-empty, else None."""
    try:
        return os.fspath(dl_manager.manual_dir)
    except (AssertionError, ValueError):
        return None


def official_arrays(dl_manager):
    """Official images float32 [N, 28, 28] and labels int64 [N, 10]: manual dir, then
    ``$DDU_TF_DATA_DIR``, then download through ``dl_manager``; MD5-verified either way."""
    found = amnist_io.find_ambiguous_files(manual_dir_or_none(dl_manager))
    if found is None:
        try:
            found = dl_manager.download({role: amnist_io.AMBIGUOUS_URL + name
                                         for role, (name, _) in
                                         amnist_io.AMBIGUOUS_FILES.items()})
        except Exception as e:  # network / DNS / HTTP failures differ by TFDS backend
            raise amnist_io.ambiguous_missing_error(manual_dir_or_none(dl_manager)) from e
    return amnist_io.read_official_ambiguous(found["samples"], found["labels"])


def file_arrays(config: AmbiguousMnistConfig) -> Tuple[np.ndarray, np.ndarray]:
    """Images float32 [N, 28, 28] in [0, 1] and labels int64 [N, 10] of a generated file.

    Raises:
      FileNotFoundError, ddu_tf.io.ambiguous_mnist.GeneratedFileError: from `load_generated`
        (missing file, digest mismatch, bad format), with the config named and the rebuild
        command in the message.
    """
    try:
        data = amnist_io.load_generated(config.generated_file, config.generated_sha256)
    except (FileNotFoundError, amnist_io.GeneratedFileError) as e:
        raise type(e)(f"ambiguous_mnist/{config.name}: {e} (Other configs: `official` reads "
                      "the released files, `generated_tiny` runs the recipe at test scale.)"
                      ) from e
    return data.images, data.labels


def recipe_arrays(dl_manager, recipe: str) -> Tuple[np.ndarray, np.ndarray]:
    """Runs the generation recipe ``recipe`` on MNIST train (manual dir, env var or download).

    The recipe keeps its resumable state (trained models, finished chunks) in
    ``<download dir>/ambiguous_mnist_recipe_<recipe>_<config digest>``, so a build killed
    mid-way continues from there when rerun (same bytes as an uninterrupted build); the
    directory is deleted once the arrays are made. The generator trains models (it sits above
    ``ddu_tf.models``), so it is imported here, only for this smoke-test config.
    """
    from ddu_tf.generation import ambiguous_mnist as generation

    images, labels = mnist_idx.load_idx_arrays_or_fetch(
        "mnist", "train", manual_dir_or_none(dl_manager), dl_manager.download)
    config = generation.CONFIGS[recipe]
    work_dir = (pathlib.Path(dl_manager.download_dir)
                / f"ambiguous_mnist_recipe_{recipe}_{config.digest()[:16]}")
    result = generation.generate(images, labels, config, work_dir=work_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    logging.info("ambiguous_mnist generation: %s", result.info)
    return result.images, result.labels


def ambiguous_arrays(dl_manager, config: AmbiguousMnistConfig) -> Tuple[np.ndarray, np.ndarray]:
    """Images float32 ``[N, 28, 28]`` in [0, 1] and labels int64 ``[N, 10]`` of ``config``."""
    if config.source == "official":
        return official_arrays(dl_manager)
    if config.source == "file":
        return file_arrays(config)
    if config.source == "recipe":
        return recipe_arrays(dl_manager, config.recipe)
    raise ValueError(f"Expected config.source in {SOURCES}. Received: {config.source!r}")


def pair_records(images: np.ndarray, labels: np.ndarray, split: str):
    """``(key, record)`` of one split's pairs in published order
    (`ddu_tf.io.ambiguous_mnist.flatten_pairs`).

    ``key`` is the global pair index ``j``; ``record`` has ``image`` float32 [28, 28, 1],
    ``label``, ``is_ambiguous`` (True), ``sample_id`` (image ``j // 10``), ``pair_id`` (``j``)
    and ``label_distribution`` float32 [10] (the image's empirical label distribution).
    """
    pairs = amnist_io.flatten_pairs(images, labels, split)
    for i in range(len(pairs["label"])):
        yield int(pairs["pair_id"][i]), {
            "image": pairs["images"][i][..., None],
            "label": int(pairs["label"][i]),
            "is_ambiguous": True,
            "sample_id": int(pairs["sample_id"][i]),
            "pair_id": int(pairs["pair_id"][i]),
            "label_distribution": pairs["label_distribution"][i],
        }


class Builder(tfds.core.GeneratorBasedBuilder):
    """Ambiguous-MNIST: flattened (image, label) pairs with the image's label distribution."""

    VERSION = VERSION
    RELEASE_NOTES = RELEASE_NOTES
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Offline use: put the files in the manual dir (or in $DDU_TF_DATA_DIR) as
      ambiguous_mnist/amnist_samples.pt, ambiguous_mnist/amnist_labels.pt   (config `official`,
        from {amnist_io.AMBIGUOUS_URL})
      mnist/train-images-idx3-ubyte.gz, mnist/train-labels-idx1-ubyte.gz  (config
        `generated_tiny`, from {mnist_idx.URLS['mnist']})
    Without them the builder downloads from those URLs. `generated` needs no download: it reads
    the file shipped in the package ({amnist_io.DEFAULT_PATH.name}).
    """
    BUILDER_CONFIGS = [
        AmbiguousMnistConfig(
            name="official", source="official",
            description="The released Ambiguous-MNIST (data-v1.0.0): 12k images x 10 labels."),
        AmbiguousMnistConfig(
            name="generated", source="file",
            description="The regenerated Ambiguous-MNIST shipped with ddu_tf (SHA-256 checked; "
                        "12k images x 10 labels; rebuilt by experiments/"
                        "build_ambiguous_mnist.py)."),
        AmbiguousMnistConfig(
            name="generated_tiny", source="recipe", recipe="tiny",
            description="The generation recipe at smoke-test scale (20 images; trains a small "
                        "VAE and 2 LeNets in seconds)."),
    ]

    def __init__(self, *, config=None, **kwargs):
        """Args: ``config`` (name or `AmbiguousMnistConfig`), ``generated_file`` and
        ``generated_sha256`` (read that generated file, see module docstring), TFDS' own."""
        super().__init__(config=config_from_kwargs(config, kwargs),
                         **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.float32,
                                              encoding=tfds.features.Encoding.ZLIB),
                "label": tfds.features.ClassLabel(num_classes=10),
                "is_ambiguous": tfds.features.Scalar(dtype=np.bool_,
                                                     doc="Always True (as in dirty_mnist)."),
                "sample_id": tfds.features.Scalar(dtype=np.int64,
                                                  doc="Index of the source image."),
                "pair_id": tfds.features.Scalar(dtype=np.int64,
                                                doc="Flattened pair index = 10 * image + slot."),
                "label_distribution": tfds.features.Tensor(shape=(10,), dtype=np.float32),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage="https://github.com/BlackHC/ddu_dirty_mnist",
            citation=_CITATION,
        )

    def download_and_prepare(self, *args, **kwargs):
        """TFDS' ``download_and_prepare``, then the removal of this version's stale
        ``incomplete.*`` directories: TFDS writes into ``incomplete.<random>_<version>`` and
        renames it when done, so a build killed mid-way leaves one behind, which the rerun's
        finished build makes obsolete."""
        super().download_and_prepare(*args, **kwargs)
        stale = re.compile(
            rf"^{re.escape(INCOMPLETE_PREFIX)}[A-Z0-9]+_{re.escape(str(self.version))}$")
        for entry in self.data_path.parent.iterdir():
            if entry.is_dir() and stale.match(entry.name):
                shutil.rmtree(entry, ignore_errors=True)

    def _split_generators(self, dl_manager):
        images, labels = ambiguous_arrays(dl_manager, self.builder_config)
        return {split: self._generate_examples(images, labels, split)
                for split in ("train", "test")}

    def _generate_examples(self, images, labels, split):
        return pair_records(images, labels, split)
