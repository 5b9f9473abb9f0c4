"""TFDS builder of MNIST-1D (Greydanus 2020), generated locally (no download).

Configs:
  * ``default``: the reference arguments (5000 samples: 4000 train / 1000 test, seed 42).
  * ``shuffled``: the same samples with the spatial axis permuted by one fixed permutation
    (the reference's ``shuffle_seq=True``: drawn from the same stream after the sample
    permutation), as in the paper's "shuffled MNIST-1D" experiment.
  * ``large``: 100 000 samples (80 000 train / 20 000 test) from the same recipe.

Custom variants: every argument of the reference's ``get_dataset_args()`` (``num_samples``,
``train_split``, ``template_len``, ``padding``, ``scale_coeff``, ``max_translation``,
``corr_noise_scale``, ``iid_noise_scale``, ``shear_scale``, ``shuffle_seq``,
``final_seq_length``, ``seed``) can be passed straight through ``builder_kwargs``::

    ds = tfds.load("mnist1d", split="train",
                   builder_kwargs={"max_translation": 20, "shear_scale": 0.0, "seed": 7})

(equivalently ``config=Mnist1dConfig.variant(max_translation=20, ...)``). Arguments are
validated by ``ddu_tf.io.mnist1d.get_dataset_args`` (``ValueError`` naming the argument).
A variant's config name is derived from its non-default arguments
(``max_translation-20__shear_scale-0.0__seed-7``), so each variant is prepared once in its
own directory; arguments equal to a predefined config's select that config. Every variant
equals the reference package ``mnist1d`` (0.0.2.post1) for the same arguments, cast to
float32.

Features: ``x`` float32 ``[final_seq_length]`` (40 by default; the reference's float64 output
cast to float32; globally standardised, dimensionless), ``y`` ClassLabel(10).

Metadata (``builder.info.metadata``, saved with the prepared data): ``args`` (the generation
arguments), ``t`` (``[final_seq_length]`` float64, the reference's ``t``: template abscissa
resampled and divided by the data std) and ``templates`` (``{"x": [10][12], "t": [12],
"y": [10]}``, the reference's ``templates``), all exact (JSON keeps float64 digits).
``ddu_tf.io.mnist1d.get_templates()`` gives the templates without TFDS.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Union

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

#: Generation arguments a config carries (every field of ``ddu_tf.io.mnist1d.DatasetArgs``).
GENERATION_ARGS = tuple(f.name for f in dataclasses.fields(mnist1d.DatasetArgs))
_DEFAULTS = mnist1d.DatasetArgs()


@dataclasses.dataclass
class Mnist1dConfig(tfds.core.BuilderConfig):
    """A BuilderConfig carrying every MNIST-1D generation argument (reference defaults).

    Fields: those of :class:`ddu_tf.io.mnist1d.DatasetArgs`, validated on construction by
    ``mnist1d.get_dataset_args`` (the single validation; ``ValueError`` naming the argument).
    """

    num_samples: int = _DEFAULTS.num_samples
    train_split: float = _DEFAULTS.train_split
    template_len: int = _DEFAULTS.template_len
    padding: tuple = _DEFAULTS.padding
    scale_coeff: float = _DEFAULTS.scale_coeff
    max_translation: int = _DEFAULTS.max_translation
    corr_noise_scale: float = _DEFAULTS.corr_noise_scale
    iid_noise_scale: float = _DEFAULTS.iid_noise_scale
    shear_scale: float = _DEFAULTS.shear_scale
    shuffle_seq: bool = _DEFAULTS.shuffle_seq
    final_seq_length: int = _DEFAULTS.final_seq_length
    seed: int = _DEFAULTS.seed

    def __post_init__(self):
        self.dataset_args  # validates  # noqa: B018

    @property
    def dataset_args(self) -> mnist1d.DatasetArgs:
        """The generation arguments as a validated :class:`ddu_tf.io.mnist1d.DatasetArgs`."""
        return mnist1d.get_dataset_args(**{k: getattr(self, k) for k in GENERATION_ARGS})

    @classmethod
    def variant(cls, **args) -> "Mnist1dConfig":
        """A config for the given generation arguments (the rest at the reference defaults).

        Its name lists the non-default arguments in field order, ``name-value`` joined by
        ``__`` (``"default"`` when none differ), so different arguments never share a
        prepared directory. Unknown or invalid arguments raise ``ValueError``.
        """
        validated = mnist1d.get_dataset_args(**args)
        for config in Builder.BUILDER_CONFIGS:
            if config.dataset_args == validated:
                return config
        changed = [(k, getattr(validated, k)) for k in GENERATION_ARGS
                   if getattr(validated, k) != getattr(_DEFAULTS, k)]
        name = "__".join(f"{k}-{_format(v)}" for k, v in changed)
        return cls(name=name, description=f"MNIST-1D with {dict(changed)}.",
                   **dataclasses.asdict(validated))


def _format(value: Any) -> str:
    if isinstance(value, tuple):
        return "-".join(str(v) for v in value)
    return str(value)


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for MNIST-1D (see the module docstring for configs and variants)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release, bit-exact with mnist1d 0.0.2.post1.",
        "1.1.0": "Every generation argument in Mnist1dConfig (builder_kwargs); t, templates "
                 "and args in info.metadata. Records of the predefined configs unchanged.",
    }
    BUILDER_CONFIGS = [
        Mnist1dConfig(name="default", description="Reference arguments: 4000 train, 1000 test."),
        Mnist1dConfig(name="shuffled", shuffle_seq=True,
                      description="Reference samples with one fixed permutation of the 40 "
                                  "positions (paper's shuffle experiment)."),
        Mnist1dConfig(name="large", num_samples=100_000,
                      description="100 000 samples: 80 000 train, 20 000 test."),
    ]

    def __init__(self, *, config: Union[None, str, Mnist1dConfig] = None, **kwargs):
        """Args: ``config`` (name or :class:`Mnist1dConfig`), any generation argument (makes a
        :meth:`Mnist1dConfig.variant` on top of ``config``), and TFDS' own keyword arguments."""
        args = {k: kwargs.pop(k) for k in GENERATION_ARGS if k in kwargs}
        if args:
            base = config
            if base is None or isinstance(base, str):
                base = self.builder_configs[base or "default"] if (
                    base or "default") in self.builder_configs else None
                if base is None:
                    raise ValueError(f"Unknown MNIST-1D config {config!r}. Expected one of "
                                     f"{sorted(self.builder_configs)}.")
            config = Mnist1dConfig.variant(**{**dataclasses.asdict(base.dataset_args), **args})
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        args = self.builder_config.dataset_args
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "x": tfds.features.Tensor(shape=(args.final_seq_length,), dtype=np.float32),
                "y": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("x", "y"),
            homepage="https://github.com/greydanus/mnist1d",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,  # keep the reference order (the recipe trains in fixed order)
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # generated locally
        args = self.builder_config.dataset_args
        data = mnist1d.make_dataset(args)
        self.info.metadata.update(metadata_from_dataset(data, args))
        return {
            "train": self._generate_examples(data["x"], data["y"]),
            "test": self._generate_examples(data["x_test"], data["y_test"]),
        }

    def _generate_examples(self, x: np.ndarray, y: np.ndarray):
        """Yields ``(index, {"x": float32 [final_seq_length], "y": int})`` in the reference's
        order."""
        x = x.astype(np.float32)
        for i in range(x.shape[0]):
            yield i, {"x": x[i], "y": int(y[i])}


def metadata_from_dataset(data: Dict[str, Any], args: mnist1d.DatasetArgs) -> Dict[str, Any]:
    """JSON-ready ``{"args", "t", "templates"}`` of a ``mnist1d.make_dataset`` result."""
    return {
        "args": {k: (list(v) if isinstance(v, tuple) else v)
                 for k, v in dataclasses.asdict(args).items()},
        "t": data["t"].tolist(),
        "templates": {k: v.tolist() for k, v in data["templates"].items()},
    }


def metadata_arrays(info: tfds.core.DatasetInfo) -> Dict[str, Any]:
    """``t`` and ``templates`` of a prepared MNIST-1D dataset as NumPy arrays.

    Args:
        info: ``builder.info`` (or the ``info`` of ``tfds.load(..., with_info=True)``).

    Returns:
        ``{"t": float64 [final_seq_length], "templates": {"x": float64 [10, 12],
        "t": float64 [12], "y": int64 [10]}}``, equal to the reference's ``t`` and
        ``templates`` for the same arguments.
    """
    metadata: Optional[dict] = info.metadata
    if not metadata or "t" not in metadata:
        raise ValueError("Expected the metadata of a prepared mnist1d dataset (version >= "
                         "1.1.0). Received: info without 't'; call download_and_prepare().")
    templates = metadata["templates"]
    return {"t": np.asarray(metadata["t"], np.float64),
            "templates": {"x": np.asarray(templates["x"], np.float64),
                          "t": np.asarray(templates["t"], np.float64),
                          "y": np.asarray(templates["y"], np.int64)}}
