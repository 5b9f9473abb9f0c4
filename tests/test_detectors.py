"""ddu_tf.density.detectors against scikit-learn / scipy on the same features (tiny sizes)."""
import numpy as np
import pytest
from scipy import special, stats
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.neighbors import NearestNeighbors

from ddu_tf.density import (DETECTORS, ClassConditionalGaussians, ClassGaussians,
                            ClassStatistics, KNNDistance, SharedGaussian, get_detector_class)


def _data(seed=0, n=300, dim=6, classes=3):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(scale=3.0, size=(classes, dim))
    mixing = rng.normal(size=(dim, dim))
    features = centres[labels] + rng.normal(size=(n, dim)) @ mixing
    return features, labels, rng.normal(scale=4.0, size=(50, dim))


def test_shared_gaussian_matches_sklearn_lda():
    x, y, queries = _data()
    detector = SharedGaussian.fit(x, y, num_classes=3)
    lda = LinearDiscriminantAnalysis(solver="lsqr", store_covariance=True).fit(x, y)
    np.testing.assert_allclose(detector.covariance.numpy(), lda.covariance_, rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(detector.gaussians.means.numpy(), lda.means_, rtol=1e-12)
    assert detector.gaussians.jitter == 0.0
    # Posterior of the shared-covariance Gaussians with class priors = LDA's.
    cld = detector.class_log_densities(queries).numpy()
    log_posterior = cld + np.log(lda.priors_) - special.logsumexp(
        cld + np.log(lda.priors_), axis=1, keepdims=True)
    np.testing.assert_allclose(log_posterior, lda.predict_log_proba(queries), atol=1e-8)
    # Score = max_c log N(z | mu_c, Sigma): scipy's density with sklearn's parameters.
    oracle = np.max([stats.multivariate_normal(m, lda.covariance_).logpdf(queries)
                     for m in lda.means_], axis=0)
    np.testing.assert_allclose(detector.score(queries), oracle, rtol=1e-10)


def test_shared_gaussian_streamed_equals_in_memory():
    x, y, queries = _data(seed=1)
    stats_ = ClassStatistics.from_batches(
        [(x[i:i + 64], y[i:i + 64]) for i in range(0, len(x), 64)], num_classes=3)
    streamed = SharedGaussian.from_statistics(stats_)
    np.testing.assert_allclose(streamed.score(queries),
                               SharedGaussian.fit(x, y, 3).score(queries), rtol=1e-11)


def test_class_gaussians_is_ddu_log_density():
    x, y, queries = _data(seed=2)
    detector = ClassGaussians.fit(x, y, num_classes=3)
    gmm = ClassConditionalGaussians.fit(x, y, num_classes=3)
    np.testing.assert_allclose(detector.score(queries, batch_size=7),
                               gmm.log_density(queries).numpy(), rtol=1e-11)
    oracle = special.logsumexp(
        [stats.multivariate_normal(x[y == c].mean(0), np.cov(x[y == c].T)).logpdf(queries)
         for c in range(3)], axis=0)
    np.testing.assert_allclose(detector.score(queries), oracle, rtol=1e-9)


@pytest.mark.parametrize("k", [1, 5])
def test_knn_matches_sklearn_nearest_neighbors(k):
    x, _, queries = _data(seed=3)
    detector = KNNDistance.from_features(x, k=k)
    bank = x / np.linalg.norm(x, axis=1, keepdims=True)
    nn = NearestNeighbors(n_neighbors=k).fit(bank)
    distances, _ = nn.kneighbors(queries / np.linalg.norm(queries, axis=1, keepdims=True))
    np.testing.assert_allclose(detector.score(queries), -distances[:, -1], atol=2e-6)
    # The score depends on the direction of z only.
    np.testing.assert_allclose(detector.score(3.5 * queries), detector.score(queries),
                               atol=1e-6)


def test_training_points_score_higher_than_far_points():
    x, y, _ = _data(seed=4)
    far = 50.0 * np.random.default_rng(5).normal(size=(40, x.shape[1]))
    for kind, cls in DETECTORS.items():
        detector = cls.fit(x, y, num_classes=3, **({"k": 5} if kind == "knn" else {}))
        assert np.median(detector.score(x)) > np.median(detector.score(far)), kind


def test_bad_input_is_rejected():
    x, y, _ = _data()
    with pytest.raises(ValueError, match="detector kind"):
        get_detector_class("mahalanobis")
    with pytest.raises(ValueError, match="at least k=400"):
        KNNDistance.from_features(x, k=400)
    detector = SharedGaussian.fit(x, y, num_classes=3)
    with pytest.raises(ValueError, match=r"\[batch, 6\]"):
        detector.score(x[:, :4])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        detector.score(bad)
    with pytest.raises(ValueError, match="at least 1 sample per class"):
        SharedGaussian.fit(x, y, num_classes=4)
