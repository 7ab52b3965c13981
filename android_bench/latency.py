"""The original study's quick latency table: each artifact N times on one input, on any target.

For every model (eager FP32 from the checkpoint and every manifest artifact) and every target:
average, min, max, median and p90 latency in ms of ``runs`` timed executions after ``warmup``
untimed ones, on one seeded input tensor at the artifacts' batch size, with the file size in MB.
Host targets time each runtime call; Android targets use the runner's own per-iteration timings.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from android_bench import fleet
from android_bench.inputs import DTYPE, PreparedInputs
from android_bench.plan import (
    PLAN_VERSION,
    AblationPlan,
    Experiment,
    ModelSpec,
    PlanError,
    TargetSpec,
    model_key,
    normalize_affinity,
    read_manifest,
)
from android_bench.runners import AndroidSession, HostSession, open_session
from device_results import stats
from emobench_common.fileio import atomic_write_bytes
from emobench_common.names import EAGER_KEY

if TYPE_CHECKING:
    from android_bench.device import Device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencyRow:
    """One model on one target: timings in ms, or why there are none."""

    target: str
    is_virtual: bool
    model_key: str
    size_mb: float
    batch_size: int
    runs: int
    avg_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    note: str = ""
    runner: str = ""  # which executor_runner ran on a device target: native, stand-in, user-supplied ...

    def to_dict(self) -> dict:
        return asdict(self)


def latency_plan(manifest: Path, targets: Sequence[str], *, runs: int, warmup: int, threads: int | None,
                 affinity: str | None, include_eager: bool) -> AblationPlan:
    """A one-experiment plan over every model of ``manifest``: one seeded synthetic batch, N timed runs.

    Raises:
        PlanError: a bad setting or manifest.
    """
    if runs < 1 or warmup < 0:
        raise PlanError(f"--runs must be >= 1 and --warmup >= 0 (got {runs}, {warmup})")
    mv = read_manifest(manifest, verify=True)
    models = []
    if include_eager and Path(mv.checkpoint_path).is_file():
        models.append(ModelSpec(EAGER_KEY, "eager", "fp32", None, str(mv.checkpoint_path), mv.checkpoint_sha256,
                                Path(mv.checkpoint_path).stat().st_size, None))
    for a in mv.artifacts:
        models.append(ModelSpec(model_key(a.format, a.precision, a.mode), a.format, a.precision, a.mode,
                                a.relative_path, a.sha256, a.size_bytes, a.batch_size))
    batch = max([m.batch_size or 1 for m in models] or [1])
    return AblationPlan(
        version=PLAN_VERSION, seed=0, manifest_path=str(mv.path), manifest_sha256=mv.sha256,
        checkpoint_path=str(mv.checkpoint_path), checkpoint_sha256=mv.checkpoint_sha256, input_spec=mv.input_spec,
        datasets=(), models=tuple(models), targets=tuple(TargetSpec.parse(t) for t in targets),
        experiments=(Experiment(0, "synthetic", "synthetic", tuple(f"synthetic{i}" for i in range(batch)),
                                tuple(0 for _ in range(batch)), tuple(m.key for m in models)),),
        batch_size=batch, warmup=warmup, repeats=runs, threads=threads, affinity_mask=normalize_affinity(affinity),
        cooldown_temp_c=None, cooldown_timeout_s=600.0, allow_reuse=False)


def measure_latency(manifest: str | Path, targets: Sequence[str] = ("host-cpu",), *, runs: int = 30,
                    warmup: int = 3, threads: int | None = None, affinity: str | None = None,
                    runner: Path | None = None, include_eager: bool = True,
                    connect: Callable[[str], Device] | None = None, seed: int = 0) -> list[LatencyRow]:
    """Time every model of a manifest on every target.

    Raises:
        PlanError: a bad manifest or setting; TargetError: an unreachable or unusable target.
    """
    plan = latency_plan(Path(manifest), targets, runs=runs, warmup=warmup, threads=threads, affinity=affinity,
                         include_eager=include_eager)
    rows: list[LatencyRow] = []
    with tempfile.TemporaryDirectory(prefix="emobench-latency-") as tmp:
        folder = Path(tmp)
        x = np.random.default_rng(seed).standard_normal(plan.input_spec.batch_shape(plan.batch_size)).astype(DTYPE)
        path = atomic_write_bytes(folder / "exp_000.f32", x.tobytes())
        import hashlib

        inputs = PreparedInputs(folder=folder, shape=plan.input_spec.batch_shape(plan.batch_size), files={0: path},
                                sha256={0: hashlib.sha256(x.tobytes()).hexdigest()})
        exp = plan.experiments[0]
        sessions: dict[str, HostSession | AndroidSession] = {}
        try:
            # every target opened first (an unreachable one fails before anything runs), then run as
            # android_bench.fleet schedules them: phones side by side, virtual devices only on disjoint CPUs
            for target in plan.targets:
                sessions[target.spec] = open_session(target, plan, run_id="latency", log_dir=folder / "logs",
                                                     runner=runner, connect=connect)
            schedule = fleet.plan_schedule([t.spec for t in plan.targets],
                                           {spec: fleet.session_hardware(s) for spec, s in sessions.items()})
            log.info("latency: %s", schedule.describe())

            def measure(spec: str, stop: object) -> list[LatencyRow]:
                return _measure_target(plan, sessions[spec], exp, inputs, runs)

            outcome = fleet.run_schedule(schedule, measure)
            if outcome.interrupted is not None:
                raise outcome.interrupted
            if outcome.failures:
                raise next(iter(outcome.failures.values()))
            for target in plan.targets:
                rows.extend(outcome.results[target.spec])
        finally:
            for session in sessions.values():
                session.close()
    return rows


def _measure_target(plan: AblationPlan, session: HostSession | AndroidSession, exp: Experiment,
                    inputs: PreparedInputs, runs: int) -> list[LatencyRow]:
    virtual = bool(getattr(getattr(session, "info", None), "is_virtual", False))
    supported = [m for m in plan.models if session.support(m) is None]
    session.prepare(supported, inputs)
    rows: list[LatencyRow] = []
    for m in plan.models:
        row = LatencyRow(target=session.target.spec, is_virtual=virtual, model_key=m.key, size_mb=m.size_bytes / 1e6,
                         batch_size=plan.batch_size, runs=runs, runner=str(getattr(session, "runner_kind", "")))
        reason = session.support(m)
        if reason:
            rows.append(replace(row, note=reason))
            continue
        outcome = session.run_cell(exp, m, inputs)
        if not outcome.ok:
            rows.append(replace(row, note=outcome.error))
            continue
        s = stats.latency_summary(outcome.latencies_ms)
        rows.append(replace(row, avg_ms=s.mean_ms, min_ms=s.min_ms, max_ms=s.max_ms, median_ms=s.median_ms,
                            p90_ms=s.p90_ms))
    return rows


def format_latency_table(rows: Sequence[LatencyRow]) -> str:
    """The table as text (one row per target and model)."""
    headers = ["target", "model", "size MB", "batch", "runs", "avg ms", "min ms", "max ms", "median ms", "p90 ms"]
    body = []
    for r in rows:
        name = r.target + (" (virtual)" if r.is_virtual else "") + (f" [{r.runner} runner]" if r.runner else "")
        if r.avg_ms is None:
            body.append([name, r.model_key, f"{r.size_mb:.2f}", str(r.batch_size), "-", r.note[:90], "", "", "", ""])
            continue
        body.append([name, r.model_key, f"{r.size_mb:.2f}", str(r.batch_size), str(r.runs)] +
                    [f"{v:.3f}" for v in (r.avg_ms, r.min_ms, r.max_ms, r.median_ms, r.p90_ms)])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip() for b in body]
    return "\n".join(lines)
