"""Phase 1 model selection: rank finished runs by a metric, write CSV + Markdown + PNG, name the winner."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emobench_common.errors import EmobenchError
from emobench_common.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

SELECT_METRICS = ("accuracy", "f1_macro", "f1_weighted", "precision_weighted", "recall_weighted")
COLUMNS = ("rank", "arch", "accuracy", "f1_macro", "f1_weighted", "precision_weighted", "recall_weighted",
           "best_epoch", "epochs_run", "params", "run_dir")


class SelectionError(EmobenchError):
    """No finished runs to compare, or an unknown ranking metric."""


@dataclass(frozen=True)
class Selection:
    """The ranked table, the winner and the files written."""

    metric: str
    rows: tuple[dict[str, Any], ...]
    winner: dict[str, Any]
    csv_path: Path
    markdown_path: Path
    png_path: Path


def find_runs(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Finished run folders among ``paths`` (a run folder, or a folder of them such as runs/phase1)."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / "metrics.json").is_file() and (p / "checkpoint.pt").is_file():
            runs.append(p)
        elif p.is_dir():
            runs += sorted(d for d in p.iterdir() if d.is_dir() and not d.is_symlink()
                           and (d / "metrics.json").is_file() and (d / "checkpoint.pt").is_file())
        else:
            raise SelectionError(f"{p} is neither a finished run folder nor a folder of runs")
    unique: dict[Path, Path] = {}  # resolved path -> the first spelling of it, in order
    for r in runs:
        unique.setdefault(r.resolve(), r)
    return list(unique.values())


def _params(run: Path) -> int | None:
    try:
        from training.checkpoint import load_checkpoint

        return sum(int(v.numel()) for k, v in load_checkpoint(run / "checkpoint.pt").model_state.items()
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    except EmobenchError:
        return None


def select_best(runs: Sequence[str | os.PathLike[str]], *, metric: str = "accuracy",
                out_dir: str | os.PathLike[str]) -> Selection:
    """Rank the runs by ``metric`` (test split; ties: macro F1, then fewer parameters) and write the table.

    Raises:
        SelectionError: no finished runs, or an unknown metric.
    """
    if metric not in SELECT_METRICS:
        raise SelectionError(f"unknown ranking metric {metric!r}", hint=f"choose one of {', '.join(SELECT_METRICS)}")
    found = find_runs(runs)
    if not found:
        raise SelectionError(f"no finished runs in {', '.join(map(str, runs))}",
                             hint="a finished run folder holds checkpoint.pt and metrics.json")
    rows = []
    for run in found:
        m = json.loads((run / "metrics.json").read_text())
        rows.append({"arch": m.get("arch", run.name), **{k: m.get(k) for k in SELECT_METRICS},
                     "best_epoch": m.get("best_epoch"), "epochs_run": m.get("epochs_run"),
                     "params": _params(run), "run_dir": str(run)})
    rows.sort(key=lambda r: (-(r[metric] or 0.0), -(r["f1_macro"] or 0.0), r["params"] or 0))
    for i, row in enumerate(rows, start=1):
        row["rank"] = i
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: r[k] for k in COLUMNS} for r in rows])
    csv_path = atomic_write_text(out / "selection.csv", buf.getvalue())
    md_path = atomic_write_text(out / "selection.md", _markdown(rows, metric))
    png_path = _plot(rows, metric, out / "selection.png")
    atomic_write_json(out / "selection.json", {"metric": metric, "winner": rows[0], "rows": rows})
    log.info("Phase 1 winner by %s: %s (%.4f)", metric, rows[0]["arch"], rows[0][metric])
    return Selection(metric=metric, rows=tuple(rows), winner=rows[0], csv_path=csv_path, markdown_path=md_path,
                     png_path=png_path)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value / 1e6:.2f} M"
    return "" if value is None else str(value)


def _markdown(rows: Sequence[dict[str, Any]], metric: str) -> str:
    cols = [c for c in COLUMNS if c != "run_dir"]
    lines = [f"# Phase 1 model selection (ranked by test {metric})", "",
             "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(f"**{_fmt(r[c])}**" if c == metric else _fmt(r[c]) for c in cols) + " |")
    w = rows[0]
    lines += ["", f"Winner: **{w['arch']}** ({metric} {w[metric]:.4f}; run {w['run_dir']})", ""]
    return "\n".join(lines)


def _plot(rows: Sequence[dict[str, Any]], metric: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(rows), 3.6))
    names = [r["arch"] for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r[metric] or 0 for r in rows], 0.4, label=metric,
           color=["tab:green" if i == 0 else "tab:blue" for i in xs])
    other = "f1_macro" if metric != "f1_macro" else "accuracy"
    ax.bar([x + 0.2 for x in xs], [r[other] or 0 for r in rows], 0.4, label=other, color="tab:gray")
    ax.set_xticks(list(xs), names, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Phase 1: ranked by test {metric}; winner {rows[0]['arch']}")
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
