"""Ambiguous-MNIST regeneration: scoring maths vs scipy, subsampling, labels, seeded run."""
import numpy as np
import pytest
import scipy.special
import scipy.stats

from ddu_tf.generation import ambiguous_mnist as ag
from ddu_tf.io import mnist_idx


def test_ensemble_scores_match_scipy_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 7, 10)) * 3
    log_p = scipy.special.log_softmax(logits, -1)
    p_bar, pe, mi = ag.ensemble_scores(log_p)
    probs = np.exp(log_p)
    np.testing.assert_allclose(p_bar, probs.mean(0))
    np.testing.assert_allclose(pe, scipy.stats.entropy(probs.mean(0), axis=-1), rtol=1e-12)
    expected_mi = pe - np.mean([scipy.stats.entropy(p, axis=-1) for p in probs], 0)
    np.testing.assert_allclose(mi, expected_mi, rtol=1e-10, atol=1e-12)
    assert (mi >= -1e-12).all()  # Jensen: MI >= 0
    # identical members -> MI = 0; one-hot -> PE = 0 (0 log 0 = 0, no NaN)
    with np.errstate(divide="ignore"):
        one_hot = np.log(np.eye(10)[[3]])[None].repeat(4, 0)
    _, pe1, mi1 = ag.ensemble_scores(one_hot)
    assert pe1[0] == 0.0 and mi1[0] == 0.0


def test_flattened_subsample_quota_and_flattening():
    rng = np.random.default_rng(1)
    # 3 occupied bins of 10 over [0, 1]: counts 1000, 100, 10
    pe = np.concatenate([np.full(1000, 0.05), np.full(100, 0.55), np.full(10, 0.95)])
    pe = pe + rng.uniform(0, 0.04, len(pe))
    chosen = ag.flattened_subsample(pe, 300, rng, bins=10, lo=0.0, hi=1.0, power=0.2)
    assert len(chosen) == 300 and len(np.unique(chosen)) == 300
    got = np.bincount(np.minimum((pe[chosen] * 10).astype(int), 9), minlength=10)
    # hand-computed: weights 1000^.2=3.98, 100^.2=2.51, 10^.2=1.58 -> shares of 300 are
    # 147.9, 93.3, 58.9 -> 147, 93, 10 (capped); the other 50 split 3.98:2.51 -> +30, +7 (bin 5
    # capped at 100); the last 13 go to bin 0 -> 190, 100, 10
    assert got[[0, 5, 9]].tolist() == [190, 100, 10]
    assert got.sum() == 300
    with pytest.raises(ValueError, match="num_candidates"):
        ag.flattened_subsample(pe, 2000, rng, bins=10, lo=0.0, hi=1.0)


def test_sample_labels_follow_probabilities():
    rng = np.random.default_rng(2)
    probs = np.array([[0.7, 0.2, 0.1] + [0.0] * 7, [0.0] * 9 + [1.0]])
    labels = ag.sample_labels(np.repeat(probs, 2000, 0), 10, rng)
    assert labels.shape == (4000, 10) and labels.dtype == np.int64
    freq = np.bincount(labels[:2000].ravel(), minlength=10) / 20000
    np.testing.assert_allclose(freq[:3], [0.7, 0.2, 0.1], atol=0.015)
    assert (labels[2000:] == 9).all()
    np.testing.assert_array_equal(ag.label_entropy(np.array([[1] * 10, [0] * 5 + [1] * 5])),
                                  [0.0, np.log(2)])


def test_post_process_formula():
    p = np.array([[0.0, 0.1307, 0.5, 1.0]], np.float32)
    out = ag.post_process(p, rec_mean=0.0, rec_std=1.0)
    # with mu_r = 0, s_r = 1 the standardisation is the identity: clip(1.2 p - 0.15, 0, 1)
    np.testing.assert_allclose(out, np.clip(1.2 * p - 0.15, 0, 1), atol=1e-6)
    out2 = ag.post_process(p, rec_mean=0.5, rec_std=2.0)
    x = ((p - 0.1307) / 0.3081 - 0.5) / 2.0 * 0.3081 + 0.1307
    np.testing.assert_allclose(out2, np.clip(1.2 * x - 0.15, 0, 1), atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="even num_images"):
        ag.GenerationConfig(num_images=11).validate()
    with pytest.raises(ValueError, match="num_candidates"):
        ag.GenerationConfig(num_images=20, num_candidates=100).validate()


@pytest.mark.real_data
def test_tiny_generation_is_seeded_and_follows_the_recipe():
    images, labels = mnist_idx.load_idx_arrays("mnist", "train")
    cfg = ag.TINY_CONFIG
    a = ag.generate(images, labels, cfg)
    b = ag.generate(images, labels, cfg)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.labels.tobytes() == b.labels.tobytes()
    n = cfg.num_images
    assert a.images.shape == (n, 28, 28) and a.images.dtype == np.float32
    assert a.images.min() >= 0.0 and a.images.max() <= 1.0
    assert a.labels.shape == (n, 10) and a.labels.min() >= 0 and a.labels.max() <= 9
    assert (a.mutual_information <= cfg.mi_threshold + 1e-6).all()
    assert (a.predictive_entropy >= cfg.hist_min).all()
    assert (a.predictive_entropy <= cfg.hist_max).all()
    np.testing.assert_allclose(a.probs.sum(1), 1.0, rtol=1e-5)
    # every sampled label has positive ensemble probability
    assert (np.take_along_axis(a.probs, a.labels, 1) > 0).all()
    assert a.info["candidates"] == cfg.num_candidates
    assert a.info["candidates_kept"] >= n
