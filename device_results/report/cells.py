"""One target's stored cells, grouped for the report's computations, and readers of its telemetry."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from device_results import stats
from device_results.report.views import TargetView
from device_results.store import ResultsStore


@dataclass
class TargetCells:
    """Everything stored for one target of one run, grouped by model and experiment."""

    target: TargetView
    batch_ms: dict[str, dict[int, list[float]]]  # model -> experiment -> repeats
    batch_size: dict[tuple[str, int], int]
    predictions: dict[str, dict[tuple[int, int], tuple[int, int]]]  # model -> (exp, pos) -> (label, pred)
    failed: dict[str, list[tuple[int, str]]]
    telemetry: dict[int, dict[str, Mapping[str, Any]]]


def load_target_cells(store: ResultsStore, run_id: str, target: TargetView) -> TargetCells:
    """Every cell, latency, prediction and telemetry row of one target of one run."""
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
        # values that were not measured (a virtual device's profile constants) are left out here, so
        # no curve is drawn and no thermal/frequency warning is raised from them
        telemetry[t["experiment_index"]][t["phase"]] = {
            "temps": json.loads(t["temperatures_json"]) if target.temperature_measured else {},
            "freqs": json.loads(t["cpu_freqs_json"]) if target.frequency_measured else {}}
    return TargetCells(target=target, batch_ms=batch_ms, batch_size=batch_size, predictions=predictions, failed=failed,
                  telemetry=telemetry)


def median(values: Sequence[float]) -> float:
    """The median (type-7 percentile 50)."""
    return stats.percentile(values, 50)


def hottest(reading: Mapping[str, Any] | None) -> float | None:
    """The hottest zone of one telemetry reading, in deg C."""
    temps = [float(v) for v in (reading or {}).get("temps", {}).values() if isinstance(v, int | float)]
    return max(temps) if temps else None


def mean_freq_mhz(reading: Mapping[str, Any] | None) -> float | None:
    """The mean current CPU frequency of one telemetry reading, in MHz."""
    freqs = [float(v) for v in (reading or {}).get("freqs", {}).values() if isinstance(v, int | float) and v > 0]
    return sum(freqs) / len(freqs) / 1000.0 if freqs else None
