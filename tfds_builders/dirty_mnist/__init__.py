"""Dirty-MNIST TFDS builder (registered as ``dirty_mnist`` on import).

MNIST + Ambiguous-MNIST, 120k train / 70k test; configs ``official``, ``generated``,
``generated_tiny``.
"""
from tfds_builders.dirty_mnist.dirty_mnist_dataset_builder import Builder

__all__ = ["Builder"]
