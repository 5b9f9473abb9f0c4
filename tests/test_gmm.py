"""ddu_tf.density against scipy / numpy oracles (tiny sizes: runs in a few seconds)."""
import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from ddu_tf.density import (
    JITTER_LADDER,
    ClassConditionalGaussians,
    ClassStatistics,
    search_jitter,
)


def _data(rng, n=240, dim=5, classes=3, offset=0.0):
    labels = np.arange(n) % classes
    centres = rng.normal(scale=3.0, size=(classes, dim))
    mixing = rng.normal(size=(classes, dim, dim))
    noise = rng.normal(size=(n, dim))
    features = centres[labels] + np.einsum("nd,nde->ne", noise, mixing[labels]) + offset
    return features, labels


def _serial_ladder_oracle(covariances):
    """The original's loop, in NumPy: first eps where every class's Cholesky succeeds."""
    eye = np.eye(covariances.shape[-1])
    for eps in JITTER_LADDER:
        try:
            for cov in covariances:
                np.linalg.cholesky(cov + eps * eye)
        except np.linalg.LinAlgError:
            continue
        return eps
    raise AssertionError("no jitter works")


def _serial_tf_oracle(covariances):
    """The same serial loop with TensorFlow's Cholesky (NaN = failure), one matrix at a time."""
    eye = np.eye(covariances.shape[-1])
    for eps in JITTER_LADDER:
        if all(np.all(np.isfinite(np.tril(tf.linalg.cholesky(cov + eps * eye).numpy())))
               for cov in covariances):
            return eps
    raise AssertionError("no jitter works")


def _ladder_index(eps):
    return int(np.flatnonzero(JITTER_LADDER == eps)[0])


def test_ladder_matches_original():
    assert JITTER_LADDER.shape == (310,)
    assert JITTER_LADDER[0] == 0.0 and JITTER_LADDER[1] == np.finfo(np.float64).tiny
    assert JITTER_LADDER[2] == 1e-308 and JITTER_LADDER[-1] == 1e-1


def test_log_densities_match_scipy():
    rng = np.random.default_rng(0)
    x, y = _data(rng)
    gmm = ClassConditionalGaussians.fit(x, y, num_classes=3)
    assert gmm.jitter == 0.0
    z = rng.normal(scale=3.0, size=(7, 5))
    oracle = np.stack(
        [
            stats.multivariate_normal(x[y == c].mean(0), np.cov(x[y == c], rowvar=False)).logpdf(z)
            for c in range(3)
        ],
        axis=1,
    )
    scores = gmm.scores(z, batch_size=3)  # 3 compiled calls, the last one partial
    np.testing.assert_allclose(scores["class_log_densities"].numpy(), oracle, rtol=1e-8)
    np.testing.assert_allclose(
        gmm.components.log_prob(z[:, None, :]).numpy(), oracle, rtol=1e-8
    )
    np.testing.assert_allclose(
        scores["log_density"].numpy(), special.logsumexp(oracle, axis=1), rtol=1e-8
    )
    priors = np.bincount(y) / y.size
    np.testing.assert_allclose(
        scores["weighted_log_density"].numpy(),
        special.logsumexp(oracle + np.log(priors), axis=1),
        rtol=1e-8,
    )
    np.testing.assert_allclose(
        gmm.mixture.log_prob(z).numpy(), scores["weighted_log_density"].numpy(), rtol=1e-10
    )
    assert gmm.class_log_densities(z).shape == (7, 3)
    assert gmm.log_density(z).dtype.name == "float64"


def test_rank_deficient_class_gets_smallest_working_jitter():
    rng = np.random.default_rng(1)
    x, y = _data(rng, n=90, dim=12, classes=3)
    # Class 1 keeps only 4 samples (< dim): its covariance has rank 3.
    keep = (y != 1) | (np.cumsum(y == 1) <= 4)
    x, y = x[keep], y[keep]
    gmm = ClassConditionalGaussians.fit(x, y, num_classes=3)
    covariances = gmm.covariances.numpy()
    # Exactly the serial loop's answer for the same Cholesky (Eigen LLT via TF) ...
    assert gmm.jitter == _serial_tf_oracle(covariances) > 0.0
    # ... and within one ladder step of LAPACK's (NumPy / torch), which may round differently
    # on these numerically singular matrices.
    assert abs(_ladder_index(gmm.jitter) - _ladder_index(_serial_ladder_oracle(covariances))) <= 1
    assert np.all(np.isfinite(gmm.class_log_densities(x).numpy()))


def test_search_jitter_dedup_is_exact_on_zero_variance_feature():
    # A dead feature (zero variance) makes every ladder step a distinct matrix.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 4))
    x[:, 2] = 0.0
    cov = np.cov(x, rowvar=False)[None]
    eps, chol = search_jitter(cov, chunk_bytes=1)
    assert eps == _serial_ladder_oracle(cov)
    np.testing.assert_allclose(
        chol.numpy()[0] @ chol.numpy()[0].T, cov[0] + eps * np.eye(4), rtol=1e-12, atol=1e-300
    )


def test_non_finite_features_raise():
    x = np.ones((6, 2))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite features"):
        ClassConditionalGaussians.fit(x, np.arange(6) % 2, num_classes=2)
    x[3, 1] = np.inf
    with pytest.raises(ValueError, match="finite features"):
        ClassConditionalGaussians.fit(x, np.arange(6) % 2, num_classes=2)


def test_empty_class_raises():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match=r"classes \[2\]"):
        ClassConditionalGaussians.fit(rng.normal(size=(10, 2)), np.arange(10) % 2, num_classes=3)


@pytest.mark.parametrize("labels", [np.array([0, 1, 2, 3]), np.array([0, 1, -1, 1])])
def test_labels_out_of_range_raise(labels):
    with pytest.raises(ValueError, match="labels in"):
        ClassConditionalGaussians.fit(np.zeros((4, 2)), labels, num_classes=3)


def test_wrong_scoring_shape_raises():
    rng = np.random.default_rng(4)
    x, y = _data(rng, n=30, dim=3, classes=2)
    gmm = ClassConditionalGaussians.fit(x, y, num_classes=2)
    with pytest.raises(ValueError, match=r"\[batch, 3\]"):
        gmm.log_density(np.zeros((2, 4)))


def test_streamed_equals_two_pass_with_large_offset():
    rng = np.random.default_rng(5)
    x, y = _data(rng, n=600, dim=4, classes=3, offset=1e6)
    batches = [(x[i:i + 37], y[i:i + 37]) for i in range(0, len(y), 37)]
    streamed = ClassStatistics.from_batches(batches, num_classes=3)
    in_memory_stats = ClassStatistics.from_batch(x, y, num_classes=3)
    for c in range(3):
        # Two-pass oracle in extended precision (80-bit long double on x86).
        xc = x[y == c].astype(np.longdouble)
        mean = xc.mean(axis=0)
        two_pass = ((xc - mean).T @ (xc - mean) / (len(xc) - 1)).astype(np.float64)
        np.testing.assert_allclose(streamed.means.numpy()[c], mean.astype(np.float64), rtol=1e-15)
        np.testing.assert_allclose(streamed.covariances().numpy()[c], two_pass, rtol=1e-10)
        np.testing.assert_allclose(in_memory_stats.covariances().numpy()[c], two_pass, rtol=1e-10)
    # Merge order does not matter (replicas may finish in any order).
    halves = [ClassStatistics.from_batches(batches[k::2], num_classes=3) for k in (0, 1)]
    merged = halves[1].merge(halves[0])
    np.testing.assert_allclose(merged.covariances().numpy(), streamed.covariances().numpy(),
                               rtol=1e-10)
    in_memory = ClassConditionalGaussians.fit(x, y, num_classes=3)
    from_stream = ClassConditionalGaussians.fit_batches(batches, num_classes=3)
    z = x[:5]
    np.testing.assert_allclose(
        from_stream.class_log_densities(z).numpy(),
        in_memory.class_log_densities(z).numpy(),
        rtol=1e-8,
    )


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    x, y = _data(rng, n=60, dim=3, classes=2)
    gmm = ClassConditionalGaussians.fit(x, y, num_classes=2)
    path = gmm.save(tmp_path / "gmm")
    loaded = ClassConditionalGaussians.load(path)
    assert loaded.jitter == gmm.jitter
    np.testing.assert_array_equal(loaded.class_log_densities(x).numpy(),
                                  gmm.class_log_densities(x).numpy())
    np.testing.assert_array_equal(loaded.class_priors.numpy(), gmm.class_priors.numpy())


def test_streaming_with_classes_missing_from_batches():
    # Sorted labels: most batches hold a single class, exercising the empty-side merge.
    rng = np.random.default_rng(7)
    x, y = _data(rng, n=90, dim=3, classes=3, offset=50.0)
    order = np.argsort(y, kind="stable")
    x, y = x[order], y[order]
    stats = ClassStatistics.empty(num_classes=3, dim=3)
    for i in range(0, 90, 20):
        stats = stats.merge(ClassStatistics.from_batch(x[i:i + 20], y[i:i + 20], num_classes=3))
    np.testing.assert_array_equal(stats.counts.numpy(), [30, 30, 30])
    for c in range(3):
        np.testing.assert_allclose(stats.means.numpy()[c], x[y == c].mean(0), rtol=1e-14)
        np.testing.assert_allclose(stats.covariances().numpy()[c], np.cov(x[y == c], rowvar=False),
                                   rtol=1e-10)


def test_blocked_paths_match_oracles_above_block_width():
    # dim 150 > GRAM_BLOCK = SCORE_BLOCK = 128: two column blocks, the last one partial, in
    # the block-triangular scatter and in the blocked scoring products.
    from ddu_tf.density import batch_moments
    from ddu_tf.density.gmm import SCORE_BLOCK
    from ddu_tf.density.statistics import GRAM_BLOCK

    dim = 150
    assert GRAM_BLOCK < dim < 2 * GRAM_BLOCK and SCORE_BLOCK < dim < 2 * SCORE_BLOCK
    rng = np.random.default_rng(8)
    x, y = _data(rng, n=1200, dim=dim, classes=3, offset=20.0)
    moments = ClassStatistics.from_batch(x, y, num_classes=3)  # host path, class by class
    graph = batch_moments(tf.constant(x), tf.constant(y, tf.int32), 3)  # dynamic_partition
    means = [x[y == c].mean(0) for c in range(3)]
    covariances = [np.cov(x[y == c], rowvar=False) for c in range(3)]
    for c in range(3):
        np.testing.assert_allclose(moments.covariances().numpy()[c], covariances[c],
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(graph[3].numpy()[c] / (np.sum(y == c) - 1), covariances[c],
                                   rtol=1e-9, atol=1e-12)
    scatter = moments.scatter.numpy()
    np.testing.assert_array_equal(scatter, np.swapaxes(scatter, 1, 2))  # exactly symmetric
    gmm = ClassConditionalGaussians.from_statistics(moments)
    assert gmm.jitter == 0.0
    z = np.concatenate([x[:5], rng.normal(loc=20.0, scale=4.0, size=(4, dim))])
    oracle = np.stack([stats.multivariate_normal(means[c], covariances[c]).logpdf(z)
                       for c in range(3)], axis=1)
    scores = gmm.scores(z, batch_size=4)  # 3 compiled calls, the last one partial
    np.testing.assert_allclose(scores["class_log_densities"].numpy(), oracle, rtol=1e-8)
    np.testing.assert_allclose(scores["class_log_densities"].numpy(),
                               gmm.components.log_prob(z[:, None, :]).numpy(), rtol=1e-10)
    np.testing.assert_allclose(scores["weighted_log_density"].numpy(),
                               gmm.mixture.log_prob(z).numpy(), rtol=1e-10)


@pytest.mark.parametrize("chunk_bytes", [1, 2**30])
def test_search_jitter_with_classes_needing_different_jitters(chunk_bytes):
    # Class 0 is positive definite, class 1 singular (rank 3 of 6), class 2 indefinite with
    # smallest eigenvalue -1e-6: the serial loop's answer is the first eps fixing class 2.
    rng = np.random.default_rng(9)
    basis = rng.normal(size=(6, 6))
    pd = basis @ basis.T + np.eye(6)
    singular = basis[:, :3] @ basis[:, :3].T
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    indefinite = q @ np.diag([-1e-6, 1.0, 2.0, 3.0, 4.0, 5.0]) @ q.T
    covariances = np.stack([pd, singular, (indefinite + indefinite.T) / 2])
    eps, chol = search_jitter(covariances, chunk_bytes=chunk_bytes)
    assert eps == _serial_tf_oracle(covariances) >= 1e-6
    assert abs(_ladder_index(eps) - _ladder_index(_serial_ladder_oracle(covariances))) <= 1
    for c in range(3):
        np.testing.assert_allclose(chol.numpy()[c] @ chol.numpy()[c].T,
                                   covariances[c] + eps * np.eye(6), rtol=1e-10, atol=1e-12)


def test_jitter_search_holds_back_tf_cholesky_warnings():
    # 10 samples per class in 20 dimensions: every class covariance is singular, so the
    # search factorises failing matrices and TF's C++ kernel logs one line per failure (seen
    # with TF's default C++ log level, hence a subprocess: conftest raises the level).
    import os
    import subprocess
    import sys
    code = (
        "import logging, numpy as np\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from ddu_tf.density import ClassConditionalGaussians\n"
        "rng = np.random.default_rng(4)\n"
        "g = ClassConditionalGaussians.fit(rng.normal(size=(30, 20)), np.arange(30) % 3, 3)\n"
        "print(g.jitter)\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300, check=True)
    assert float(run.stdout.split()[-1]) > 0.0
    assert "Cholesky decomposition was not successful" not in run.stderr
    counts = [int(line.split("search: ")[1].split()[0]) for line in run.stderr.splitlines()
              if "GMM jitter search" in line]
    assert len(counts) == 1 and counts[0] >= 3  # the held-back lines, counted once


def test_held_back_stderr_keeps_other_lines(capfd):
    import os

    from ddu_tf.density.gmm import _cholesky_warnings_counted
    capfd.readouterr()
    with _cholesky_warnings_counted() as failures:
        os.write(2, b"W Cholesky decomposition was not successful. x\nkept line\n")
    err = capfd.readouterr().err
    assert failures == [1]
    assert "kept line" in err and "Cholesky" not in err
