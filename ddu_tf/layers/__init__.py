"""Keras 3 layers for DDU: soft spectral normalisation (``SpectralNormalization``)."""
from ddu_tf.layers.spectral_norm import SpectralNormalization

__all__ = ["SpectralNormalization"]
