"""The report's views: frozen dataclasses holding everything a report shows, and its settings.

``device_results.report.loading.load_report_data`` fills them from the results store; the table,
plot and HTML modules only lay them out. Definitions the numbers follow are in ``loading``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

HOST_KINDS = ("host-cpu", "host-cuda")


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


def _measured(source: str, is_virtual: bool) -> bool:
    # 'not recorded' (a database older than the record): a phone's or the host's readings were its
    # sensors'; a virtual device's may have been its profile's constants, so they are not shown as measured
    if source == "not recorded":
        return not is_virtual
    return source in ("sensor", "host sensor")


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
    thermal_source: str = "not recorded"  # store.TELEMETRY_SOURCES, or 'not recorded' (older databases)
    freq_source: str = "not recorded"

    @property
    def temperature_measured(self) -> bool:
        """Whether its temperatures are measurements (a sensor's), not a profile's constants or unknown."""
        return _measured(self.thermal_source, self.is_virtual)

    @property
    def frequency_measured(self) -> bool:
        """Whether its CPU frequencies are measurements (a sensor's), not a profile's constants or unknown."""
        return _measured(self.freq_source, self.is_virtual)

    @property
    def telemetry_note(self) -> str:
        """Where its temperatures and frequencies came from, in words for the targets table."""
        def one(what: str, source: str, measured: bool) -> str:
            return f"{what}: {source}" if measured else f"{what}: not measured ({source})"

        return "; ".join((one("temperature", self.thermal_source, self.temperature_measured),
                          one("CPU frequency", self.freq_source, self.frequency_measured)))

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
    # the export's check against the eager model (export.artifact.Parity as a dict: images,
    # top1_agreement, max_abs_diff, passed, threshold); None when neither the run nor the manifest has it
    parity: Mapping[str, Any] | None = None

    @property
    def parity_below_threshold(self) -> bool:
        """An INT8 artifact whose top-1 agreement with eager fell under the export's threshold."""
        p = self.parity
        if self.precision == "fp32" or not p or p.get("top1_agreement") is None:
            return False
        if "passed" in p:
            return not p["passed"]
        m = re.search(r"top1_agreement >= ([0-9.]+)", str(p.get("threshold", "")))
        if m is None:
            return False
        return float(p["top1_agreement"]) < float(m.group(1))


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
