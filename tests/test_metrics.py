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
