"""MNIST-1D TFDS builder (registered as ``mnist1d`` on import)."""
from tfds_builders.mnist1d.mnist1d_dataset_builder import Builder

__all__ = ["Builder"]
