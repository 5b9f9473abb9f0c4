"""Ambiguous-MNIST regeneration: chunk draws, compiled scoring vs NumPy/scipy, exact re-decoding,
subsampling, labels, and resumable builds that give identical bytes."""
import dataclasses
import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import scipy.special
import scipy.stats

from ddu_tf import uncertainty
from ddu_tf.generation import ambiguous_mnist as ag
from ddu_tf.io import ambiguous_mnist as amio
from ddu_tf.io import mnist_idx
from ddu_tf.models.lenet import lenet
from experiment_scripts import leftover_temporaries, start_and_kill, subprocess_env

ROOT = pathlib.Path(__file__).resolve().parent.parent
SMALL = dataclasses.replace(ag.TINY_CONFIG, chunk_size=256, batch_size=128)


def _classes(n=300):
    labels = np.random.default_rng(5).permutation(np.arange(n) % 10)
    return labels, ag.ClassIndex.from_labels(labels)


# ---- chunk draws ---------------------------------------------------------------------------
def test_deterministic_ops_are_restored_after_the_block():
    """The build's process-wide switch must not leak into what the process runs afterwards
    (a bayesian_al run after an in-process build computed other floats than in a fresh one)."""
    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled()
    with ag.deterministic_ops():
        assert tf_config.is_op_determinism_enabled()
    assert not tf_config.is_op_determinism_enabled()
    with pytest.raises(RuntimeError, match="inside"):
        with ag.deterministic_ops():
            raise RuntimeError("inside")
    assert not tf_config.is_op_determinism_enabled()


def test_chunk_draws_are_a_pure_function_of_seed_and_chunk():
    labels, classes = _classes()
    a = ag.chunk_draws(7, 3, SMALL, classes)
    ag.chunk_draws(7, 0, SMALL, classes)  # other draws in between change nothing
    np.random.seed(123)
    b = ag.chunk_draws(7, 3, SMALL, classes)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    assert not np.array_equal(a[1], ag.chunk_draws(7, 4, SMALL, classes)[1])
    assert not np.array_equal(a[1], ag.chunk_draws(8, 3, SMALL, classes)[1])


def test_chunk_draws_follow_the_recipe():
    labels, classes = _classes()
    cfg = dataclasses.replace(SMALL, chunk_size=64 * 400)
    src, w = ag.chunk_draws(0, 0, cfg, classes)
    assert src.shape == w.shape == (cfg.chunk_size, 4) and src.dtype == np.int32
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
    assert (w >= 0).all()
    groups_src = src.reshape(-1, 64, 4)
    groups_w = w.reshape(-1, 64, 4)
    assert (groups_src == groups_src[:, :1]).all()  # one set of source images per group
    k = (groups_w > 0).sum(-1)
    assert (k == k[:, :1]).all()  # the same k for the 64 mixtures of a group
    k = k[:, 0]
    assert set(np.unique(k)) == {2, 3, 4}
    assert abs((k == 2).mean() - 1 / 3) < 0.08
    for g in range(len(k)):  # the k active sources have k distinct classes
        active = labels[groups_src[g, 0, :k[g]]]
        assert len(set(active.tolist())) == k[g]
        assert (groups_w[g, :, k[g]:] == 0).all()
    # Dirichlet(1, 1): first weight uniform; Dirichlet(1, 1, 1): first weight Beta(1, 2)
    w2 = groups_w[k == 2][:, :, 0].ravel()
    w3 = groups_w[k == 3][:, :, 0].ravel()
    assert scipy.stats.kstest(w2, "uniform").pvalue > 1e-3
    assert scipy.stats.kstest(w3, scipy.stats.beta(1, 2).cdf).pvalue > 1e-3


def test_class_index_needs_every_class():
    with pytest.raises(ValueError, match="every MNIST class"):
        ag.ClassIndex.from_labels(np.arange(30) % 9)


# ---- compiled scoring ----------------------------------------------------------------------
def _members(n=3):
    out = []
    for m in range(n):
        keras.utils.set_random_seed(40 + m)
        model = lenet()
        for name in ("fc1", "features", "logits"):  # logits x ~300: peaked, varied softmaxes
            k, b = model.get_layer(name).get_weights()
            model.get_layer(name).set_weights([k * 6.7, b])
        out.append(model)
    return out


@pytest.fixture(scope="module")
def scorer_parts():
    labels, classes = _classes()
    vae = ag.VAE(latent_dim=32, seed=3)
    mu = np.random.default_rng(6).normal(size=(len(labels), 32)).astype(np.float32) * 2
    members = _members()
    rec_mean, rec_std = -0.25, 0.8
    scorer = ag.CandidateScorer(vae.decoder, members, mu, rec_mean, rec_std)
    return dict(classes=classes, decoder=vae.decoder, mu=mu, members=members, scorer=scorer,
                rec=(rec_mean, rec_std))


def test_stacked_lenets_equal_the_members():
    members = _members(4)
    x = np.random.default_rng(0).normal(size=(33, 28, 28, 1)).astype(np.float32)
    got = ag.StackedLeNets(members)(x).numpy()
    assert got.shape == (4, 33, 10)
    for m, model in enumerate(members):
        np.testing.assert_allclose(got[m], model(x, training=False).numpy(), rtol=1e-5,
                                   atol=1e-4)


def _numpy_decoder(decoder, z):
    h = z.astype(np.float64)
    for name in ("dec1", "dec2", "dec_logits"):
        k, b = (np.asarray(v, np.float64) for v in decoder.get_layer(name).weights)
        h = h @ k + b
        if name != "dec_logits":
            h = np.maximum(h, 0.0)
    return scipy.special.expit(h)


def test_compiled_scoring_equals_numpy_scipy(scorer_parts):
    p = scorer_parts
    src, w = ag.chunk_draws(0, 0, SMALL, p["classes"])
    src, w = src[::7][:30], w[::7][:30]
    got = p["scorer"].score_numpy(src, w)
    # decoder, post-processing and quantisation, step by step in float64
    z = np.einsum("bk,bkd->bd", w.astype(np.float64), p["mu"][src].astype(np.float64))
    decoded = _numpy_decoder(p["decoder"], z)
    rec_mean, rec_std = p["rec"]
    x = ((decoded - 0.1307) / 0.3081 - rec_mean) / rec_std * 0.3081 + 0.1307
    x = np.clip(1.2 * x - 0.15, 0.0, 1.0)
    q_ref = np.round(255.0 * x)
    pixels = got["pixels"].astype(np.float64)
    clear = np.abs(255.0 * x - np.floor(255.0 * x) - 0.5) > 1e-3  # not at a rounding tie
    np.testing.assert_array_equal(pixels[clear], q_ref[clear])
    assert np.abs(pixels - q_ref).max() <= 1
    assert 0 < pixels.mean() < 255  # a real range of grey levels, not all clipped
    np.testing.assert_array_equal(got["fingerprint"],
                                  got["pixels"].astype(np.int64) @ ag.FINGERPRINT_WEIGHTS)
    # scores of the quantised images: each member separately, scipy entropies
    xn = ((pixels / 255.0 - 0.1307) / 0.3081).astype(np.float32).reshape(-1, 28, 28, 1)
    log_p = np.stack([scipy.special.log_softmax(m(xn, training=False).numpy().astype(np.float64),
                                                -1) for m in p["members"]])
    probs = np.exp(log_p)
    p_bar = probs.mean(0)
    pe = scipy.stats.entropy(p_bar, axis=-1)
    mi = pe - np.mean([scipy.stats.entropy(pm, axis=-1) for pm in probs], 0)
    assert pe.std() > 0.02 and mi.min() > 0.1  # non-trivial scores are compared
    np.testing.assert_allclose(got["probs"], p_bar, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["predictive_entropy"], pe, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["mutual_information"], mi, rtol=1e-3, atol=2e-5)


def test_uncertainty_maths_on_log_probs_matches_scipy():
    """`ddu_tf.uncertainty` (used by the scorer) on member log-probs, vs scipy."""
    rng = np.random.default_rng(0)
    log_p = scipy.special.log_softmax(rng.normal(size=(5, 7, 10)) * 3, -1)
    probs = np.exp(log_p)
    pe = uncertainty.ensemble_predictive_entropy(log_p).numpy()
    mi = uncertainty.ensemble_mutual_information(log_p).numpy()
    np.testing.assert_allclose(pe, scipy.stats.entropy(probs.mean(0), axis=-1), rtol=1e-12)
    expected_mi = pe - np.mean([scipy.stats.entropy(p, axis=-1) for p in probs], 0)
    np.testing.assert_allclose(mi, expected_mi, rtol=1e-10, atol=1e-12)
    with np.errstate(divide="ignore"):  # one-hot members: PE = MI = 0, no NaN
        one_hot = np.log(np.eye(10)[[3]])[None].repeat(4, 0)
    assert uncertainty.ensemble_predictive_entropy(one_hot).numpy()[0] == 0.0
    assert uncertainty.ensemble_mutual_information(one_hot).numpy()[0] == 0.0


def test_score_chunk_keeps_only_filtered_and_decoding_is_exact(scorer_parts):
    p = scorer_parts
    # reference: every candidate of chunks 0 and 1, scored in the chunk's own batches
    full = []
    for c in (0, 1):
        src, w = ag.chunk_draws(SMALL.seed, c, SMALL, p["classes"])
        parts = [p["scorer"].score_numpy(src[i:i + SMALL.batch_size], w[i:i + SMALL.batch_size])
                 for i in range(0, SMALL.chunk_size, SMALL.batch_size)]
        full.append({k: np.concatenate([q[k] for q in parts]) for k in parts[0]})
    # thresholds inside the range of these (untrained) members' scores, so some fail each test
    pe, mi = full[1]["predictive_entropy"], full[1]["mutual_information"]
    cfg = dataclasses.replace(SMALL, mi_threshold=float(np.quantile(mi, 0.7)),
                              pe_min=float(np.quantile(pe, 0.2)),
                              pe_max=float(np.quantile(pe, 0.9)))
    kept = ag.score_chunk(p["scorer"], 1, cfg, p["classes"])
    mask = ag.keep_mask(full[1]["predictive_entropy"], full[1]["mutual_information"], cfg)
    assert 0 < mask.sum() < cfg.chunk_size
    np.testing.assert_array_equal(kept["index"], np.flatnonzero(mask))
    for k in ("predictive_entropy", "mutual_information", "probs", "fingerprint"):
        np.testing.assert_array_equal(kept[k], full[1][k][mask])
    # decode 45 candidates in another order and batch: the pixels that were scored
    rng = np.random.default_rng(0)
    chunk_ids = rng.integers(0, 2, 45)
    index = rng.integers(0, cfg.chunk_size, 45)
    fps = np.array([full[c]["fingerprint"][i] for c, i in zip(chunk_ids, index)])
    pixels, _ = ag.decode_candidates(p["scorer"], chunk_ids, index, fps, cfg, p["classes"])
    expected = np.stack([full[c]["pixels"][i] for c, i in zip(chunk_ids, index)])
    np.testing.assert_array_equal(pixels, expected)
    fps[4] += 1  # a fingerprint no batch reproduces
    with pytest.raises(RuntimeError, match=f"chunk {chunk_ids[4]}"):
        ag.decode_candidates(p["scorer"], chunk_ids, index, fps, cfg, p["classes"])


# ---- selection, labels, statistics ---------------------------------------------------------
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


def test_total_variation_and_official_histograms():
    assert ag.total_variation([1, 1], [1, 0]) == 0.5
    assert ag.total_variation([2, 2, 0], [0, 1, 1]) == 0.5
    assert ag.total_variation([3, 1], [30, 10]) == 0.0
    assert sum(ag.OFFICIAL_POOL_HIST) == 4_197_114 and len(ag.OFFICIAL_POOL_HIST) == 50
    assert sum(ag.OFFICIAL_TEST_HIST) == 6024 and len(ag.OFFICIAL_TEST_HIST) == 16
    # values at the official bin centres, in the official proportions -> distance 0
    lo, hi = ag.OFFICIAL_TEST_RANGE
    centres = lo + (np.arange(16) + 0.5) * (hi - lo) / 16
    h = ag.histogram_vs_official(np.repeat(centres, ag.OFFICIAL_TEST_HIST), ag.OFFICIAL_TEST_HIST,
                                 ag.OFFICIAL_TEST_RANGE)
    assert h["counts"] == list(ag.OFFICIAL_TEST_HIST) and h["total_variation"] == 0.0


def test_post_process_formula():
    p = np.array([[0.0, 0.1307, 0.5, 1.0]], np.float32)
    out = np.asarray(ag.post_process(p, rec_mean=0.0, rec_std=1.0))
    # with mu_r = 0, s_r = 1 the standardisation is the identity: clip(1.2 p - 0.15, 0, 1)
    np.testing.assert_allclose(out, np.clip(1.2 * p - 0.15, 0, 1), atol=1e-6)
    out2 = np.asarray(ag.post_process(p, rec_mean=0.5, rec_std=2.0))
    x = ((p - 0.1307) / 0.3081 - 0.5) / 2.0 * 0.3081 + 0.1307
    np.testing.assert_allclose(out2, np.clip(1.2 * x - 0.15, 0, 1), atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="even num_images"):
        ag.GenerationConfig(num_images=11).validate()
    with pytest.raises(ValueError, match="num_candidates"):
        dataclasses.replace(SMALL, num_candidates=1000).validate()
    with pytest.raises(ValueError, match="batch_size"):
        dataclasses.replace(SMALL, batch_size=100).validate()
    with pytest.raises(ValueError, match="combos_per_group"):
        dataclasses.replace(SMALL, chunk_size=100, batch_size=50).validate()
    ag.GenerationConfig().validate()
    ag.TINY_CONFIG.validate()
    assert ag.GenerationConfig().num_chunks * 65536 == ag.GenerationConfig().num_candidates


# ---- whole builds (MNIST) ------------------------------------------------------------------
def _check_recipe(d, cfg):
    n = cfg.num_images
    assert d.images.shape == (n, 28, 28) and d.images.dtype == np.float32
    assert d.images.min() >= 0.0 and d.images.max() <= 1.0
    assert d.labels.shape == (n, 10) and d.labels.min() >= 0 and d.labels.max() <= 9
    assert (d.mutual_information <= cfg.mi_threshold).all()
    assert (d.predictive_entropy >= cfg.hist_min).all()
    assert (d.predictive_entropy <= cfg.hist_max).all()
    np.testing.assert_allclose(d.probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(d.predictive_entropy, scipy.stats.entropy(d.probs, axis=1),
                               rtol=1e-4, atol=1e-5)
    assert (np.take_along_axis(d.probs, d.labels, 1) > 0).all()  # labels drawn from probs
    m = d.metadata
    assert m["config"] == cfg.to_json()
    assert m["counts"]["candidates"] == cfg.num_candidates
    assert n <= m["counts"]["candidates_kept"] <= cfg.num_candidates
    assert m["max_mutual_information"] == pytest.approx(float(d.mutual_information.max()))
    test_h = m["test_pe_histogram"]
    assert sum(test_h["counts"]) == n // 2
    assert test_h["official_counts"] == list(ag.OFFICIAL_TEST_HIST)
    assert 0.0 <= test_h["total_variation"] <= 1.0


@pytest.mark.skipif(amio.GENERATED_SHA256 is None or not amio.DEFAULT_PATH.is_file(),
                    reason="no shipped file yet: ddu_tf/io/data/ambiguous_mnist_generated.npz "
                           "with its digest in ddu_tf.io.ambiguous_mnist.GENERATED_SHA256")
def test_shipped_file_checksum_shapes_and_recipe_constraints():
    """The shipped file: SHA-256 (checked by load_generated), 12000 x 28 x 28 images in [0, 1],
    10 labels in 0..9 each, MI <= 0.05, PE in the selection range and = H[probs]."""
    d = amio.load_generated()
    assert amio.file_digest(amio.DEFAULT_PATH) == amio.GENERATED_SHA256
    _check_recipe(d, ag.GenerationConfig(**d.metadata["config"]))
    assert d.metadata["config"] == ag.GenerationConfig().to_json()


@pytest.mark.real_data
def test_tiny_build_resumes_to_identical_bytes(tmp_path):
    """Interrupted at chunk and at model granularity (files removed), the build resumes in
    the same process to the same bytes; the file reads back and follows the recipe."""
    images, labels = mnist_idx.load_idx_arrays("mnist", "train")
    cfg = ag.TINY_CONFIG
    work = tmp_path / "work"
    first = ag.generate(images, labels, cfg, work_dir=work, command="test")
    sha = ag.write(first, tmp_path / "first.npz")
    for c in range(4, cfg.num_chunks):
        (work / "chunks" / f"chunk_{c:06d}.npz").unlink()
    (work / "lenet_1.weights.h5").unlink()  # retrained identically
    again = ag.generate(images, labels, cfg, work_dir=work, command="test")
    assert again.timings["candidates_scored_now"] == (cfg.num_chunks - 4) * cfg.chunk_size
    assert ag.write(again, tmp_path / "again.npz") == sha
    d = amio.load_generated(tmp_path / "again.npz", sha256=sha)
    _check_recipe(d, cfg)
    np.testing.assert_array_equal(d.images, first.images)
    other = dataclasses.replace(cfg, seed=1)
    with pytest.raises(ValueError, match="another config"):
        ag.generate(images, labels, other, work_dir=work)


@pytest.mark.real_data
@pytest.mark.slow
def test_cli_killed_and_rerun_gives_the_bytes_of_an_uninterrupted_run(tmp_path):
    """SIGKILL after the first chunks, the same command again -> the uninterrupted bytes."""
    script = [sys.executable, str(ROOT / "experiments" / "build_ambiguous_mnist.py"), "--tiny"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    def args(name):
        return ["--work-dir", str(tmp_path / name), "--output", str(tmp_path / f"{name}.npz")]

    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    reference = subprocess.Popen(script + args("ref"), **quiet)
    victim = subprocess.Popen(script + args("run"), **quiet)
    chunks = tmp_path / "run" / "chunks"
    deadline = time.time() + 600
    while len(list(chunks.glob("chunk_*.npz"))) < 2:
        assert victim.poll() is None, "the build ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = len(list(chunks.glob("chunk_*.npz")))
    assert 2 <= done < ag.TINY_CONFIG.num_chunks and not (tmp_path / "run.npz").exists()
    rerun = subprocess.run(script + args("run"), capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{done}/{ag.TINY_CONFIG.num_chunks} chunks already done" in rerun.stdout
    assert "candidates/s" in rerun.stdout and "ETA" in rerun.stdout
    assert reference.wait(timeout=600) == 0
    ref_bytes = (tmp_path / "ref.npz").read_bytes()
    assert (tmp_path / "run.npz").read_bytes() == ref_bytes
    d = amio.load_generated(tmp_path / "run.npz", sha256=hashlib.sha256(ref_bytes).hexdigest())
    _check_recipe(d, ag.TINY_CONFIG)
    assert d.metadata["command"] == "python experiments/build_ambiguous_mnist.py --config tiny"


_TFDS_BUILD = ("import sys, tensorflow_datasets as tfds\n"
               "from tfds_builders.ambiguous_mnist import ambiguous_mnist_dataset_builder\n"
               "tfds.builder('ambiguous_mnist/generated_tiny', data_dir=sys.argv[1])"
               ".download_and_prepare()\n")


@pytest.mark.real_data
@pytest.mark.slow  # a subprocess + 2 builds: ~2 min on the loaded 2-core machine
def test_tfds_build_killed_at_a_random_point_resumes_exactly(tmp_path):
    """`ambiguous_mnist/generated_tiny` built by TFDS in a subprocess, SIGKILLed a random delay
    into the recipe (after its work directory appeared), then built again: the records equal
    an uninterrupted build's, and no incomplete TFDS directory, work directory, partial file
    or temporary directory of the recipe is left."""
    import tensorflow_datasets as tfds
    from tfds_builders.ambiguous_mnist import ambiguous_mnist_dataset_builder  # noqa: F401

    def build(data_dir):
        builder = tfds.builder("ambiguous_mnist/generated_tiny", data_dir=data_dir)
        builder.download_and_prepare()
        return {split: tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
                for split in ("train", "test")}

    reference = build(tmp_path / "reference")
    resumed, temp = tmp_path / "resumed", tmp_path / "tmp"
    temp.mkdir()
    work = resumed / "downloads"
    start_and_kill(["-c", _TFDS_BUILD, resumed], seed=14, max_delay=8.0,
                   ready=lambda: any(work.glob("ambiguous_mnist_recipe_tiny_*/build.json")),
                   log_path=tmp_path / "killed.log", env=subprocess_env(TMPDIR=str(temp)))
    again = build(resumed)
    for split in ("train", "test"):
        assert again[split].keys() == reference[split].keys()
        for key in reference[split]:
            np.testing.assert_array_equal(again[split][key], reference[split][key], err_msg=key)
    assert leftover_temporaries(resumed) == []
    assert not list(work.glob("ambiguous_mnist_recipe_*"))
    assert [p.name for p in (resumed / "ambiguous_mnist" / "generated_tiny").iterdir()] == ["2.0.0"]
    assert not list(temp.glob("ddu_tf_*"))  # the recipe's own temporary directories
