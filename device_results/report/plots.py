"""The report's PNG plots (matplotlib, Agg backend). Each function writes one file atomically and returns it."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path

from device_results.report.views import ReportData
from emobench_common.fileio import atomic_write_bytes

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def slug(text: str) -> str:
    """A file-name-safe form of a label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _display(data: ReportData, label: str) -> str:
    return f"{label} (VIRTUAL)" if data.target(label).is_virtual else label


def needs_log_scale(values: Sequence[float], *, spread: float = 10.0) -> bool:
    """Log scale when the largest positive value is more than ``spread`` times the smallest."""
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    return bool(pos) and max(pos) / min(pos) > spread


def latency_distribution(data: ReportData, path: Path) -> Path | None:
    """Box plots of per-image latency for every (model, target), grouped by model, one colour per target."""
    lats = [lat for lat in data.latencies if lat.per_image_ms]
    if not lats:
        return None
    plt = _pyplot()
    targets = [t.label for t in data.targets if any(lat.target == t.label for lat in lats)]
    models = [m for m in data.model_keys if any(lat.model_key == m for lat in lats)]
    width = 0.8 / max(1, len(targets))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(models) * max(1, len(targets)) ** 0.5 + 2), 4.2))
    for ti, target in enumerate(targets):
        virtual = data.target(target).is_virtual
        series, positions = [], []
        for mi, model in enumerate(models):
            lat = data.latency(target, model)
            if lat is not None:
                series.append(lat.per_image_ms)
                positions.append(mi + (ti - (len(targets) - 1) / 2) * width)
        if not series:
            continue
        color = _COLORS[ti % len(_COLORS)]
        box = ax.boxplot(series, positions=positions, widths=width * 0.85, patch_artist=True, showfliers=True,
                         flierprops={"markersize": 2, "markeredgecolor": color})
        for patch in box["boxes"]:
            patch.set_facecolor(color)
            patch.set_alpha(0.55)
            if virtual:
                patch.set_hatch("//")
        for median in box["medians"]:
            median.set_color("black")
        ax.plot([], [], color=color, linewidth=8, alpha=0.55, label=_display(data, target))
    ax.set_xticks(range(len(models)), models, rotation=25, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(models) - 0.4)
    medians = [lat.per_image_median_ms.value for lat in lats]
    if needs_log_scale(medians) or needs_log_scale([v for lat in lats for v in lat.per_image_ms], spread=50):
        ax.set_yscale("log")
        ax.set_ylabel("ms per image (log scale)")
    else:
        ax.set_ylabel("ms per image")
    any_virtual = any(data.target(t).is_virtual for t in targets)
    ax.set_title("Per-image latency by model and target" + (" (hatched: virtual device)" if any_virtual else ""))
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def thermal_drift(data: ReportData, path: Path) -> Path | None:
    """Latency across the experiments per model, one panel per target, device temperature overlaid."""
    panels = [(label, pts) for label, pts in data.thermal.items() if any(p.batch_ms_by_model for p in pts)]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.8 * len(panels) + 0.6), squeeze=False,
                             layout="constrained")
    for ax, (label, points) in zip(axes[:, 0], panels, strict=True):
        models = [m for m in data.model_keys if any(m in p.batch_ms_by_model for p in points)]
        all_ms = [v for p in points for v in p.batch_ms_by_model.values()]
        for model in models:
            color = _COLORS[data.model_keys.index(model) % len(_COLORS)]  # one colour per model on every panel
            xs = [p.experiment_index + 1 for p in points if model in p.batch_ms_by_model]
            ys = [p.batch_ms_by_model[model] for p in points if model in p.batch_ms_by_model]
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, color=color, label=model)
        if needs_log_scale(all_ms):
            ax.set_yscale("log")
        ax.set_ylabel("ms / batch")
        ax.set_title(_display(data, label), fontsize=10)
        ax.grid(alpha=0.3)
        temps: list[tuple[int, float]] = []
        for p in points:
            t = p.temp_after_c if p.temp_after_c is not None else p.temp_before_c
            if t is not None:
                temps.append((p.experiment_index + 1, t))
        if temps:
            twin = ax.twinx()
            twin.plot([x for x, _ in temps], [t for _, t in temps], color="black", linestyle="--", linewidth=1,
                      label="hottest zone (C)")
            twin.set_ylabel("deg C")
            lo, hi = min(t for _, t in temps), max(t for _, t in temps)
            twin.set_ylim(lo - max(2.0, 0.2 * (hi - lo)), hi + max(2.0, 0.2 * (hi - lo)))
            twin.legend(fontsize=7, loc="upper right")
        else:
            target = next((t for t in data.targets if t.label == label), None)
            note = ("no temperature readings" if target is None or target.temperature_measured
                    else f"temperature not measured ({target.thermal_source})")
            ax.text(0.99, 0.02, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="gray")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.1, 1.0), borderaxespad=0)
    axes[-1, 0].set_xlabel("experiment")
    fig.suptitle("Latency across experiments, with device temperature", fontsize=11)
    return _save(fig, path)


def accuracy_pairs(data: ReportData, path: Path) -> Path | None:
    """FP32 vs INT8 accuracy with Wilson intervals, per target and dataset role."""
    pairs = [p for p in data.pairs if not p.cross_hardware]
    if not pairs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(pairs) + 2), 4.0))
    roles = [r for r in ("seen", "unseen") if any(r in p.fp32_accuracy for p in pairs)] or ["all"]
    width = 0.8 / (2 * len(roles))
    for pi, pair in enumerate(pairs):
        for ri, role in enumerate(roles):
            for k, (acc, name) in enumerate(((pair.fp32_accuracy, "FP32"), (pair.int8_accuracy, "INT8"))):
                iv = acc.get(role)
                if iv is None:
                    continue
                x = pi + ((2 * ri + k) - (2 * len(roles) - 1) / 2) * width
                color = _COLORS[2 * ri + k]
                ax.bar(x, iv.value, width * 0.9, color=color, alpha=0.75,
                       label=f"{name} {role}" if pi == 0 else None)
                ax.errorbar(x, iv.value, yerr=[[iv.value - iv.low], [iv.high - iv.value]], color="black",
                            capsize=2, linewidth=0.8)
    ax.set_xticks(range(len(pairs)), [f"{_display(data, p.target)}\n{p.int8_key}" for p in pairs], fontsize=7,
                  rotation=20, ha="right")
    chance = 1 / max(1, len(data.class_names))
    ax.axhline(chance, color="gray", linestyle=":", linewidth=1, label=f"chance ({chance:.0%})")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (Wilson 95%)")
    ax.set_title("FP32 vs INT8 accuracy on each target")
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    return _save(fig, path)


def per_class_f1(data: ReportData, path: Path) -> Path | None:
    """A heat map of per-class F1: one row per (model, target), one column per class."""
    views = list(data.per_class)
    if not views:
        return None
    plt = _pyplot()
    names = list(data.class_names)
    grid = [[cv.metrics["per_class"][n]["f1"] for n in names] for cv in views]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(names), 0.8 + 0.32 * len(views)))
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(views)), [f"{cv.model_key} @ {_display(data, cv.target)}" for cv in views], fontsize=7)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.5 else "black")
    ax.set_title("Per-class F1")
    return _save(fig, path)


def confusion_matrices(data: ReportData, out_dir: Path) -> list[tuple[Path, str]]:
    """One row-normalised confusion matrix per model, from its first target (``training.plots``)."""
    from training.plots import plot_confusion_matrix

    done: set[str] = set()
    out = []
    for cv in data.per_class:
        if cv.model_key in done:
            continue
        done.add(cv.model_key)
        title = f"{cv.model_key} on {_display(data, cv.target)}"
        path = plot_confusion_matrix(cv.metrics["confusion_matrix"], list(data.class_names),
                                     out_dir / f"confusion_{slug(cv.model_key)}.png", title=title)
        out.append((path, f"Confusion matrix: {title}"))
    return out


def write_plots(data: ReportData, out_dir: Path) -> list[tuple[Path, str]]:
    """Every plot of the report: (path, title) in reading order."""
    out: list[tuple[Path, str]] = []
    for fn, name, title in (
        (latency_distribution, "latency_distribution.png", "Per-image latency by target and model"),
        (thermal_drift, "latency_across_experiments.png", "Latency across experiments with device temperature"),
        (accuracy_pairs, "accuracy_fp32_vs_int8.png", "FP32 vs INT8 accuracy on each target"),
        (per_class_f1, "per_class_f1.png", "Per-class F1"),
    ):
        path = fn(data, out_dir / name)
        if path is not None:
            out.append((path, title))
    out.extend(confusion_matrices(data, out_dir))
    return out
