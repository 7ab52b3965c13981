"""One self-contained HTML page: inline CSS, plots as ``data:`` URIs, no scripts, no network resources.

A Content-Security-Policy meta tag forbids every fetch except ``data:`` images, so the page opens
from disk (or an e-mail attachment) exactly as it was written.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from device_results.report.tables import Table, to_html
from device_results.report.views import ReportData

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;padding:0 24px 48px;
color:#1b1f24;line-height:1.45;font-size:14px}
h1{margin:24px 0 4px;font-size:26px}h2{margin-top:36px;border-bottom:2px solid #d0d7de;padding-bottom:4px;font-size:20px}
h3{font-size:15px;margin:22px 0 6px}
.meta{color:#57606a;font-size:13px}
.warnings{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:10px 16px;margin:16px 0}
.warnings h2{border:none;margin:4px 0;font-size:17px}.warnings ul{margin:6px 0;padding-left:20px}
.w-virtual,.w-cross-hardware{font-weight:600}
.tag{display:inline-block;font-size:11px;font-weight:700;border-radius:3px;padding:0 5px;margin-right:6px;color:#fff;
background:#6e7781}
.tag.virtual{background:#8250df}.tag.cross-hardware{background:#cf222e}.tag.thermal,.tag.frequency{background:#bc4c00}
.tag.variability{background:#9a6700}.tag.failure,.tag.unsupported{background:#57606a}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;margin:4px 0 4px;font-size:12.5px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}tr.flag td{background:#fbefff}
td{font-variant-numeric:tabular-nums}
.note{color:#57606a;font-size:12px;margin:2px 0 10px}
figure{margin:12px 0}figure img{max-width:100%;border:1px solid #eaeef2}
figcaption{color:#57606a;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:10px}
details{margin:8px 0}summary{cursor:pointer;color:#0969da}
.defs{font-size:12px;color:#57606a}
"""


def _img(path: Path, title: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(title)}" title="{html.escape(title)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(title)}</figcaption></figure>')


def render_html(data: ReportData, tables: Sequence[Table], plots: Sequence[tuple[Path, str]], generated_at: str) -> str:
    """The whole page as a string."""
    by_key: Mapping[str, Table] = {t.key: t for t in tables}
    plot_by_name = {p.name: (p, title) for p, title in plots}

    def table(key: str) -> str:
        return to_html(by_key[key]) if key in by_key else ""

    def plot(name: str) -> str:
        return _img(*plot_by_name[name]) if name in plot_by_name else ""

    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>{html.escape(data.config.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(data.config.title)}</h1>",
        f'<p class="meta">Generated {html.escape(generated_at)} from <code>{html.escape(data.db_path)}</code></p>',
        "<ul class=\"meta\">",
    ]
    for run in data.runs:
        datasets = ", ".join(f"{role}: {name}" for role, name in run.datasets)
        parts.append(f"<li>run <code>{html.escape(run.run_id)}</code> <b>{html.escape(run.status)}</b> - "
                     f"{run.experiments} experiments, batch {run.batch_size}, {run.warmup} warm-up + {run.repeats} "
                     f"timed repeats, seed {run.seed}; {html.escape(datasets)}</li>")
    parts.append("</ul>")
    if data.warnings:
        parts.append('<div class="warnings" id="warnings"><h2>Read this first</h2><ul>')
        for w in data.warnings:
            parts.append(f'<li class="w-{html.escape(w.kind)}"><span class="tag {html.escape(w.kind)}">'
                         f"{html.escape(w.kind.upper())}</span>{html.escape(w.message)}</li>")
        parts.append("</ul></div>")

    parts.append('<h2 id="what-ran">1. What ran</h2>')
    parts.append(table("targets"))
    parts.append(table("artifacts"))

    parts.append('<h2 id="latency">2. Host vs phone latency</h2>')
    parts.append(table("latency"))
    parts.append(table("target_ratios"))
    parts.append(plot("latency_distribution.png"))
    parts.append(plot("latency_across_experiments.png"))

    if "devices" in by_key:
        parts.append('<h2 id="devices">Devices side by side</h2>')
        parts.append('<p class="note">One row per device. Rankings compare different devices: every such comparison '
                     "is CROSS-HARDWARE and measures the devices, not the model. The FP32/INT8 ratio is paired on "
                     "each device.</p>")
        parts += [table("devices"), table("device_ranking"), table("device_int8")]

    parts.append('<h2 id="fp32-int8">3. FP32 vs INT8 on each target</h2>')
    parts.append('<p class="note">The original study timed FP32 on a GPU and INT8 on a CPU, so its latency '
                 "comparison measured the hardware, not quantization. Every row below compares the two models on "
                 "ONE target, on the same images; any cross-hardware row is marked as such.</p>")
    parts.append(table("fp32_vs_int8"))
    parts.append(table("int8_methods"))
    parts.append(plot("accuracy_fp32_vs_int8.png"))
    parts.append(table("accuracy"))
    if "experiments" in by_key:
        parts.append(f"<details open><summary>Per-experiment table ({len(by_key['experiments'].rows)} rows)"
                     f"</summary>{table('experiments')}</details>")

    parts.append('<h2 id="per-class">4. Per-class view</h2>')
    parts.append(plot("per_class_f1.png"))
    confusion = [p for p in plots if p[0].name.startswith("confusion_")]
    if confusion:
        parts.append('<div class="grid">' + "".join(_img(p, t) for p, t in confusion) + "</div>")
    if "per_class" in by_key:
        parts.append(f"<details><summary>Per-class table ({len(by_key['per_class'].rows)} rows)</summary>"
                     f"{table('per_class')}</details>")
    parts.append(table("cross_target_agreement"))

    from device_results.report.profiles import CHART, profile_section_html

    parts.append(profile_section_html(dict(by_key), plot(CHART), to_html))

    parts.append('<h2 id="definitions">Definitions</h2><ul class="defs">'
                 "<li>Per-image latency = timed batch latency / batch size; median and p90 over every timed repeat, "
                 "with distribution-free order-statistic 95% intervals.</li>"
                 "<li>Latency ratios: ratio of medians with a seeded percentile-bootstrap 95% interval, paired by "
                 "experiment when both sides ran the same experiments.</li>"
                 "<li>Accuracy: Wilson 95% intervals. McNemar: exact two-sided test on the paired correctness.</li>"
                 f"<li>Called out: latency CV above {data.config.cv_threshold:g}, a temperature rise above "
                 f"{data.config.temp_rise_c:g} C, a CPU frequency drop above {data.config.freq_drop_fraction:.0%}."
                 "</li><li>VIRTUAL: the virtual Android device runs on the host CPU; its numbers are not a phone's."
                 "</li></ul>")
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
