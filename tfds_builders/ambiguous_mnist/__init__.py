"""Ambiguous-MNIST TFDS builder (registered as ``ambiguous_mnist`` on import).

Configs: ``official`` (released files), ``generated`` (offline regeneration from MNIST),
``generated_tiny`` (smoke-test scale).
"""
from tfds_builders.ambiguous_mnist.ambiguous_mnist_dataset_builder import Builder

__all__ = ["Builder"]
