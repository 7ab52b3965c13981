"""The INT8 trade-off table: each INT8 artifact's method beside what it costs in answers, size and speed.

One row per (target, INT8 artifact) of the paired FP32-vs-INT8 comparisons: the quantization method
(dynamic, static, hybrid, mixed, qat: the last part of the model key), top-1 agreement with its FP32 twin
(Wilson interval, from the pairs), the accuracy change in points on the same images with a 95%
interval for a paired difference (from the discordant counts), the weight layers actually in INT8,
and the size and latency ratios. Cross-hardware pairs are left out: their answers are not paired.
"""

from __future__ import annotations

import math

from device_results.report.tables import Table, fmt_interval, fmt_pct, fmt_ratio, target_label
from device_results.report.views import PairView, ReportData

METHODS = ("dynamic", "static", "hybrid", "mixed", "qat")
_Z = 1.959963984540054


def method_of(int8_key: str) -> str:
    """``executorch-int8-mixed`` -> ``mixed`` (``?`` for a key without a known method)."""
    last = int8_key.rsplit("-", 1)[-1]
    return last if last in METHODS else "?"


def accuracy_change(pair: PairView) -> tuple[float, float, float]:
    """INT8 minus FP32 accuracy on the pair's images, in points, with a 95% interval (paired Wald).

    Only discordant images move the difference: ``d = (only_int8 - only_fp32) / n``, variance
    ``((b + c) - (b - c)^2 / n) / n^2``; with no discordant image the interval is the point.
    """
    n = pair.n_images
    if n <= 0:
        return (math.nan, math.nan, math.nan)
    b, c = pair.only_int8_correct, pair.only_fp32_correct
    d = (b - c) / n
    var = max((b + c) - (b - c) ** 2 / n, 0.0) / n**2
    half = _Z * math.sqrt(var)
    return (100 * d, 100 * (d - half), 100 * (d + half))


def int8_method_table(data: ReportData) -> Table:
    """The trade-off table (no rows when the report has no same-target FP32/INT8 pairs)."""
    layers = {a.model_key: (a.layers_quantized, a.layers_total) for a in data.artifacts}
    rows: list[tuple[str, ...]] = []
    raw: list[tuple[object, ...]] = []
    for p in data.pairs:
        if p.cross_hardware:
            continue
        change, low, high = accuracy_change(p)
        q, total = layers.get(p.int8_key, (None, None))
        rows.append((target_label(data, p.target), p.int8_key, method_of(p.int8_key),
                     fmt_interval(p.agreement, fmt_pct), f"{change:+.1f} [{low:+.1f}, {high:+.1f}]",
                     f"{q}/{total}" if q is not None else "n/a", fmt_ratio(p.size_ratio),
                     fmt_interval(p.latency_ratio, fmt_ratio), str(p.n_images)))
        raw.append((p.target, p.int8_key, method_of(p.int8_key), p.agreement.value, p.agreement.low,
                    p.agreement.high, change, low, high, q, total, p.size_ratio,
                    p.latency_ratio.value if p.latency_ratio else None, p.n_images))
    return Table(
        "int8_methods", "INT8 methods: agreement with FP32, accuracy change, size and speed",
        ("target", "INT8 artifact", "method", "top-1 agreement [95% CI]", "accuracy change, points [95% CI]",
         "INT8 weight layers", "size INT8/FP32", "latency INT8/FP32 [95% CI]", "images"),
        tuple(rows),
        ("target", "int8_key", "method", "agreement", "agreement_low", "agreement_high", "accuracy_change_points",
         "accuracy_change_low", "accuracy_change_high", "layers_int8", "layers_total", "size_ratio",
         "latency_ratio", "n_images"),
        tuple(raw),
        note="dynamic: activations quantized at run time (the original study's method); static: calibrated "
             "activation ranges; hybrid: dynamic, with the depthwise convs static (every layer INT8); mixed: static with the most quantization-sensitive layer groups kept FP32; "
             "qat: quantization-aware training. Accuracy change = INT8 minus FP32 on the same images.")
