"""The device view: every device of the report side by side (a fleet of phones, or several hosts merged).

Three tables, built from ``ReportData`` only:

- ``devices``: one row per device: model, SoC, Android, runner, threads, affinity, CPU set.
- ``device_ranking``: per model, every device's median per-image latency with its 95% interval,
  ranked fastest first. A device is compared with the fastest one on another device: every such
  comparison is labelled CROSS-HARDWARE (different silicon, thermal state and OS scheduling; the
  images are the same only when the runs used the same plan), and a rank whose interval overlaps the
  one above it is called a tie rather than a win.
- ``device_int8``: each device's FP32/INT8 latency ratio (> 1: INT8 faster), paired on that device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from device_results.report.tables import Table, fmt_interval, fmt_ratio, target_label
from device_results.report.views import Interval, LatencyView, ReportData, TargetView

CROSS_HARDWARE = "CROSS-HARDWARE"


def device_tables(data: ReportData) -> list[Table]:
    """The device view's tables; none when the report has fewer than two devices."""
    if len(data.targets) < 2:
        return []
    return [t for t in (_devices(data), _ranking(data), _int8(data)) if t.rows]


def _field(target: TargetView, *names: str) -> str:
    described = dict(target.description)
    for name in names:
        if described.get(name):
            return described[name]
    return "-"


def cpu_set(target: TargetView) -> str:
    """The CPUs a virtual device was pinned to (its ``cpu_set`` property), '-' where not recorded."""
    import json

    try:
        info = json.loads(target.info_json) if target.info_json else {}
    except ValueError:
        return "-"
    value = info.get("cpu_set") if isinstance(info, dict) else None
    return str(value) if value not in (None, "") else "-"


def _devices(data: ReportData) -> Table:
    rows: list[tuple[str, ...]] = []
    raw: list[tuple[object, ...]] = []
    flagged: list[int] = []
    for t in data.targets:
        if t.is_virtual:
            flagged.append(len(rows))
        model = _field(t, "model", "CPU", "GPU")
        soc, android = _field(t, "SoC"), _field(t, "Android")
        threads = str(t.threads) if t.threads else "default"
        rows.append((target_label(data, t.label), t.kind + (" (virtual)" if t.is_virtual else ""), model, soc,
                     android, t.how_obtained, threads, t.affinity_mask or "none", cpu_set(t)))
        raw.append((t.run_id, t.target_id, t.kind, int(t.is_virtual), model, soc, android, t.how_obtained, t.threads,
                    t.affinity_mask, cpu_set(t)))
    return Table("devices", "Devices side by side: one row per device",
                 ("device", "kind", "model", "SoC", "Android", "runner", "threads", "affinity", "CPU set"),
                 tuple(rows), ("run_id", "target_id", "kind", "is_virtual", "model", "soc", "android", "runner",
                               "threads", "affinity_mask", "cpu_set"), tuple(raw),
                 note="Virtual devices run on the host CPU (CPU set: the cores they were pinned to); their numbers "
                      "are not a phone's.",
                 flagged_rows=tuple(flagged))


def _overlaps(a: Interval, b: Interval) -> bool:
    if not all(math.isfinite(v) for v in (a.low, a.high, b.low, b.high)):
        return True  # an undefined interval cannot separate two devices
    return a.low <= b.high and b.low <= a.high


def rank_devices(latencies: Sequence[LatencyView]) -> list[tuple[int, LatencyView, int | None]]:
    """(rank, latency, rank it ties with) fastest first; a tie is an interval overlapping the one ranked above."""
    ordered = sorted(latencies, key=lambda lat: (lat.per_image_median_ms.value, lat.target))
    out: list[tuple[int, LatencyView, int | None]] = []
    for i, lat in enumerate(ordered):
        tie = None
        if i and _overlaps(lat.per_image_median_ms, ordered[i - 1].per_image_median_ms):
            tie = out[i - 1][2] or out[i - 1][0]
        out.append((i + 1, lat, tie))
    return out


def _ranking(data: ReportData) -> Table:
    rows: list[tuple[str, ...]] = []
    raw: list[tuple[object, ...]] = []
    flagged: list[int] = []
    for model in data.model_keys:
        ranked = rank_devices([lat for lat in data.latencies if lat.model_key == model])
        if len(ranked) < 2:
            continue
        fastest = ranked[0][1]
        for rank, lat, tie in ranked:
            target = data.target(lat.target)
            ratio = (lat.per_image_median_ms.value / fastest.per_image_median_ms.value
                     if fastest.per_image_median_ms.value > 0 else math.nan)
            if rank == 1:
                comparison = "fastest"
            else:
                comparison = (f"{CROSS_HARDWARE}: {target_label(data, lat.target)} vs "
                              f"{target_label(data, fastest.target)}, different devices")
                flagged.append(len(rows))
            if target.is_virtual:
                comparison += " (virtual: host CPU)"
                if rank == 1:
                    flagged.append(len(rows))
            rows.append((model, str(rank) + (f" (tie with {tie})" if tie else ""), target_label(data, lat.target),
                         fmt_interval(lat.per_image_median_ms), "-" if rank == 1 else fmt_ratio(ratio), comparison))
            raw.append((model, rank, tie, lat.target, lat.per_image_median_ms.value, lat.per_image_median_ms.low,
                        lat.per_image_median_ms.high, ratio, int(rank > 1), comparison))
    return Table("device_ranking", "Device ranking per model: median latency per image (ms), fastest first",
                 ("model", "rank", "device", "median ms/image [95% CI]", "x fastest", "comparison"), tuple(rows),
                 ("model_key", "rank", "tie_with", "target", "median_ms_per_image", "median_low", "median_high",
                  "ratio_to_fastest", "cross_hardware", "comparison"), tuple(raw),
                 note="Every comparison between devices is CROSS-HARDWARE: it measures the devices, not the model. "
                      "Ratio to the fastest = ratio of medians, unpaired. 'tie': the 95% intervals overlap.",
                 flagged_rows=tuple(sorted(set(flagged))))


def _inverse(iv: Interval) -> Interval:
    def inv(v: float) -> float:
        return 1.0 / v if v and math.isfinite(v) else math.nan
    return Interval(inv(iv.value), inv(iv.high), inv(iv.low))


def _verdict(iv: Interval) -> str:
    if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return "interval undefined"
    if iv.low > 1:
        return "INT8 faster"
    if iv.high < 1:
        return "INT8 slower"
    return "no clear difference"


def _int8(data: ReportData) -> Table:
    rows: list[tuple[str, ...]] = []
    raw: list[tuple[object, ...]] = []
    flagged: list[int] = []
    for p in data.pairs:
        if p.cross_hardware or p.latency_ratio is None:
            continue
        speedup = _inverse(p.latency_ratio)
        if data.target(p.target).is_virtual:
            flagged.append(len(rows))
        rows.append((target_label(data, p.target), p.fp32_key, p.int8_key, fmt_interval(speedup, fmt_ratio),
                     _verdict(speedup), "same device, same images"))
        raw.append((p.target, p.fp32_key, p.int8_key, speedup.value, speedup.low, speedup.high, _verdict(speedup)))
    return Table("device_int8", "Each device's FP32/INT8 latency ratio (> 1: INT8 is faster on that device)",
                 ("device", "FP32", "INT8", "FP32/INT8 latency [95% CI]", "verdict", "comparison"), tuple(rows),
                 ("target", "fp32_key", "int8_key", "fp32_over_int8", "low", "high", "verdict"), tuple(raw),
                 note="Paired by experiment on one device: this ratio measures quantization on that device.",
                 flagged_rows=tuple(flagged))
