"""ddu_tf: Deep Deterministic Uncertainty and Bayesian active learning in TensorFlow/Keras."""
from setuptools import find_packages, setup

setup(
    name="ddu_tf",
    version="0.1.0",
    description=(
        "Deep Deterministic Uncertainty (Mukhoti et al. 2021) and Bayesian deep active "
        "learning (Gal et al. 2017) for TensorFlow/Keras, with TFDS builders for "
        "MNIST-1D, Ambiguous-MNIST and Dirty-MNIST."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ddu_tf", "ddu_tf.*", "tfds_builders", "tfds_builders.*"]),
    package_data={"tfds_builders": ["*/checksums.tsv", "*/dummy_data/**/*", "*/dummy_data/*"],
                  # the generated Ambiguous-MNIST read by ddu_tf.io.ambiguous_mnist
                  "ddu_tf": ["io/data/*.npz"]},
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.21",
        "tf-keras>=2.21",
        "keras>=3.15",
        "tensorboard>=2.20",
        "tensorflow-probability>=0.25",
        "tensorflow-datasets>=4.9.10",
        "keras-tuner>=1.4.8",
        "scikit-learn>=1.5",
        "numpy>=1.26",
        "scipy>=1.11",
        "matplotlib>=3.8",
        "tqdm>=4.66",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "mnist1d==0.0.2.post1",
            "scipy>=1.11",
            "dill>=0.3.8",
            "importlib_resources>=6",
        ],
        # Reference implementations timed against ours; torch 2.13.0 CPU comes from the local wheel.
        "bench": [
            "mnist1d==0.0.2.post1",
            "torch==2.13.0",
            "baal>=2.1",
        ],
    },
)
