"""ddu_tf.metrics against hand-computed cases and scikit-learn."""
import numpy as np
import pytest

from ddu_tf import metrics as M


def test_accuracy():
    assert M.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    with pytest.raises(ValueError, match="equal length"):
        M.accuracy([0, 1], [0])


def test_ece_hand_computed_with_original_binning():
    # 15 bins; bin index ceil(15 c - 1): 0.2 -> 2, 1/3 -> ceil(4 - 1) = 4 (upper edge stays in
    # bin 4, i.e. (4/15, 5/15]), 0.9 -> 13, 1.0 -> 14.
    conf = np.array([0.2, 0.2, 1.0 / 3.0, 0.9, 0.9, 0.9, 0.9, 1.0])
    preds = np.array([0, 0, 1, 1, 1, 1, 1, 2])
    labels = np.array([0, 1, 1, 1, 1, 1, 0, 2])
    # bin 2: acc 1/2, conf 0.2 -> |0.3| * 2/8; bin 4: acc 1, conf 1/3 -> 2/3 * 1/8;
    # bin 13: acc 3/4, conf 0.9 -> 0.15 * 4/8; bin 14: acc 1, conf 1 -> 0.
    expected = 0.3 * 2 / 8 + (2.0 / 3.0) / 8 + 0.15 * 4 / 8
    assert M.expected_calibration_error(conf, preds, labels, num_bins=15) == pytest.approx(
        expected, rel=1e-12
    )


def test_ece_from_probs_and_bounds():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1])
    expected = M.expected_calibration_error([0.9, 0.6, 0.7], [0, 0, 1], labels)
    assert M.ece_from_probs(probs, labels) == expected
    with pytest.raises(ValueError, match="confidences in"):
        M.expected_calibration_error([1.5], [0], [0])


def test_auroc_auprc_directions_match_original():
    from sklearn.metrics import average_precision_score, roc_auc_score

    in_scores = np.array([0.1, 0.4, 0.35, 0.8])
    ood_scores = np.array([0.9, 0.3, 0.7])
    # Uncertainty score: OoD positive.
    y = np.r_[np.zeros(4), np.ones(3)]
    s = np.r_[in_scores, ood_scores]
    au, ap = M.ood_auroc_auprc(in_scores, ood_scores, higher_is_uncertain=True)
    assert au == pytest.approx(roc_auc_score(y, s))
    assert ap == pytest.approx(average_precision_score(y, s))
    # Hand count: pairs (in, ood) with ood > in: 0.9 beats 4, 0.3 beats 1, 0.7 beats 3 -> 8/12.
    assert au == pytest.approx(8 / 12)
    # Confidence score: in-distribution positive (labels flipped, score unchanged).
    au_c, ap_c = M.ood_auroc_auprc(in_scores, ood_scores, higher_is_uncertain=False)
    assert au_c == pytest.approx(roc_auc_score(1 - y, s)) == pytest.approx(4 / 12)
    assert ap_c == pytest.approx(average_precision_score(1 - y, s))


def test_auroc_rejects_non_finite_or_empty():
    with pytest.raises(ValueError, match="finite"):
        M.ood_auroc_auprc([0.0, np.nan], [1.0], higher_is_uncertain=True)
    with pytest.raises(ValueError, match="non-empty"):
        M.ood_auroc_auprc([], [1.0], higher_is_uncertain=True)


@pytest.mark.parametrize("higher_is_uncertain", [True, False])
@pytest.mark.parametrize("tpr", [0.95, 0.8, 1.0])
def test_fpr_at_tpr_matches_sklearn_roc_curve(higher_is_uncertain, tpr):
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(0)
    # Rounded scores so that ties occur inside and across the two sets.
    in_scores = np.round(rng.normal(0.0, 1.0, 203), 1)
    out_scores = np.round(rng.normal(1.0, 1.0, 97), 1)
    if not higher_is_uncertain:
        in_scores, out_scores = -in_scores, -out_scores
    sign = -1.0 if higher_is_uncertain else 1.0  # confidence = higher means in-distribution
    y = np.r_[np.ones(in_scores.size), np.zeros(out_scores.size)]
    fpr, tprs, _ = roc_curve(y, sign * np.r_[in_scores, out_scores], drop_intermediate=False)
    expected = fpr[np.argmax(tprs >= tpr)]
    got = M.fpr_at_tpr(in_scores, out_scores, tpr=tpr, higher_is_uncertain=higher_is_uncertain)
    assert got == pytest.approx(expected, abs=1e-12)


def test_fpr_at_tpr_hand_case():
    # Entropies: 20 in-distribution samples 0.0..1.9, the 95% threshold keeps the 19 lowest
    # (<= 1.8); OoD entropies 1.5, 1.8 (tie: accepted), 1.85, 3.0 -> 2 of 4 accepted.
    in_scores = np.arange(20) / 10.0
    out_scores = np.array([1.5, 1.8, 1.85, 3.0])
    assert M.fpr_at_tpr(in_scores, out_scores, higher_is_uncertain=True) == 0.5
    # The same as a confidence score (negated) gives the same FPR; a perfect detector gives 0.
    assert M.fpr_at_tpr(-in_scores, -out_scores, higher_is_uncertain=False) == 0.5
    assert M.fpr_at_tpr(in_scores, out_scores + 10, higher_is_uncertain=True) == 0.0
    with pytest.raises(ValueError, match="tpr"):
        M.fpr_at_tpr(in_scores, out_scores, tpr=0.0, higher_is_uncertain=True)


def test_nll_and_brier_against_sklearn_and_hand_case():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=50)
    labels = rng.integers(0, 4, 50)
    assert M.nll(probs, labels) == pytest.approx(log_loss(labels, probs, labels=range(4)),
                                                 rel=1e-10)
    # Hand case: p = [[0.5, 0.5, 0], [0.1, 0.2, 0.7]], y = [0, 2].
    p = np.array([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
    y = np.array([0, 2])
    assert M.nll(p, y) == pytest.approx(-(np.log(0.5) + np.log(0.7)) / 2, rel=1e-12)
    # (0.25 + 0.25 + 0) and (0.01 + 0.04 + 0.09) -> mean 0.32.
    assert M.brier_score(p, y) == pytest.approx(0.32, rel=1e-12)
    # Perfect and worst predictions bound the score in [0, 2]; a zero-probability label -> inf.
    onehot = np.eye(3)[[0, 2]]
    assert M.brier_score(onehot, y) == 0.0
    assert M.brier_score(np.eye(3)[[1, 0]], y) == 2.0
    assert M.nll(np.eye(3)[[1, 2]], y) == np.inf


def test_nll_brier_reject_logits_and_bad_labels():
    with pytest.raises(ValueError, match="softmax probabilities"):
        M.nll(np.array([[2.0, -1.0]]), np.array([0]))
    with pytest.raises(ValueError, match="labels in"):
        M.brier_score(np.array([[0.5, 0.5]]), np.array([2]))
    with pytest.raises(ValueError, match="shape"):
        M.brier_score(np.array([0.5, 0.5]), np.array([0]))
