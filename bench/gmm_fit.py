"""Benchmark: DDU GMM fit + score, ddu_tf vs the original's torch recipe, in the same run.

Reference (torch, CPU): per-class means and centred covariances as in
``omegafragger/DDU utils/gmm_utils.py``, then the serial jitter loop: for eps in
``[0, tiny, 1e-308, ..., 1e-1]`` build ``torch.distributions.MultivariateNormal(mu,
Sigma + eps I)`` and keep the first that does not raise (catching the Cholesky RuntimeError
and the constraint ValueError, i.e. the loop as intended, which newer torch error messages
break in the original). Scoring: ``log_prob(z[:, None, :])`` then ``logsumexp``.

Ours: ``ClassConditionalGaussians.fit`` (float64, batched and de-duplicated jitter search)
and its compiled chunked scoring.

Two cases on ``n x dim`` float64 features with ``classes`` classes:

- ``well-conditioned``: full-rank class covariances; eps = 0 works at once.
- ``needs-jitter``: some classes' features lie in a ``rank < dim`` subspace, so the
  covariance is singular and the serial loop walks ~300 ladder steps.

Usage: ``python bench/gmm_fit.py [--n 50000 --dim 512 --classes 10 --score-n 10000]``.
Prints seconds for both, the ratio torch/ours, the chosen jitters and the max score gap.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # silence the per-failure Cholesky warnings
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402  (bench-only reference)

from ddu_tf.density import JITTER_LADDER, ClassConditionalGaussians  # noqa: E402


def make_features(rng, n, dim, classes, deficient_classes, rank):
    """Class-clustered features; the first ``deficient_classes`` classes have rank ``rank``."""
    labels = np.arange(n) % classes
    features = np.empty((n, dim))
    for c in range(classes):
        idx = np.flatnonzero(labels == c)
        k = rank if c < deficient_classes else dim
        basis = rng.normal(size=(k, dim)) / np.sqrt(k)
        features[idx] = rng.normal(size=(idx.size, k)) @ basis + rng.normal(scale=2.0, size=dim)
    return features, labels


def torch_fit_score(features, labels, classes, test, batch_size):
    """The original's gmm_fit + gmm_get_logits + logsumexp, with a working except-clause."""
    emb = torch.from_numpy(features)
    lab = torch.from_numpy(labels)
    start = time.perf_counter()
    with torch.no_grad():
        means = torch.stack([emb[lab == c].mean(dim=0) for c in range(classes)])
        covs = []
        for c in range(classes):
            centred = emb[lab == c] - means[c]
            covs.append(centred.t().mm(centred) / (centred.shape[0] - 1))
        covs = torch.stack(covs)
        eye = torch.eye(covs.shape[1], dtype=covs.dtype).unsqueeze(0)
        gmm, jitter = None, None
        for eps in JITTER_LADDER:
            try:
                gmm = torch.distributions.MultivariateNormal(loc=means, covariance_matrix=covs + eps * eye)
            except (RuntimeError, ValueError):
                continue
            jitter = float(eps)
            break
        fit_s = time.perf_counter() - start
        z = torch.from_numpy(test)
        start = time.perf_counter()
        scores = torch.cat(
            [torch.logsumexp(gmm.log_prob(z[i:i + batch_size, None, :]), dim=1)
             for i in range(0, z.shape[0], batch_size)]
        )
        score_s = time.perf_counter() - start
    return fit_s, score_s, jitter, scores.numpy()


def ours_fit_score(features, labels, classes, test, batch_size):
    start = time.perf_counter()
    gmm = ClassConditionalGaussians.fit(features, labels, num_classes=classes)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = gmm.scores(test, batch_size=batch_size)["log_density"].numpy()
    score_s = time.perf_counter() - start
    return fit_s, score_s, gmm.jitter, scores


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="training features")
    parser.add_argument("--dim", type=int, default=512, help="feature dimension")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--score-n", type=int, default=10_000, help="features to score")
    parser.add_argument("--batch-size", type=int, default=1024, help="scoring chunk")
    parser.add_argument("--rank", type=int, default=None,
                        help="rank of the deficient classes (default dim * 3 // 4)")
    parser.add_argument("--deficient-classes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rank = args.rank or args.dim * 3 // 4
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"n={args.n} dim={args.dim} classes={args.classes} score_n={args.score_n}")
    cases = [("well-conditioned", 0), ("needs-jitter", args.deficient_classes)]
    for name, deficient in cases:
        rng = np.random.default_rng(args.seed)
        x, y = make_features(rng, args.n, args.dim, args.classes, deficient, rank)
        test = x[rng.permutation(args.n)[: args.score_n]]
        # Warm-up of TF's compiled functions on a tiny problem (not timed).
        ours_fit_score(x[: 40 * args.classes], y[: 40 * args.classes], args.classes, test[:8], 8)
        o_fit, o_score, o_eps, o_scores = ours_fit_score(x, y, args.classes, test, args.batch_size)
        t_fit, t_score, t_eps, t_scores = torch_fit_score(x, y, args.classes, test, args.batch_size)
        gap = np.max(np.abs(o_scores - t_scores) / np.maximum(1.0, np.abs(t_scores)))
        print(f"[{name}] deficient classes={deficient} (rank {rank if deficient else args.dim})")
        print(f"  jitter: ours {o_eps:g}, torch {t_eps:g}; max rel. score gap {gap:.2e}")
        print(f"  fit   : ours {o_fit:8.2f} s   torch {t_fit:8.2f} s   ratio torch/ours {t_fit / o_fit:6.1f}x")
        print(f"  score : ours {o_score:8.2f} s   torch {t_score:8.2f} s   ratio torch/ours {t_score / o_score:6.1f}x")
        total_o, total_t = o_fit + o_score, t_fit + t_score
        print(f"  total : ours {total_o:8.2f} s   torch {total_t:8.2f} s   ratio torch/ours {total_t / total_o:6.1f}x")


if __name__ == "__main__":
    main()
