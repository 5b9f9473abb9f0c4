"""Feature-space densities for DDU: class-conditional Gaussians fitted in float64.

    from ddu_tf.density import ClassConditionalGaussians
    gmm = ClassConditionalGaussians.fit(features, labels, num_classes=10)
    gmm.log_density(test_features)   # [batch], the OoD score (higher = in-distribution)
"""
from ddu_tf.density.gmm import JITTER_LADDER, ClassConditionalGaussians, search_jitter
from ddu_tf.density.statistics import ClassStatistics, batch_moments, merge_moments

__all__ = [
    "JITTER_LADDER",
    "ClassConditionalGaussians",
    "ClassStatistics",
    "batch_moments",
    "merge_moments",
    "search_jitter",
]
