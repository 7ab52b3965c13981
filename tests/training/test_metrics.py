"""Metrics against a hand computation, and the plots they feed."""

from __future__ import annotations

import pytest
from PIL import Image

from training.metrics import classification_metrics, confusion_matrix, normalized_confusion_matrix
from training.plots import plot_confusion_matrix, plot_per_class

CLASSES = ["anger", "happy", "sad"]
# 8 samples. True: anger x3, happy x3, sad x2.
Y_TRUE = [0, 0, 0, 1, 1, 1, 2, 2]
Y_PRED = [0, 0, 1, 1, 1, 2, 2, 0]


def test_metrics_match_a_hand_computation():
    m = classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    # Confusion matrix by hand (rows true, cols predicted).
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 1], [1, 0, 1]]
    # Correct: 2 + 2 + 1 = 5 of 8.
    assert m["accuracy"] == pytest.approx(5 / 8)
    # anger: P = 2/3 (predicted 3, 2 right), R = 2/3; happy: P = 2/3, R = 2/3; sad: P = 1/2, R = 1/2.
    pc = m["per_class"]
    assert pc["anger"]["precision"] == pytest.approx(2 / 3) and pc["anger"]["recall"] == pytest.approx(2 / 3)
    assert pc["happy"]["precision"] == pytest.approx(2 / 3) and pc["happy"]["recall"] == pytest.approx(2 / 3)
    assert pc["sad"]["precision"] == pytest.approx(1 / 2) and pc["sad"]["recall"] == pytest.approx(1 / 2)
    assert [pc[c]["support"] for c in CLASSES] == [3, 3, 2]
    # F1 = P = R where P == R.
    assert pc["sad"]["f1"] == pytest.approx(0.5)
    # Weighted by support 3, 3, 2 of 8.
    weighted = (3 * 2 / 3 + 3 * 2 / 3 + 2 * 0.5) / 8
    assert m["precision_weighted"] == pytest.approx(weighted)
    assert m["recall_weighted"] == pytest.approx(weighted)
    assert m["f1_weighted"] == pytest.approx(weighted)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 0.5) / 3)


def test_a_class_never_predicted_scores_zero_not_nan():
    m = classification_metrics([0, 1, 2], [0, 0, 0], CLASSES)
    assert m["per_class"]["happy"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["anger"]["precision"] == pytest.approx(1 / 3)
    assert m["f1_macro"] == pytest.approx((0.5 + 0 + 0) / 3)


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="0..2"):
        confusion_matrix([0, 3], [0, 0], 3)
    norm = normalized_confusion_matrix([[2, 2], [0, 0]])
    assert norm.tolist() == [[0.5, 0.5], [0.0, 0.0]]


def test_plots_are_pngs(tmp_path):
    m = classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    for path in (plot_confusion_matrix(m["confusion_matrix"], CLASSES, tmp_path / "cm.png"),
                 plot_per_class(m, tmp_path / "pc.png")):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 200
