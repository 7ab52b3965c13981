"""The report's tables, built once from ``ReportData`` and rendered as Markdown, CSV and HTML.

Each table has display cells (rounded, with units and intervals) for people and raw cells (full
precision, one value per column) for the CSV files, so a spreadsheet never parses "12.3 [11.9, 12.8]".
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from device_results.report.views import ArtifactView, Interval, ReportData


@dataclass(frozen=True)
class Table:
    """One table: ``rows`` are display strings; ``raw_columns``/``raw_rows`` are what the CSV holds."""

    key: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    raw_columns: tuple[str, ...]
    raw_rows: tuple[tuple[object, ...], ...]
    note: str = ""
    flagged_rows: tuple[int, ...] = ()  # rows to highlight (virtual or cross-hardware)


def fmt_ms(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _pct_bound(value: float) -> str:
    return f"{100 * value:.1f}"


def fmt_interval(iv: Interval | None, fmt=fmt_ms) -> str:
    """``value [low, high]``; percentages carry the % sign on the value only."""
    if iv is None:
        return "n/a"
    if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return f"{fmt(iv.value)} [n too small]"
    bound = _pct_bound if fmt is fmt_pct else fmt
    return f"{fmt(iv.value)} [{bound(iv.low)}, {bound(iv.high)}]"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _raw(iv: Interval | None) -> tuple[object, object, object]:
    return ("", "", "") if iv is None else (iv.value, iv.low, iv.high)


def target_label(data: ReportData, label: str) -> str:
    """A target label with its VIRTUAL mark."""
    try:
        return f"{label} (VIRTUAL)" if data.target(label).is_virtual else label
    except KeyError:
        return label


def build_tables(data: ReportData) -> list[Table]:
    """Every table of the report, in reading order."""
    return [t for t in (_targets(data), _artifacts(data), _latency(data), _ratios(data), _accuracy(data),
                        _pairs(data), _experiments(data), _per_class(data), _agreement(data)) if t.rows]


def _targets(data: ReportData) -> Table:
    rows: list[tuple[str, ...]] = []
    raw: list[tuple[object, ...]] = []
    flagged: list[int] = []
    for t in data.targets:
        desc = "; ".join(f"{k}: {v}" for k, v in t.description)
        libs = ", ".join(f"{k} {v}" for k, v in t.library_versions)
        if t.is_virtual:
            flagged.append(len(rows))
        rows.append((target_label(data, t.label), t.kind, desc, libs, str(t.threads or "default"),
                     t.affinity_mask or "none", t.how_obtained, t.telemetry_note))
        raw.append((t.run_id, t.target_id, t.kind, int(t.is_virtual), desc, libs, t.threads, t.affinity_mask,
                    t.how_obtained, t.info_json, t.thermal_source, t.freq_source))
    return Table("targets", "What ran: targets", ("target", "kind", "device / host", "library versions", "threads",
                                                  "affinity", "how obtained", "temperature and frequency"),
                 tuple(rows), ("run_id", "target_id", "kind", "is_virtual", "description", "library_versions",
                               "threads", "affinity_mask", "how_obtained", "info_json", "thermal_source",
                               "freq_source"), tuple(raw),
                 flagged_rows=tuple(flagged))


def _artifacts(data: ReportData) -> Table:
    rows, raw = [], []
    seen: set[tuple[str, str]] = set()
    for a in data.artifacts:
        if (a.model_key, a.sha256) in seen:
            continue
        seen.add((a.model_key, a.sha256))
        layers = (f"{a.layers_quantized}/{a.layers_total}" if a.layers_quantized is not None and a.layers_total
                  else ("-" if a.precision == "fp32" else "n/a"))
        p = a.parity or {}
        rows.append((a.model_key, a.format, a.precision, a.quantization, fmt_bytes(a.size_bytes), layers,
                     _parity_text(a), a.sha256[:12]))
        raw.append((a.run_id, a.model_key, a.format, a.precision, a.quantization, a.size_bytes, a.layers_quantized,
                    a.layers_total, p.get("images"), p.get("top1_agreement"), p.get("max_abs_diff"),
                    p.get("threshold"), None if not p else int(not a.parity_below_threshold), a.sha256))
    below = [r for r in rows if r[6].endswith("UNDER THRESHOLD")]
    return Table("artifacts", "What ran: models", ("model", "format", "precision", "quantization", "size",
                                                   "layers quantized", "export parity vs eager", "sha256"),
                 tuple(rows),
                 ("run_id", "model_key", "format", "precision", "quantization", "size_bytes", "layers_quantized",
                  "layers_total", "parity_images", "parity_top1_agreement", "parity_max_abs_diff", "parity_threshold",
                  "parity_passed", "sha256"), tuple(raw),
                 note="Export parity: top-1 agreement and max |logit difference| with the eager FP32 model on the "
                      "export's verification images." + (f" {len(below)} INT8 artifact(s) under the export's "
                                                         "agreement threshold." if below else ""),
                 flagged_rows=tuple(i for i, r in enumerate(rows) if r in below))


def _parity_text(a: ArtifactView) -> str:
    p = a.parity
    if not p or p.get("top1_agreement") is None:
        return "not recorded" if a.format != "eager" else "-"
    text = f"top-1 {float(p['top1_agreement']):.1%} of {p.get('images', '?')}, max |diff| {float(p['max_abs_diff']):.2g}"
    return text + (" UNDER THRESHOLD" if a.parity_below_threshold else "")


def _latency(data: ReportData) -> Table:
    rows: list[tuple[str, ...]] = []
    raw: list[tuple[object, ...]] = []
    flagged: list[int] = []
    for lat in data.latencies:
        if data.target(lat.target).is_virtual:
            flagged.append(len(rows))
        rows.append((lat.model_key, target_label(data, lat.target), fmt_interval(lat.per_image_median_ms),
                     fmt_interval(lat.per_image_p90_ms), fmt_ms(lat.batch_median_ms),
                     "n/a" if not math.isfinite(lat.batch_cv) else f"{lat.batch_cv:.2f}",
                     f"{lat.n_repeats} ({lat.n_experiments} exp.)"))
        raw.append((lat.target, lat.model_key, *_raw(lat.per_image_median_ms), *_raw(lat.per_image_p90_ms),
                    lat.per_image_mean_ms, lat.batch_median_ms, lat.batch_cv, lat.n_repeats, lat.n_experiments))
    order = sorted(range(len(rows)), key=lambda i: (data.model_keys.index(data.latencies[i].model_key), i))
    flagged_sorted = tuple(order.index(i) for i in flagged)
    return Table("latency", "Latency per image (ms): median and p90 with 95% intervals",
                 ("model", "target", "median ms/image", "p90 ms/image", "median ms/batch", "CV (batch)", "repeats"),
                 tuple(rows[i] for i in order),
                 ("target", "model_key", "median_ms_per_image", "median_low", "median_high", "p90_ms_per_image",
                  "p90_low", "p90_high", "mean_ms_per_image", "median_ms_per_batch", "cv_batch", "n_repeats",
                  "n_experiments"), tuple(raw[i] for i in order),
                 note="Per-image latency = timed batch latency / batch size. Intervals: order-statistic 95%.",
                 flagged_rows=flagged_sorted)


def _ratios(data: ReportData) -> Table:
    rows: list[tuple[str, ...]] = []
    raw: list[tuple[object, ...]] = []
    flagged: list[int] = []
    for r in data.ratios:
        if r.cross_hardware or data.target(r.target).is_virtual:
            flagged.append(len(rows))
        rows.append((r.model_key, target_label(data, r.target), r.reference, fmt_interval(r.ratio, fmt_ratio),
                     "by experiment" if r.paired else "unpaired", r.note))
        raw.append((r.target, r.reference, r.model_key, *_raw(r.ratio), int(r.paired), int(r.cross_hardware), r.note))
    return Table("target_ratios", f"Same artifact, other target: latency relative to {data.reference_target}",
                 ("model", "target", "reference", "median ratio [95% CI]", "pairing", "what it compares"),
                 tuple(rows), ("target", "reference", "model_key", "ratio", "ratio_low", "ratio_high", "paired",
                               "cross_hardware", "note"), tuple(raw),
                 note="ratio > 1: slower than the reference. Bootstrap interval of the ratio of medians.",
                 flagged_rows=tuple(flagged))


def _accuracy(data: ReportData) -> Table:
    rows, raw = [], []
    for a in data.accuracies:
        rows.append((a.model_key, target_label(data, a.target), a.role, f"{a.correct}/{a.n}",
                     fmt_interval(a.accuracy, fmt_pct)))
        raw.append((a.target, a.model_key, a.role, a.correct, a.n, *_raw(a.accuracy)))
    return Table("accuracy", "Accuracy by dataset (Wilson 95% intervals)",
                 ("model", "target", "data", "correct", "accuracy [95% CI]"), tuple(rows),
                 ("target", "model_key", "role", "correct", "n", "accuracy", "low", "high"), tuple(raw),
                 note="seen = the training dataset's held-out images; unseen = a dataset the model never saw.")


def _pairs(data: ReportData) -> Table:
    rows: list[tuple[str, ...]] = []
    raw: list[tuple[object, ...]] = []
    flagged: list[int] = []
    for p in data.pairs:
        if p.cross_hardware:
            flagged.append(len(rows))
            rows.append((p.target, p.fp32_key, p.int8_key, "-", "-", "-", "-", "-", "-", "-",
                         fmt_interval(p.latency_ratio, fmt_ratio), fmt_ratio(p.size_ratio), p.note))
        else:
            def acc(d, role):
                return fmt_interval(d.get(role), fmt_pct) if role in d else "n/a"
            rows.append((target_label(data, p.target), p.fp32_key, p.int8_key,
                         acc(p.fp32_accuracy, "seen"), acc(p.int8_accuracy, "seen"),
                         acc(p.fp32_accuracy, "unseen"), acc(p.int8_accuracy, "unseen"),
                         fmt_interval(p.agreement, fmt_pct), f"{p.only_fp32_correct} / {p.only_int8_correct}",
                         fmt_p(p.mcnemar_p), fmt_interval(p.latency_ratio, fmt_ratio), fmt_ratio(p.size_ratio),
                         "same target, same images"))
        raw.append((p.target, p.fp32_key, p.int8_key, p.n_images,
                    *_raw(p.fp32_accuracy.get("seen")), *_raw(p.int8_accuracy.get("seen")),
                    *_raw(p.fp32_accuracy.get("unseen")), *_raw(p.int8_accuracy.get("unseen")),
                    *_raw(p.agreement), p.only_fp32_correct, p.only_int8_correct, p.mcnemar_p,
                    *_raw(p.latency_ratio), p.size_ratio, int(p.cross_hardware), p.note))
    return Table("fp32_vs_int8", "FP32 vs INT8 on each target (paired: same target, same images)",
                 ("target", "FP32", "INT8", "seen acc FP32", "seen acc INT8", "unseen acc FP32", "unseen acc INT8",
                  "top-1 agreement",
                  "only FP32 / only INT8 right", "McNemar p", "latency INT8/FP32", "size INT8/FP32", "comparison"),
                 tuple(rows),
                 ("target", "fp32_key", "int8_key", "n_images", "fp32_seen", "fp32_seen_low", "fp32_seen_high",
                  "int8_seen", "int8_seen_low", "int8_seen_high", "fp32_unseen", "fp32_unseen_low", "fp32_unseen_high",
                  "int8_unseen", "int8_unseen_low", "int8_unseen_high", "agreement", "agreement_low",
                  "agreement_high", "only_fp32_correct", "only_int8_correct", "mcnemar_p", "latency_ratio",
                  "latency_ratio_low", "latency_ratio_high", "size_ratio", "cross_hardware", "note"), tuple(raw),
                 note="Latency ratio < 1: INT8 is faster. McNemar: exact two-sided test on the paired correctness.",
                 flagged_rows=tuple(flagged))


def _experiments(data: ReportData) -> Table:
    rows, raw = [], []
    for e in data.experiment_rows:
        fp32 = "n/a" if e.fp32_correct is None else f"{e.fp32_correct}/{e.n_images}"
        int8 = "n/a" if e.int8_correct is None else f"{e.int8_correct}/{e.n_images}"
        rows.append((target_label(data, e.target), str(e.experiment_index + 1), f"{e.dataset} ({e.role})",
                     fp32, int8, fmt_ms(e.fp32_batch_ms), fmt_ms(e.int8_batch_ms)))
        raw.append((e.target, e.fp32_key, e.int8_key, e.experiment_index, e.role, e.dataset, e.n_images,
                    e.fp32_correct, e.int8_correct, e.fp32_batch_ms, e.int8_batch_ms))
    keys = sorted({(e.fp32_key, e.int8_key) for e in data.experiment_rows})
    pair = "; ".join(f"{a} vs {b}" for a, b in keys)
    return Table("experiments", f"Per experiment, as in the original study ({pair})",
                 ("target", "experiment", "dataset", "FP32 correct", "INT8 correct", "FP32 ms/batch",
                  "INT8 ms/batch"), tuple(rows),
                 ("target", "fp32_key", "int8_key", "experiment_index", "role", "dataset", "n_images", "fp32_correct",
                  "int8_correct", "fp32_median_ms_per_batch", "int8_median_ms_per_batch"), tuple(raw),
                 note="Both models on the SAME target and the same batch; latency = median of the timed repeats.")


def _per_class(data: ReportData) -> Table:
    rows, raw = [], []
    for cv in data.per_class:
        for name, m in cv.metrics["per_class"].items():
            rows.append((cv.model_key, target_label(data, cv.target), name, f"{m['precision']:.2f}",
                         f"{m['recall']:.2f}", f"{m['f1']:.2f}", str(m["support"])))
            raw.append((cv.target, cv.model_key, name, m["precision"], m["recall"], m["f1"], m["support"]))
    return Table("per_class", "Per-class precision, recall and F1",
                 ("model", "target", "class", "precision", "recall", "F1", "support"), tuple(rows),
                 ("target", "model_key", "class", "precision", "recall", "f1", "support"), tuple(raw))


def _agreement(data: ReportData) -> Table:
    rows, raw = [], []
    for a in data.agreements:
        diff = "n/a" if a.max_abs_logit_diff is None else f"{a.max_abs_logit_diff:.2g}"
        rows.append((a.model_key, target_label(data, a.target_a), target_label(data, a.target_b),
                     fmt_interval(a.agreement, fmt_pct), diff, str(a.n)))
        raw.append((a.model_key, a.target_a, a.target_b, *_raw(a.agreement), a.max_abs_logit_diff, a.n))
    return Table("cross_target_agreement", "Same artifact on two targets: top-1 agreement of the outputs",
                 ("model", "target A", "target B", "agreement [95% CI]", "max |logit diff|", "images"), tuple(rows),
                 ("model_key", "target_a", "target_b", "agreement", "low", "high", "max_abs_logit_diff", "n"),
                 tuple(raw))


def summary_rows(data: ReportData) -> list[tuple[str, str, str, str, str]]:
    """(target, model, median ms/image, p90 ms/image, accuracy) for a terminal summary."""
    acc = {(a.target, a.model_key): a for a in data.accuracies if a.role == "all"}
    out = []
    for lat in data.latencies:
        a = acc.get((lat.target, lat.model_key))
        out.append((target_label(data, lat.target), lat.model_key, fmt_ms(lat.per_image_median_ms.value),
                    fmt_ms(lat.per_image_p90_ms.value), fmt_interval(a.accuracy, fmt_pct) if a else "n/a"))
    return out


# --- rendering ------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table with its title and note."""
    lines = [f"### {table.title}", ""]
    lines.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    for i, row in enumerate(table.rows):
        cells = [_md_cell(c) for c in row]
        if i in table.flagged_rows:
            cells[0] = f"**{cells[0]}** ⚠"
        lines.append("| " + " | ".join(cells) + " |")
    if table.note:
        lines += ["", f"_{table.note}_"]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """The raw values, one header row; floats at full precision."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.raw_columns)
    for row in table.raw_rows:
        writer.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row])
    return buf.getvalue()


def to_html(table: Table) -> str:
    """An HTML table (escaped), flagged rows marked with the ``flag`` class."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = []
    for i, row in enumerate(table.rows):
        cls = ' class="flag"' if i in table.flagged_rows else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    return (f'<div class="table-wrap" id="t-{table.key}"><h3>{html.escape(table.title)}</h3><table><thead><tr>{head}'
            f"</tr></thead><tbody>{''.join(body)}</tbody></table>{note}</div>")


def markdown_document(data: ReportData, tables: Sequence[Table], plots: Sequence[tuple[str, str]]) -> str:
    """The whole report as one Markdown file: warnings, tables, links to the PNG plots."""
    parts = [f"# {data.config.title}", ""]
    for run in data.runs:
        parts.append(f"- run `{run.run_id}` ({run.status}): {run.experiments} experiments, batch {run.batch_size}, "
                     f"{run.repeats} timed repeats; created {run.created_at}")
    parts.append("")
    if data.warnings:
        parts += ["## Read this first", ""] + [f"- **{w.kind}**: {w.message}" for w in data.warnings] + [""]
    for t in tables:
        parts.append(to_markdown(t))
    if plots:
        parts += ["## Plots", ""] + [f"![{title}]({name})" for name, title in plots]
    return "\n".join(parts) + "\n"
