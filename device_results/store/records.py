"""What the runner hands the results store and what it reads back: plain frozen records.

Also the few helpers every writer of the store shares: the UTC timestamp, the canonical JSON that
hashes are taken over, and the artifacts' fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emobench_common.names import utc_now as utc_now  # re-exported: the store's timestamps


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the form hashes are taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- what the runner hands the store --------------------------------------------------------------


@dataclass(frozen=True)
class TargetRecord:
    """A target as it was found at the start of a run.

    ``thermal_source`` and ``freq_source`` say where its temperatures and CPU frequencies come from,
    one of ``TELEMETRY_SOURCES``: only 'sensor' and 'host sensor' readings are measurements.
    """

    target_id: str
    kind: str
    is_virtual: bool
    info: Mapping[str, Any]
    library_versions: Mapping[str, str]
    threads: int | None
    affinity_mask: str | None
    how_obtained: str
    thermal_source: str = "unavailable"
    freq_source: str = "unavailable"

    def __post_init__(self) -> None:
        for name in ("thermal_source", "freq_source"):
            if getattr(self, name) not in TELEMETRY_SOURCES:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {', '.join(TELEMETRY_SOURCES)}")


# Where a target's temperatures and CPU frequencies come from: a phone's own sensors, the host's
# (host targets, and a virtual device passing the host's through), a virtual device's profile
# constants (made up: never shown as measured), or nowhere. Databases written before this was
# recorded say 'not recorded' (see the schema's migration 2).
TELEMETRY_SOURCES = ("sensor", "host sensor", "profile constant", "unavailable")
MEASURED_SOURCES = ("sensor", "host sensor")


@dataclass(frozen=True)
class ArtifactRecord:
    """One model of the run: a manifest artifact, or the eager model from the checkpoint."""

    model_key: str
    format: str
    precision: str
    quantization: str
    path: str
    size_bytes: int
    sha256: str
    entry: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentRow:
    """An experiment of the plan: which images, in which order the models run."""

    experiment_index: int
    dataset_role: str
    dataset_name: str
    image_ids: tuple[str, ...]
    labels: tuple[int, ...]
    model_order: tuple[str, ...]
    input_sha256: str | None = None


@dataclass(frozen=True)
class PredictionRow:
    """One image's result under one model."""

    position: int
    image_id: str
    label: int
    prediction: int
    top1_prob: float
    logits: tuple[float, ...] | None = None

    @property
    def correct(self) -> bool:
        return self.label == self.prediction


@dataclass(frozen=True)
class CellResult:
    """One model on one batch on one target: latencies per timed repeat and predictions, or a failure."""

    model_key: str
    status: str
    order_index: int
    batch_size: int
    warmup: int
    repeats: int
    threads: int | None
    affinity_mask: str | None
    how_obtained: str
    started_at: str
    finished_at: str
    latencies_ms: tuple[float, ...] = ()
    predictions: tuple[PredictionRow, ...] = ()
    message: str = ""
    runner_output: str = ""
    log_path: str | None = None


@dataclass(frozen=True)
class Telemetry:
    """Device temperatures (deg C by zone) and current CPU frequencies (kHz by CPU) at one moment."""

    temperatures_c: Mapping[str, float]
    cpu_freqs_khz: Mapping[str, int]
    recorded_at: str


@dataclass(frozen=True)
class ExperimentResult:
    """Everything one (experiment, target) produced; written in one transaction."""

    experiment_index: int
    started_at: str
    finished_at: str
    cells: tuple[CellResult, ...]
    before: Telemetry | None = None
    after: Telemetry | None = None
    cooldown_s: float = 0.0


@dataclass(frozen=True)
class RunRow:
    """A run as stored."""

    run_id: str
    created_at: str
    finished_at: str | None
    status: str
    status_message: str
    plan: Mapping[str, Any]
    plan_sha256: str
    artifacts_sha256: str
    log_dir: str | None
    label: str


def artifacts_fingerprint(artifacts: Sequence[ArtifactRecord]) -> str:
    """sha256 over (model key, sha256) of every artifact, order-independent."""
    return sha256_text(canonical_json(sorted([a.model_key, a.sha256] for a in artifacts)))
