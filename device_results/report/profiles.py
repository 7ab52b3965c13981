"""The report's "Where the time goes" section: per-operator profiles from ExecuTorch's ETDump.

Tables (raw values in the CSVs):

- ``profile_summary``: per target and model, which runner ran (with its sha256), the median
  ``Method::execute`` time, the summed operator time and the share of execute time the profile
  accounts for (coverage); a runner without the event tracer is listed with latency only;
- ``profile_top_operators``: the slowest operators of each (target, model);
- ``profile_kinds``: FP32 vs each INT8 model per operator kind on one target (convolution, depthwise
  convolution, activation, SE multiply, fully connected, quantize/convert ...), with the INT8/FP32 ratio.

One chart (``where_the_time_goes.png``): per target, milliseconds per operator kind, FP32 next to INT8.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from device_results.report.tables import Table, fmt_ms
from device_results.report.views import ReportData
from device_results.store.profiles import ProfileRecord, read_profiles
from emobench_common.fileio import atomic_write_bytes

KIND_ORDER = ("convolution", "depthwise convolution", "activation", "SE multiply", "fully connected / 1x1 conv",
              "quantize/convert", "pooling/mean", "add", "layout (transpose/copy/reshape)", "other")
TOP_N = 8
CHART = "where_the_time_goes.png"
CHART_TITLE = "Where the time goes: ms per operator kind, FP32 vs INT8, on each target"


def load_profiles(data: ReportData) -> list[ProfileRecord]:
    """The profiles stored for the report's runs (none for a database without profile tables)."""
    from device_results.store import ResultsStore

    out: list[ProfileRecord] = []
    with ResultsStore(data.db_path) as store:
        for run in data.runs:
            out.extend(read_profiles(store, run.run_id))
    return out


def _is_virtual(data: ReportData, target_id: str) -> bool:
    for t in data.targets:
        if target_id in (t.label, getattr(t, "target_id", None)):
            return bool(getattr(t, "is_virtual", False))
    return False


def _target_name(data: ReportData, target_id: str) -> str:
    return target_id + (" [VIRTUAL]" if _is_virtual(data, target_id) else "")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def profile_tables(data: ReportData, profiles: Sequence[ProfileRecord]) -> list[Table]:
    """The section's tables (empty when no run of the report was profiled)."""
    if not profiles:
        return []
    summary_rows, summary_raw, flagged = [], [], []
    for i, p in enumerate(profiles):
        if _is_virtual(data, p.target_id):
            flagged.append(i)
        coverage = _pct(p.coverage) if p.status == "ok" else "-"
        state = {"ok": "profiled", "no-etdump": "latency only (no ETDump)", "failed": "failed"}[p.status]
        summary_rows.append((_target_name(data, p.target_id), p.model_key, state, p.runner,
                             p.runner_sha256[:12] or "-", str(p.runs), fmt_ms(p.execute_median_ms),
                             fmt_ms(p.profiled_median_ms) if p.status == "ok" else "-", coverage, p.message[:160]))
        summary_raw.append((p.target_id, p.model_key, p.status, p.runner, p.runner_sha256, p.runs,
                            p.execute_median_ms, p.profiled_median_ms, p.coverage, int(p.etrecord_used), p.message))
    tables = [Table(
        key="profile_summary", title="Profiled programs: execute time and how much of it the operators account for",
        columns=("target", "model", "profile", "runner", "runner sha256", "runs", "execute median ms",
                 "operators ms", "coverage", "note"),
        rows=tuple(summary_rows),
        raw_columns=("target_id", "model_key", "status", "runner", "runner_sha256", "runs", "execute_median_ms",
                     "profiled_median_ms", "coverage", "etrecord_used", "message"),
        raw_rows=tuple(summary_raw), flagged_rows=tuple(flagged),
        note="Coverage = median over runs of (sum of operator times / Method::execute); the rest is delegate and "
             "runtime overhead between operators. Times are ExecuTorch's own event tracer (ETDump).")]
    top_rows, top_raw = [], []
    for p in profiles:
        for rank, o in enumerate(p.operators[:TOP_N], 1):
            top_rows.append((_target_name(data, p.target_id), p.model_key, str(rank), o.operator, o.kind, o.backend,
                             "yes" if o.delegated else "no", str(o.calls), fmt_ms(o.median_ms), fmt_ms(o.p90_ms),
                             f"{o.share:.1%}"))
        for o in p.operators:
            top_raw.append((p.target_id, p.model_key, o.operator, o.kind, o.backend, int(o.delegated), o.calls,
                            o.median_ms, o.p90_ms, o.share))
    tables.append(Table(
        key="profile_top_operators", title=f"Top {TOP_N} operators per target and model",
        columns=("target", "model", "#", "operator", "kind", "backend", "delegated", "calls", "median ms", "p90 ms",
                 "share of execute"),
        rows=tuple(top_rows),
        raw_columns=("target_id", "model_key", "operator", "kind", "backend", "delegated", "calls", "median_ms",
                     "p90_ms", "share"),
        raw_rows=tuple(top_raw),
        note="calls = instances per execution; median/p90 over runs of their summed time. The CSV holds every "
             "operator. 'SE multiply' is XNNPACK's Multiply: squeeze-excitation scaling and SiLU's x*sigmoid(x); "
             "XNNPACK runs every 1x1 (pointwise) convolution as a Fully Connected operator."))
    kinds = kind_totals(profiles)
    kind_rows, kind_raw = [], []
    for target_id, fp32_key, int8_key in fp32_int8_pairs(profiles):
        fp32, int8 = kinds[(target_id, fp32_key)], kinds[(target_id, int8_key)]
        for kind in KIND_ORDER:
            a, b = fp32.get(kind), int8.get(kind)
            if a is None and b is None:
                continue
            ratio = (b / a) if a and b is not None and a > 0 else None
            kind_rows.append((_target_name(data, target_id), f"{fp32_key} vs {int8_key}", kind,
                              fmt_ms(a) if a is not None else "-", fmt_ms(b) if b is not None else "-",
                              f"{ratio:.2f}" if ratio is not None else "-"))
            kind_raw.append((target_id, fp32_key, int8_key, kind, a, b, ratio))
    if kind_rows:
        tables.append(Table(
            key="profile_kinds", title="FP32 vs INT8 per operator kind (same target, same input)",
            columns=("target", "models", "operator kind", "FP32 ms", "INT8 ms", "INT8 / FP32"),
            rows=tuple(kind_rows),
            raw_columns=("target_id", "fp32_model", "int8_model", "kind", "fp32_ms", "int8_ms", "int8_over_fp32"),
            raw_rows=tuple(kind_raw),
            note="Sums of the per-operator medians of each kind. Where INT8 is not faster, look at quantize/"
                 "convert (activations quantized at run time) and at the kinds XNNPACK left in FP32 (depthwise "
                 "convolution under dynamic quantization)."))
    return tables


def kind_totals(profiles: Sequence[ProfileRecord]) -> dict[tuple[str, str], dict[str, float]]:
    """(target, model) -> operator kind -> summed median ms."""
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for p in profiles:
        if p.status != "ok":
            continue
        totals = out[(p.target_id, p.model_key)]
        for o in p.operators:
            totals[o.kind] = totals.get(o.kind, 0.0) + o.median_ms
    return out


def fp32_int8_pairs(profiles: Sequence[ProfileRecord]) -> list[tuple[str, str, str]]:
    """(target, FP32 model, INT8 model) for every INT8 program profiled beside an FP32 one of the same format."""
    ok = {(p.target_id, p.model_key) for p in profiles if p.status == "ok"}
    pairs = []
    for target_id, key in sorted(ok):
        if "-int8" not in key:
            continue
        fmt = key.split("-int8")[0]
        if (target_id, f"{fmt}-fp32") in ok:
            pairs.append((target_id, f"{fmt}-fp32", key))
    return pairs


def write_profile_chart(data: ReportData, profiles: Sequence[ProfileRecord], out_dir: Path) -> Path | None:
    """``where_the_time_goes.png``: per target, ms per operator kind for each profiled model."""
    kinds = kind_totals(profiles)
    if not kinds:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    targets = sorted({t for t, _ in kinds})
    used = [k for k in KIND_ORDER if any(k in v for v in kinds.values())]
    fig, axes = plt.subplots(1, len(targets), figsize=(6.2 * len(targets), 0.55 * len(used) + 2.2), squeeze=False)
    for ax, target_id in zip(axes[0], targets, strict=True):
        models = sorted(m for t, m in kinds if t == target_id)
        height = 0.8 / max(1, len(models))
        y = np.arange(len(used))
        for i, model in enumerate(models):
            values = [kinds[(target_id, model)].get(k, 0.0) for k in used]
            ax.barh(y + i * height, values, height=height, label=model)
        ax.set_yticks(y + height * (len(models) - 1) / 2, used)
        ax.invert_yaxis()
        ax.set_xlabel("ms per execution (median)")
        ax.set_title(_target_name(data, target_id), fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(CHART_TITLE, fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(out_dir / CHART, buf.getvalue())


def profile_section_html(tables_by_key: dict, chart_html: str, to_html) -> str:
    """The HTML of the section (empty when nothing was profiled)."""
    if "profile_summary" not in tables_by_key:
        return ""
    parts = ['<h2 id="where-the-time-goes">Where the time goes</h2>',
             '<p class="note">Per-operator times from ExecuTorch\'s event tracer (ETDump), read with its Inspector; '
             "XNNPACK reports every operator it runs inside the delegate. Virtual-device rows run on the host CPU."
             "</p>",
             to_html(tables_by_key["profile_summary"])]
    if "profile_kinds" in tables_by_key:
        parts.append(to_html(tables_by_key["profile_kinds"]))
    parts.append(chart_html)
    parts.append(f"<details open><summary>Top operators</summary>{to_html(tables_by_key['profile_top_operators'])}"
                 "</details>")
    return "".join(parts)
