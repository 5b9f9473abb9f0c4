"""Feature-space densities for DDU: class-conditional Gaussians fitted in float64.

    from ddu_tf.density import ClassConditionalGaussians
    gmm = ClassConditionalGaussians.fit(features, labels, num_classes=10)
    gmm.log_density(test_features)   # [batch], the OoD score (higher = in-distribution)

Over a dataset sharded across ``tf.distribute`` replicas: ``distributed_class_statistics``
(``ddu_tf.density.distributed``) then ``ClassConditionalGaussians.from_statistics``.

Other feature-space OoD detectors behind one interface (``ddu_tf.density.detectors``):
``ClassGaussians`` (DDU), ``SharedGaussian`` (Mahalanobis, Lee et al. 2018) and
``KNNDistance`` (Sun et al. 2022); every ``score`` is ``[batch]``, higher = in-distribution.
"""
from ddu_tf.density.gmm import JITTER_LADDER, ClassConditionalGaussians, search_jitter
from ddu_tf.density.statistics import ClassStatistics, batch_moments, merge_moments
from ddu_tf.density.distributed import distributed_class_statistics  # noqa: E402
from ddu_tf.density.detectors import (DETECTORS, ClassGaussians, FeatureDetector,  # noqa: E402
                                      KNNDistance, SharedGaussian, get_detector_class)

__all__ = [
    "DETECTORS",
    "ClassGaussians",
    "FeatureDetector",
    "KNNDistance",
    "SharedGaussian",
    "get_detector_class",
    "JITTER_LADDER",
    "ClassConditionalGaussians",
    "ClassStatistics",
    "batch_moments",
    "distributed_class_statistics",
    "merge_moments",
    "search_jitter",
]
