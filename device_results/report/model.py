"""The report's view model: everything a report shows, read from the results store into frozen dataclasses.

``load_report_data(store, run_ids, config)`` does all the reading and all the arithmetic (through
``device_results.stats``); the table, plot and HTML modules only lay out what it returns. Nothing
here writes files or prints.

Definitions the report quotes:

- **Per-image latency** of a timed repeat = the repeat's batch latency / the batch size.
- **Intervals of a median or p90** are distribution-free order-statistic intervals (exact binomial
  coverage >= 95% when the timed repeats are independent); repeats of one batch are correlated, so
  read them as a lower bound on the true uncertainty.
- **Ratios of latency** (INT8/FP32 on one target, a target against the reference host) are ratios of
  medians with a seeded percentile-bootstrap 95% interval: paired by experiment when both sides ran
  the same experiments of one run, unpaired otherwise.
- **Accuracy** intervals are Wilson 95% intervals; **McNemar** is the exact two-sided test on the
  paired correctness of the same images.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_results import stats, summary
from device_results.store import ResultsStore, RunRow

log = logging.getLogger(__name__)

HOST_KINDS = ("host-cpu", "host-cuda")
_KIND_ORDER = {"host-cpu": 0, "host-cuda": 1, "android": 2}
EAGER_KEY = "eager-fp32"


@dataclass(frozen=True)
class ReportConfig:
    """What the report calls out and how intervals are computed.

    Attributes:
        title: the page's heading.
        cv_threshold: a (target, model) whose per-batch latency CV exceeds this is called out.
        temp_rise_c: a target whose hottest zone rises by more than this over a run is called out.
        freq_drop_fraction: a CPU frequency falling by more than this share during a run is called out.
        bootstrap_resamples: resamples of every bootstrap ratio interval.
        seed: the bootstrap seed (the same store and seed give the same report).
        headline_format: the format whose FP32/INT8 pair fills the per-experiment table.
    """

    title: str = "emobench report"
    cv_threshold: float = 0.15
    temp_rise_c: float = 5.0
    freq_drop_fraction: float = 0.10
    bootstrap_resamples: int = 2000
    seed: int = 0
    headline_format: str = "executorch"


# --- views ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A value with a 95% interval (``low``/``high`` may be NaN where undefined)."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class RunView:
    run_id: str
    label: str
    status: str
    status_message: str
    created_at: str
    finished_at: str | None
    experiments: int
    batch_size: int | None
    repeats: int | None
    warmup: int | None
    seed: int | None
    datasets: tuple[tuple[str, str], ...]  # (role, name)


@dataclass(frozen=True)
class TargetView:
    """One target of one run. ``label`` is unique in the report (it names the run when several are shown)."""

    run_id: str
    target_id: str
    label: str
    kind: str
    is_virtual: bool
    description: tuple[tuple[str, str], ...]
    library_versions: tuple[tuple[str, str], ...]
    threads: int | None
    affinity_mask: str | None
    how_obtained: str
    unsupported: tuple[tuple[str, str], ...]  # (model key, reason)
    info_json: str = ""

    @property
    def is_host(self) -> bool:
        return self.kind in HOST_KINDS

    @property
    def hardware(self) -> str:
        """What the numbers measure: the host's CPU, its GPU, or a device (virtual ones run on the host CPU)."""
        if self.kind == "host-cuda":
            return "host GPU"
        if self.kind == "host-cpu" or self.is_virtual:
            return "host CPU"
        return f"device {self.target_id}"


@dataclass(frozen=True)
class ArtifactView:
    run_id: str
    model_key: str
    format: str
    precision: str
    quantization: str
    size_bytes: int
    sha256: str
    layers_quantized: int | None
    layers_total: int | None


@dataclass(frozen=True)
class LatencyView:
    """Latency of one model on one target, over every timed repeat of every experiment."""

    target: str
    model_key: str
    n_repeats: int
    n_experiments: int
    per_image_median_ms: Interval
    per_image_p90_ms: Interval
    per_image_mean_ms: float
    batch_median_ms: float
    batch_cv: float
    per_image_ms: tuple[float, ...] = field(repr=False, default=())


@dataclass(frozen=True)
class RatioView:
    """latency(target) / latency(reference) on the same artifact (same sha256)."""

    target: str
    reference: str
    model_key: str
    ratio: Interval
    paired: bool
    cross_hardware: bool
    note: str


@dataclass(frozen=True)
class AccuracyView:
    target: str
    model_key: str
    role: str  # 'seen', 'unseen' or 'all'
    correct: int
    n: int
    accuracy: Interval


@dataclass(frozen=True)
class PairView:
    """FP32 against INT8 on one target, on the same images."""

    target: str
    fp32_key: str
    int8_key: str
    n_images: int
    fp32_accuracy: Mapping[str, Interval]  # by role, plus 'all'
    int8_accuracy: Mapping[str, Interval]
    agreement: Interval
    only_fp32_correct: int
    only_int8_correct: int
    mcnemar_p: float
    latency_ratio: Interval | None  # INT8 / FP32 median batch latency, paired by experiment
    size_ratio: float | None
    cross_hardware: bool = False
    note: str = ""


@dataclass(frozen=True)
class ExperimentRowView:
    """The original study's per-experiment line: a batch, both models' accuracy and latency."""

    target: str
    fp32_key: str
    int8_key: str
    experiment_index: int
    role: str
    dataset: str
    n_images: int
    fp32_correct: int | None
    int8_correct: int | None
    fp32_batch_ms: float | None
    int8_batch_ms: float | None


@dataclass(frozen=True)
class ThermalPoint:
    """One experiment on one target: median batch latency per model and the telemetry around it."""

    experiment_index: int
    batch_ms_by_model: Mapping[str, float]
    temp_before_c: float | None
    temp_after_c: float | None
    freq_before_mhz: float | None
    freq_after_mhz: float | None


@dataclass(frozen=True)
class ClassView:
    """Per-class metrics of one model on one target (``metrics`` as ``training.metrics`` returns them)."""

    target: str
    model_key: str
    metrics: Mapping[str, Any]


@dataclass(frozen=True)
class AgreementView:
    """Top-1 agreement of one artifact's predictions on two targets of one run (same images)."""

    model_key: str
    target_a: str
    target_b: str
    agreement: Interval
    n: int
    max_abs_logit_diff: float | None = None


@dataclass(frozen=True)
class Warning_:
    """A caution for the reader. ``kind``: cross-hardware, virtual, thermal, frequency, variability, failure."""

    kind: str
    target: str
    message: str


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows."""

    config: ReportConfig
    db_path: str
    runs: tuple[RunView, ...]
    targets: tuple[TargetView, ...]
    artifacts: tuple[ArtifactView, ...]
    class_names: tuple[str, ...]
    model_keys: tuple[str, ...]
    latencies: tuple[LatencyView, ...]
    ratios: tuple[RatioView, ...]
    accuracies: tuple[AccuracyView, ...]
    pairs: tuple[PairView, ...]
    experiment_rows: tuple[ExperimentRowView, ...]
    thermal: Mapping[str, tuple[ThermalPoint, ...]]
    per_class: tuple[ClassView, ...]
    agreements: tuple[AgreementView, ...]
    warnings: tuple[Warning_, ...]
    reference_target: str | None

    def target(self, label: str) -> TargetView:
        for t in self.targets:
            if t.label == label:
                return t
        raise KeyError(label)

    def latency(self, target: str, model_key: str) -> LatencyView | None:
        for lat in self.latencies:
            if lat.target == target and lat.model_key == model_key:
                return lat
        return None


# --- reading --------------------------------------------------------------------------------------


@dataclass
class _Cells:
    """Everything stored for one target, grouped for the computations below."""

    target: TargetView
    batch_ms: dict[str, dict[int, list[float]]]  # model -> experiment -> repeats
    batch_size: dict[tuple[str, int], int]
    predictions: dict[str, dict[tuple[int, int], tuple[int, int]]]  # model -> (exp, pos) -> (label, pred)
    failed: dict[str, list[tuple[int, str]]]
    telemetry: dict[int, dict[str, Mapping[str, Any]]]


def order_statistic_interval(values: Sequence[float], q: float, *, confidence: float = 0.95) -> Interval:
    """The q-quantile (0..1) of ``values`` with a distribution-free order-statistic interval.

    The interval is ``[x_(l), x_(u)]`` (1-based ranks) with ``l`` and ``u`` the equal-tailed
    binomial quantiles around ``n q``, widened until the exact coverage ``P(l <= B < u)``,
    ``B ~ Binomial(n, q)``, reaches ``confidence``; with too few values the bounds are NaN.
    """
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n == 0:
        raise stats.StatsError("quantile of no values")
    if not 0 < q < 1:
        raise stats.StatsError(f"quantile q must lie in (0, 1), got {q}")
    value = stats.percentile(xs, q * 100)
    log_q, log_1q = math.log(q), math.log1p(-q)
    pmf = [math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_q + (n - k) * log_1q)
           for k in range(n + 1)]
    cdf = [0.0]
    for p in pmf:
        cdf.append(cdf[-1] + p)  # cdf[k] = P(B < k)
    alpha = (1 - confidence) / 2
    lo = max(1, next((k for k in range(n + 1) if cdf[k + 1] > alpha), 1))
    hi = min(n, next((k for k in range(n + 1) if cdf[k] >= 1 - alpha), n))
    while cdf[hi] - cdf[lo] < confidence and (lo > 1 or hi < n):
        if lo > 1 and (hi >= n or pmf[lo - 1] >= pmf[hi]):
            lo -= 1
        else:
            hi += 1
    if cdf[hi] - cdf[lo] < confidence or lo >= hi:
        return Interval(value, math.nan, math.nan)
    return Interval(value, xs[lo - 1], xs[hi - 1])


def _describe(kind: str, info: Mapping[str, Any], is_virtual: bool) -> tuple[tuple[str, str], ...]:
    """The lines a reader wants about a device or host (the CSV keeps everything it recorded)."""
    wanted = (
        ("model", ("model",)), ("manufacturer", ("manufacturer",)), ("SoC", ("soc",)), ("ABI", ("abi", "abis")),
        ("Android", ("android_release",)), ("SDK", ("sdk",)), ("CPU", ("cpu", "cpu_model", "processor")),
        ("CPU cores", ("cpu_cores", "cpu_count")), ("GPU", ("gpu", "cuda_device", "gpu_name")),
        ("RAM", ("ram_bytes", "memory_bytes")), ("OS", ("os", "platform")), ("kernel", ("kernel",)),
        ("serial", ("serial",)),
    )
    out: list[tuple[str, str]] = []
    used: set[str] = set()
    for label, keys in wanted:
        for key in keys:
            value = info.get(key)
            if value not in (None, "", [], {}):
                if label == "RAM" and isinstance(value, int | float):
                    text = f"{value / 2**30:.1f} GiB"
                else:
                    text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
                out.append((label, text))
                used.update(keys)
                break
    if is_virtual:
        out.insert(0, ("virtual", "yes: a virtual device running on the host CPU, not a phone"))
    return tuple(out)


def _target_labels(runs: Sequence[RunRow], target_rows: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[tuple[str, str], str]:
    several = len(runs) > 1
    labels: dict[tuple[str, str], str] = {}
    for run_id, row in target_rows:
        label = row["target_id"]
        if several:
            run = next(r for r in runs if r.run_id == run_id)
            label = f"{label} [{run.label or run.run_id}]"
        labels[(run_id, row["target_id"])] = label
    return labels


def _run_view(run: RunRow, n_experiments: int) -> RunView:
    plan = run.plan or {}
    datasets = tuple((str(d.get("role", "")), str(d.get("name", ""))) for d in plan.get("datasets", ()) if isinstance(d, Mapping))
    return RunView(run_id=run.run_id, label=run.label or run.run_id, status=run.status,
                   status_message=run.status_message, created_at=run.created_at, finished_at=run.finished_at,
                   experiments=n_experiments, batch_size=plan.get("batch_size"), repeats=plan.get("repeats"),
                   warmup=plan.get("warmup"), seed=plan.get("seed"), datasets=datasets)


def _manifest_layer_counts(plan: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """model key -> (layers quantized, layers total) from the run's export manifest, when it is still on disk."""
    path = plan.get("manifest_path") if isinstance(plan, Mapping) else None
    try:
        manifest = json.loads(Path(str(path)).read_text()) if path else {}
    except (OSError, ValueError):
        return {}
    out = {}
    for art in manifest.get("artifacts", []) if isinstance(manifest, Mapping) else []:
        quant = art.get("quantization") if isinstance(art, Mapping) else None
        if isinstance(quant, Mapping) and "layers_quantized" in quant:
            key = f"{art.get('format')}-{art.get('precision')}" + (f"-{art['mode']}" if art.get("mode") else "")
            out[key] = (int(quant["layers_quantized"]), int(quant.get("layers_total", 0)))
    return out


def _artifact_view(run_id: str, row: Mapping[str, Any], layers: Mapping[str, tuple[int, int]]) -> ArtifactView:
    entry = json.loads(row["entry_json"] or "{}")
    quant = entry.get("quantization") if isinstance(entry, Mapping) else None
    quant = quant if isinstance(quant, Mapping) else {}
    if not quant and row["model_key"] in layers:
        quant = dict(zip(("layers_quantized", "layers_total"), layers[row["model_key"]], strict=True))
    return ArtifactView(run_id=run_id, model_key=row["model_key"], format=row["format"], precision=row["precision"],
                        quantization=row["quantization"], size_bytes=int(row["size_bytes"]), sha256=row["sha256"],
                        layers_quantized=quant.get("layers_quantized"), layers_total=quant.get("layers_total"))


def _load_cells(store: ResultsStore, run_id: str, target: TargetView) -> _Cells:
    batch_ms: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    batch_size: dict[tuple[str, int], int] = {}
    failed: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for cell in store.rows(run_id, "cells", target_id=target.target_id):
        if cell["status"] == "ok":
            batch_size[(cell["model_key"], cell["experiment_index"])] = int(cell["batch_size"])
        else:
            failed[cell["model_key"]].append((cell["experiment_index"], cell["message"]))
    for lat in store.rows(run_id, "latencies", target_id=target.target_id):
        batch_ms[lat["model_key"]][lat["experiment_index"]].append(float(lat["latency_ms"]))
    predictions: dict[str, dict[tuple[int, int], tuple[int, int]]] = defaultdict(dict)
    for p in store.rows(run_id, "predictions", target_id=target.target_id):
        predictions[p["model_key"]][(p["experiment_index"], p["position"])] = (int(p["label"]), int(p["prediction"]))
    telemetry: dict[int, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for t in store.rows(run_id, "telemetry", target_id=target.target_id):
        telemetry[t["experiment_index"]][t["phase"]] = {"temps": json.loads(t["temperatures_json"]),
                                                        "freqs": json.loads(t["cpu_freqs_json"])}
    return _Cells(target=target, batch_ms=batch_ms, batch_size=batch_size, predictions=predictions, failed=failed,
                  telemetry=telemetry)


def _median(values: Sequence[float]) -> float:
    return stats.percentile(values, 50)


def _target_ratio(num: _Cells, den: _Cells, model_key: str, config: ReportConfig, paired: bool) -> Interval | None:
    """Median per-image latency of one model on ``num`` over ``den``, with a bootstrap interval.

    Targets of one run ran the same experiments: the per-experiment medians are resampled in pairs.
    Targets of different runs are resampled independently over every timed repeat.
    """
    def per_image(cells: _Cells) -> dict[int, list[float]]:
        return {e: [ms / cells.batch_size.get((model_key, e), 1) for ms in reps]
                for e, reps in cells.batch_ms.get(model_key, {}).items() if reps}

    a, b = per_image(num), per_image(den)
    if paired:
        common = sorted(set(a) & set(b))
        xs, ys = [_median(a[e]) for e in common], [_median(b[e]) for e in common]
    else:
        xs, ys = [v for vs in a.values() for v in vs], [v for vs in b.values() for v in vs]
    if not xs or not ys:
        return None
    try:
        return _iv(stats.bootstrap_ratio_ci(xs, ys, n_resamples=config.bootstrap_resamples, seed=config.seed,
                                            paired=paired))
    except stats.StatsError:
        return None


def _iv(p: stats.Proportion | stats.RatioInterval) -> Interval:
    if isinstance(p, stats.RatioInterval):
        return Interval(p.ratio, p.low, p.high)
    return Interval(p.value, p.low, p.high)


def _latency_view(cells: _Cells, row: summary.LatencyRow) -> LatencyView:
    """``summary``'s latency statistics plus order-statistic intervals over the raw per-image values."""
    per_exp = cells.batch_ms.get(row.model_key, {})
    per_image = [ms / cells.batch_size.get((row.model_key, exp), row.batch_size)
                 for exp, reps in sorted(per_exp.items()) for ms in reps]
    median = order_statistic_interval(per_image, 0.5)
    p90 = order_statistic_interval(per_image, 0.9)
    return LatencyView(
        target=cells.target.label, model_key=row.model_key, n_repeats=row.per_batch.n, n_experiments=len(per_exp),
        per_image_median_ms=Interval(row.per_image.median_ms, median.low, median.high),
        per_image_p90_ms=Interval(row.per_image.p90_ms, p90.low, p90.high),
        per_image_mean_ms=row.per_image.mean_ms, batch_median_ms=row.per_batch.median_ms, batch_cv=row.per_batch.cv,
        per_image_ms=tuple(per_image))


def _ratio_note(target: TargetView, reference: TargetView) -> tuple[bool, str]:
    cross = target.hardware != reference.hardware
    if target.is_virtual:
        return cross, "virtual device: runs on the host CPU, so this is not a phone measurement"
    if cross:
        return cross, f"different hardware ({target.hardware} vs {reference.target_id}'s {reference.hardware}), same artifact"
    return cross, "same hardware"


def _pair_view(row: summary.PairRow, label: str, acc: Mapping[tuple[str, str, str], Interval]) -> PairView:
    by_role = {role: acc[(row.target_id, row.fp32_key, role)] for role in ("seen", "unseen", "all")
               if (row.target_id, row.fp32_key, role) in acc}
    by_role_int8 = {role: acc[(row.target_id, row.int8_key, role)] for role in ("seen", "unseen", "all")
                    if (row.target_id, row.int8_key, role) in acc}
    return PairView(target=label, fp32_key=row.fp32_key, int8_key=row.int8_key, n_images=row.images,
                    fp32_accuracy=by_role, int8_accuracy=by_role_int8, agreement=_iv(row.agreement),
                    only_fp32_correct=row.mcnemar.only_a_correct, only_int8_correct=row.mcnemar.only_b_correct,
                    mcnemar_p=row.mcnemar.p_value,
                    latency_ratio=_iv(row.latency_ratio) if row.latency_ratio else None, size_ratio=row.size_ratio)


def _fp32_twin(int8_key: str, keys: Sequence[str], formats: Mapping[str, str],
               precisions: Mapping[str, str]) -> str | None:
    fmt = formats.get(int8_key)
    return next((k for k in keys if formats.get(k) == fmt and precisions.get(k) == "fp32"), None) or (
        EAGER_KEY if EAGER_KEY in keys else None)


def _hottest(reading: Mapping[str, Any] | None) -> float | None:
    temps = [float(v) for v in (reading or {}).get("temps", {}).values() if isinstance(v, int | float)]
    return max(temps) if temps else None


def _mean_freq_mhz(reading: Mapping[str, Any] | None) -> float | None:
    freqs = [float(v) for v in (reading or {}).get("freqs", {}).values() if isinstance(v, int | float) and v > 0]
    return sum(freqs) / len(freqs) / 1000.0 if freqs else None


def _thermal(cells: _Cells, models: Sequence[str]) -> tuple[ThermalPoint, ...]:
    indices = sorted({e for m in models for e in cells.batch_ms.get(m, {})} | set(cells.telemetry))
    points = []
    for exp in indices:
        tel = cells.telemetry.get(exp, {})
        points.append(ThermalPoint(
            experiment_index=exp,
            batch_ms_by_model={m: _median(cells.batch_ms[m][exp]) for m in models if cells.batch_ms.get(m, {}).get(exp)},
            temp_before_c=_hottest(tel.get("before")), temp_after_c=_hottest(tel.get("after")),
            freq_before_mhz=_mean_freq_mhz(tel.get("before")), freq_after_mhz=_mean_freq_mhz(tel.get("after"))))
    return tuple(points)


def _telemetry_warnings(cells: _Cells, config: ReportConfig) -> list[Warning_]:
    out: list[Warning_] = []
    label = cells.target.label
    temps = [(e, t) for e in sorted(cells.telemetry)
             for t in (_hottest(cells.telemetry[e].get("before")), _hottest(cells.telemetry[e].get("after")))
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


def load_report_data(store: ResultsStore, run_ids: Sequence[str], config: ReportConfig | None = None) -> ReportData:
    """Read runs from the store and compute every table the report shows.

    Args:
        store: an open results store.
        run_ids: run ids (or unique prefixes, or ``latest``), in the order they should appear.
        config: thresholds and bootstrap settings.

    Raises:
        RunNotFoundError: a run id that the store does not hold.
        StoreError: a run holds no targets at all (nothing ran).
    """
    from training.metrics import classification_metrics

    config = config or ReportConfig()
    resolved = list(dict.fromkeys(store.resolve_run_id(r) for r in run_ids))
    runs = [store.get_run(r) for r in resolved]
    target_rows = [(r.run_id, row) for r in runs for row in sorted(
        store.rows(r.run_id, "targets"), key=lambda row: (_KIND_ORDER.get(row["kind"], 9), bool(row["is_virtual"]),
                                                          row["target_id"]))]
    labels = _target_labels(runs, target_rows)

    run_views, targets, artifacts = [], [], []
    all_cells: list[_Cells] = []
    experiments_by_run: dict[str, dict[int, Mapping[str, Any]]] = {}
    class_names: tuple[str, ...] = ()
    for run in runs:
        exps = store.rows(run.run_id, "experiments")
        experiments_by_run[run.run_id] = {e["experiment_index"]: e for e in exps}
        run_views.append(_run_view(run, len(exps)))
        layers = _manifest_layer_counts(run.plan)
        artifacts.extend(_artifact_view(run.run_id, a, layers) for a in store.rows(run.run_id, "artifacts"))
        if not class_names:
            class_names = tuple(run.plan.get("class_names", ()))
        support = defaultdict(list)
        for tm in store.rows(run.run_id, "target_models"):
            if not tm["supported"]:
                support[tm["target_id"]].append((tm["model_key"], tm["reason"]))
        for _, row in (tr for tr in target_rows if tr[0] == run.run_id):
            info = json.loads(row["info_json"])
            versions = json.loads(row["library_versions_json"])
            tv = TargetView(
                run_id=run.run_id, target_id=row["target_id"], label=labels[(run.run_id, row["target_id"])],
                kind=row["kind"], is_virtual=bool(row["is_virtual"]),
                description=_describe(row["kind"], info, bool(row["is_virtual"])),
                library_versions=tuple(sorted((str(k), str(v)) for k, v in versions.items())),
                threads=row["threads"], affinity_mask=row["affinity_mask"], how_obtained=row["how_obtained"],
                unsupported=tuple(support.get(row["target_id"], ())), info_json=row["info_json"])
            targets.append(tv)
            all_cells.append(_load_cells(store, run.run_id, tv))

    formats = {a.model_key: a.format for a in artifacts}
    precisions = {a.model_key: a.precision for a in artifacts}
    model_keys = tuple(dict.fromkeys(a.model_key for a in artifacts))
    if not class_names:
        top = max((p[0] for c in all_cells for m in c.predictions.values() for p in m.values()), default=-1)
        class_names = tuple(str(i) for i in range(top + 1))

    cells_of = {(c.target.run_id, c.target.target_id): c for c in all_cells}
    summaries = {run.run_id: summary.summarize_run(store, run.run_id) for run in runs}
    reference = next((c for c in all_cells if c.target.kind == "host-cpu"), None)

    accuracies: list[AccuracyView] = []
    latencies: list[LatencyView] = []
    pairs: list[PairView] = []
    ratios: list[RatioView] = []
    agreements: list[AgreementView] = []
    for run_id, s in summaries.items():
        acc: dict[tuple[str, str, str], Interval] = {}
        for row in s.accuracy:
            acc[(row.target_id, row.model_key, row.dataset)] = _iv(row.accuracy)
            accuracies.append(AccuracyView(labels[(run_id, row.target_id)], row.model_key, row.dataset,
                                           row.accuracy.successes, row.accuracy.n, _iv(row.accuracy)))
        latencies.extend(_latency_view(cells_of[(run_id, row.target_id)], row) for row in s.latency)
        pairs.extend(_pair_view(row, labels[(run_id, row.target_id)], acc) for row in s.int8_vs_fp32)
        for row in s.across_targets:
            agreements.append(AgreementView(row.model_key, labels[(run_id, row.reference_target)],
                                            labels[(run_id, row.other_target)], _iv(row.agreement), row.images,
                                            row.max_abs_logit_diff))
    if reference is not None:  # every other target against host-cpu, on the same artifact (same sha256)
        ref_sha = {a.model_key: a.sha256 for a in artifacts if a.run_id == reference.target.run_id}
        for c in all_cells:
            if c is reference:
                continue
            sha = {a.model_key: a.sha256 for a in artifacts if a.run_id == c.target.run_id}
            same_run = c.target.run_id == reference.target.run_id
            for m in model_keys:
                if m in sha and sha[m] == ref_sha.get(m) and (got := _target_ratio(c, reference, m, config, same_run)):
                    cross, note = _ratio_note(c.target, reference.target)
                    ratios.append(RatioView(c.target.label, reference.target.label, m, got, same_run, cross, note))
    order = {t.label: i for i, t in enumerate(targets)}

    def by_target(item) -> tuple[int, int]:
        return order.get(item.target, len(order)), model_keys.index(item.model_key) if item.model_key in model_keys else 0

    for items in (ratios, accuracies, latencies):
        items.sort(key=by_target)
    pairs.sort(key=lambda p: order.get(p.target, len(order)))

    experiment_rows: list[ExperimentRowView] = []
    per_class: list[ClassView] = []
    thermal: dict[str, tuple[ThermalPoint, ...]] = {}
    for c in all_cells:
        ran = [m for m in model_keys if c.predictions.get(m) or c.batch_ms.get(m)]
        for m in ran:
            preds = c.predictions.get(m, {})
            if preds:
                ordered = [preds[k] for k in sorted(preds)]
                per_class.append(ClassView(c.target.label, m, classification_metrics(
                    [p[0] for p in ordered], [p[1] for p in ordered], class_names)))
        headline = _headline_pair(pairs, c.target.label, config.headline_format, formats)
        if headline is not None:
            experiment_rows.extend(_experiment_rows(c, headline, experiments_by_run[c.target.run_id]))
        thermal[c.target.label] = _thermal(c, ran)

    pairs.extend(_cross_hardware_pairs(all_cells, model_keys, formats, precisions, artifacts, config))
    warnings = _warnings(all_cells, targets, latencies, pairs, runs, config)
    return ReportData(
        config=config, db_path=str(store.path), runs=tuple(run_views), targets=tuple(targets),
        artifacts=tuple(artifacts), class_names=class_names, model_keys=model_keys, latencies=tuple(latencies),
        ratios=tuple(ratios), accuracies=tuple(accuracies), pairs=tuple(pairs),
        experiment_rows=tuple(experiment_rows), thermal=thermal, per_class=tuple(per_class),
        agreements=tuple(agreements), warnings=tuple(warnings),
        reference_target=reference.target.label if reference else None)


def _headline_pair(pairs: Sequence[PairView], target: str, fmt: str, formats: Mapping[str, str]) -> PairView | None:
    mine = [p for p in pairs if p.target == target and not p.cross_hardware]
    for p in mine:
        if formats.get(p.int8_key) == fmt and formats.get(p.fp32_key) == fmt:
            return p
    return mine[0] if mine else None


def _experiment_rows(cells: _Cells, pair: PairView, experiments: Mapping[int, Mapping[str, Any]]) -> list[ExperimentRowView]:
    rows = []
    for index in sorted(experiments):
        exp = experiments[index]

        def correct(model: str, index: int = index) -> int | None:
            preds = [v for k, v in cells.predictions.get(model, {}).items() if k[0] == index]
            return sum(1 for label, pred in preds if label == pred) if preds else None

        def batch_ms(model: str, index: int = index) -> float | None:
            reps = cells.batch_ms.get(model, {}).get(index)
            return _median(reps) if reps else None

        rows.append(ExperimentRowView(
            target=cells.target.label, fp32_key=pair.fp32_key, int8_key=pair.int8_key, experiment_index=index,
            role=exp["dataset_role"], dataset=exp["dataset_name"], n_images=len(json.loads(exp["image_ids_json"])),
            fp32_correct=correct(pair.fp32_key), int8_correct=correct(pair.int8_key),
            fp32_batch_ms=batch_ms(pair.fp32_key), int8_batch_ms=batch_ms(pair.int8_key)))
    return rows


def _cross_hardware_pairs(all_cells: Sequence[_Cells], model_keys: Sequence[str], formats: Mapping[str, str],
                          precisions: Mapping[str, str], artifacts: Sequence[ArtifactView],
                          config: ReportConfig) -> list[PairView]:
    """The original study's comparison, FP32 on the GPU against INT8 on the CPU, labelled for what it is."""
    out = []
    for gpu in (c for c in all_cells if c.target.kind == "host-cuda"):
        cpu = next((c for c in all_cells if c.target.kind == "host-cpu" and c.target.run_id == gpu.target.run_id), None)
        if cpu is None:
            continue
        sizes = {a.model_key: a.size_bytes for a in artifacts if a.run_id == gpu.target.run_id}
        for int8 in (m for m in model_keys if precisions.get(m) == "int8" and cpu.batch_ms.get(m)):
            fp32 = _fp32_twin(int8, [m for m in model_keys if gpu.batch_ms.get(m)], formats, precisions)
            if fp32 is None:
                continue
            a = {e: _median(r) for e, r in gpu.batch_ms[fp32].items() if r}
            b = {e: _median(r) for e, r in cpu.batch_ms[int8].items() if r}
            common = sorted(set(a) & set(b))
            if not common:
                continue
            r = stats.bootstrap_ratio_ci([b[i] for i in common], [a[i] for i in common],
                                         n_resamples=config.bootstrap_resamples, seed=config.seed, paired=True)
            label = f"{fp32} on {gpu.target.label} vs {int8} on {cpu.target.label}"
            out.append(PairView(
                target=label, fp32_key=fp32, int8_key=int8, n_images=0, fp32_accuracy={}, int8_accuracy={},
                agreement=Interval(math.nan, math.nan, math.nan), only_fp32_correct=0, only_int8_correct=0,
                mcnemar_p=math.nan, latency_ratio=Interval(r.ratio, r.low, r.high),
                size_ratio=sizes[int8] / sizes[fp32] if sizes.get(fp32) and int8 in sizes else None,
                cross_hardware=True,
                note="DIFFERENT HARDWARE: FP32 on the GPU against INT8 on the CPU, as the original study did. "
                     "This ratio measures the GPU against the CPU, not quantization; use the same-target rows."))
    return out


def _warnings(all_cells: Sequence[_Cells], targets: Sequence[TargetView], latencies: Sequence[LatencyView],
              pairs: Sequence[PairView], runs: Sequence[RunRow], config: ReportConfig) -> list[Warning_]:
    out: list[Warning_] = []
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
