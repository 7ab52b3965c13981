"""Classification metrics as pure functions over label sequences (no torch, no I/O).

Definitions follow scikit-learn's: per-class precision = TP / (TP + FP), recall = TP / (TP + FN),
F1 = 2PR / (P + R), each 0.0 where its denominator is 0; weighted averages weigh each class by its
support (true count); macro F1 is the unweighted mean over the task's classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = how many samples of true class ``i`` were predicted as ``j``."""
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den != 0)


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, weighted P/R/F1, macro F1, per-class P/R/F1/support and the confusion matrix.

    Args:
        y_true: true class indices into ``class_names``.
        y_pred: predicted class indices.
        class_names: the task's classes, in label order.

    Returns:
        ``{"accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "f1_macro", "num_samples",
        "per_class": {name: {"precision", "recall", "f1", "support"}}, "confusion_matrix": [[...]],
        "class_names": [...]}`` with plain Python numbers.
    """
    n = len(class_names)
    cm = confusion_matrix(y_true, y_pred, n).astype(np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = support.sum()
    weights = support / total if total else np.zeros(n)
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "precision_weighted": float((precision * weights).sum()),
        "recall_weighted": float((recall * weights).sum()),
        "f1_weighted": float((f1 * weights).sum()),
        "f1_macro": float(f1.mean()) if n else 0.0,
        "num_samples": int(total),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.astype(np.int64).tolist(),
        "class_names": list(class_names),
    }


def normalized_confusion_matrix(cm: Sequence[Sequence[int]]) -> np.ndarray:
    """Each row divided by its total (the recall view); rows without samples stay 0."""
    m = np.asarray(cm, dtype=np.float64)
    return _safe_div(m, m.sum(axis=1, keepdims=True) * np.ones_like(m))
