"""Evaluation plots as PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emobench_common.fileio import atomic_write_bytes
from training.metrics import normalized_confusion_matrix


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_confusion_matrix(cm: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path,
                          *, title: str = "Confusion matrix (row-normalised)") -> Path:
    """Write the row-normalised confusion matrix, each cell labelled with its share and count."""
    plt = _pyplot()
    norm = normalized_confusion_matrix(cm)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.7 * n))
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{norm[i][j]:.2f}\n({int(cm[i][j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i][j] > 0.5 else "black")
    return _save(fig, path)


def plot_per_class(metrics: Mapping[str, Any], path: str | Path, *, title: str = "Per-class metrics") -> Path:
    """Write grouped bars of precision, recall and F1 per class (``metrics`` from ``classification_metrics``)."""
    plt = _pyplot()
    per_class = metrics["per_class"]
    names = list(per_class)
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(names), 3.8))
    width = 0.27
    for k, key in enumerate(("precision", "recall", "f1")):
        xs = [i + (k - 1) * width for i in range(len(names))]
        ax.bar(xs, [per_class[n][key] for n in names], width, label=key)
    ax.set_xticks(range(len(names)), [f"{n}\n(n={per_class[n]['support']})" for n in names])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(f"{title} (accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['f1_macro']:.3f})")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
