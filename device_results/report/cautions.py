"""The cautions a report shows its reader: virtual devices, different hardware, heat, throttling, noise, failures."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from device_results.report.cells import TargetCells, hottest
from device_results.report.views import (
    ArtifactView,
    LatencyView,
    PairView,
    ReportConfig,
    TargetView,
    Warning_,
)
from device_results.store import RunRow


def _telemetry_warnings(cells: TargetCells, config: ReportConfig) -> list[Warning_]:
    out: list[Warning_] = []
    label = cells.target.label
    temps = [(e, t) for e in sorted(cells.telemetry)
             for t in (hottest(cells.telemetry[e].get("before")), hottest(cells.telemetry[e].get("after")))
             if t is not None]
    if len(temps) >= 2:
        first, peak = temps[0][1], max(t for _, t in temps)
        if peak - first > config.temp_rise_c:
            out.append(Warning_("thermal", label, f"{label}: the hottest zone rose from {first:.1f} C to {peak:.1f} C "
                                f"during the run (more than {config.temp_rise_c:g} C); later experiments may be "
                                "thermally throttled"))
    freq_by_cpu: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for e in sorted(cells.telemetry):
        for phase in ("before", "after"):
            for cpu, khz in (cells.telemetry[e].get(phase) or {}).get("freqs", {}).items():
                if isinstance(khz, int | float) and khz > 0:
                    freq_by_cpu[cpu].append((e, float(khz)))
    drops = []
    for cpu, series in freq_by_cpu.items():
        start, low = series[0][1], min(v for _, v in series)
        if start > 0 and (start - low) / start > config.freq_drop_fraction:
            drops.append(f"cpu{cpu} {start / 1000:.0f} -> {low / 1000:.0f} MHz" if str(cpu).isdigit()
                         else f"{cpu} {start / 1000:.0f} -> {low / 1000:.0f} MHz")
    if drops:
        out.append(Warning_("frequency", label, f"{label}: CPU frequency dropped by more than "
                            f"{config.freq_drop_fraction:.0%} during the run ({'; '.join(sorted(drops)[:6])}); "
                            "latency may reflect throttling"))
    return out


def report_warnings(all_cells: Sequence[TargetCells], targets: Sequence[TargetView], latencies: Sequence[LatencyView],
                    pairs: Sequence[PairView], runs: Sequence[RunRow], config: ReportConfig, *,
                    artifacts: Sequence[ArtifactView] = ()) -> list[Warning_]:
    """Every caution about the loaded runs, in the order the report lists them."""
    out: list[Warning_] = []
    seen_parity: set[tuple[str, str]] = set()
    for a in artifacts:
        if a.parity_below_threshold and (a.model_key, a.sha256) not in seen_parity:
            seen_parity.add((a.model_key, a.sha256))
            parity = a.parity or {}
            out.append(Warning_("parity", "", f"{a.model_key}: its top-1 agreement with the eager FP32 model at "
                                f"export was {float(parity['top1_agreement']):.1%} on {parity.get('images', '?')} "
                                f"images, under the export's threshold ({parity.get('threshold', 'unknown')}); its accuracy "
                                "differences from FP32 include quantization error, not only the runtime's"))
    for t in targets:
        if t.is_virtual:
            out.append(Warning_("virtual", t.label, f"{t.label} is a VIRTUAL device: an ADB endpoint whose runner "
                                "executes on the host CPU. Its latencies are host latencies, not a phone's."))
    for p in pairs:
        if p.cross_hardware:
            out.append(Warning_("cross-hardware", p.target, f"{p.target}: {p.note}"))
    if any(t.kind == "android" and not t.is_virtual for t in targets) and any(t.is_host for t in targets):
        out.append(Warning_("cross-hardware", "", "Phone/host latency ratios compare different hardware running "
                            "the same artifact; they measure the device, not the model."))
    for c in all_cells:
        out.extend(_telemetry_warnings(c, config))
        for model, fails in sorted(c.failed.items()):
            first = fails[0][1].splitlines()[0] if fails[0][1] else "no message"
            out.append(Warning_("failure", c.target.label, f"{c.target.label}: {model} failed in {len(fails)} "
                                f"experiment(s) (first: {first[:200]})"))
        by_reason: dict[str, list[str]] = defaultdict(list)
        for model, reason in c.target.unsupported:
            by_reason[reason].append(model)
        for reason, models in by_reason.items():
            out.append(Warning_("unsupported", c.target.label, f"{c.target.label}: {', '.join(models)} did not run "
                                f"here: {reason}"))
    noisy: dict[str, list[str]] = defaultdict(list)
    for lat in latencies:
        if math.isfinite(lat.batch_cv) and lat.batch_cv > config.cv_threshold:
            noisy[lat.target].append(f"{lat.model_key} {lat.batch_cv:.2f}")
    for target, items in noisy.items():
        out.append(Warning_("variability", target, f"{target}: latency varies a lot (CV above "
                            f"{config.cv_threshold:.2f}: {', '.join(items)}); read the medians, and check for other "
                            "load on the machine"))
    for run in runs:
        if run.status != "complete":
            out.append(Warning_("failure", "", f"run {run.run_id} is {run.status}"
                                + (f" ({run.status_message})" if run.status_message else "")))
    return out
