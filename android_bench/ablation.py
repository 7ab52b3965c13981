"""The 30-experiment ablation: every model on every target, on the same images, paired.

``run_ablation(plan, store)`` stores the plan as a new run, preprocesses the images once, opens
every target first (an unreachable target fails before anything runs and records DeviceInfo or
host info at the start), then runs target by target, experiment by experiment: telemetry before,
an optional cooldown, each model in the experiment's shuffled order, telemetry after, and ONE
transaction per (experiment, target). ``resume_ablation(store, run_id)`` continues a run where it
stopped; it refuses when the plan, the artifacts or the preprocessed inputs changed.

Several targets run as ``android_bench.fleet`` schedules them: one worker per phone, virtual devices
side by side only on disjoint CPU sets, host targets alone. A target that stops (a device that does
not come back, a runner that cannot time) stops only itself when other targets finish: the run ends
``partial`` with the reason per target, and ``--resume`` redoes exactly its missing experiments.

Failures: a model whose runtime or runner fails gets failed cells carrying the message and the
runner's output; the rest of the run goes on and the run ends ``partial``. A lost device is
reconnected with bounded backoff, pushed files are re-verified, and only the experiment in flight is
redone; a device that does not come back (or Ctrl-C, SIGTERM, a runner built with logging off)
stops the run, which stays ``incomplete`` for ``--resume``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from android_bench import fleet
from android_bench.inputs import PreparedInputs, prepare_inputs
from android_bench.plan import AblationPlan, Experiment, ModelSpec, PlanError, verify_plan_files
from android_bench.runners import (
    AndroidSession,
    CellOutcome,
    HostSession,
    TargetError,
    open_session,
    softmax_top1,
    support_map,
)
from device_results.store import (
    ArtifactRecord,
    CellResult,
    ExperimentResult,
    ExperimentRow,
    PredictionRow,
    ResultsStore,
    StoreError,
    artifacts_fingerprint,
)
from emobench_common.errors import EmobenchError
from emobench_common.names import utc_now

if TYPE_CHECKING:
    from android_bench.device import Device

log = logging.getLogger(__name__)


class ResumeError(EmobenchError):
    """A run that cannot be resumed as asked (finished, changed plan, artifacts or inputs)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so the run stops like Ctrl-C (nothing half-written)."""


@dataclass(frozen=True)
class ProgressEvent:
    """Something a progress display can show: ``target-start``, ``experiment``, ``target-done``, ``retry``."""

    kind: str
    target: str
    done: int = 0
    total: int = 0
    message: str = ""


@dataclass(frozen=True)
class TargetTiming:
    """Where one target's time went (for the harness-overhead benchmark)."""

    wall_s: float
    inference_s: float
    transfer_s: float
    experiments_run: int


@dataclass(frozen=True)
class AblationResult:
    """How a run ended."""

    run_id: str
    status: str
    message: str
    log_dir: Path
    failed_cells: int
    timings: dict[str, TargetTiming] = field(default_factory=dict)
    schedule: str = ""  # which targets ran side by side (android_bench.fleet)
    stopped_targets: dict[str, str] = field(default_factory=dict)  # target -> why it stopped early


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what: that is the plan). None of these change the results' meaning.

    Attributes:
        runner: a local executor_runner to push to Android targets (ELF machine checked).
        log_root: folder for per-run raw logs and input files (default: ``runs/`` beside the database).
        log_form: where device runners log: 'auto', 'stderr' or 'logcat'.
        runner_timeout_s: the longest one runner invocation may take.
        store_logits: keep each image's logits (needed for cross-target output agreement).
        experiment_attempts: how often an experiment is retried after the device was reconnected.
        label: a free-text label for the run.
        connect: how Android targets are opened (``android_bench.device.connect``).
    """

    runner: Path | None = None
    log_root: Path | None = None
    log_form: str = "auto"
    runner_timeout_s: float = 600.0
    store_logits: bool = True
    experiment_attempts: int = 3
    label: str = ""
    connect: Callable[[str], Device] | None = None


# --- the run --------------------------------------------------------------------------------------


def _artifact_records(plan: AblationPlan) -> list[ArtifactRecord]:
    parity = _manifest_parity(plan)
    return [ArtifactRecord(model_key=m.key, format=m.format, precision=m.precision,
                           quantization=m.mode or ("none" if m.precision == "fp32" else "unknown"), path=m.path,
                           size_bytes=m.size_bytes, sha256=m.sha256,
                           entry={"batch_size": m.batch_size, "label": m.label,
                                  **({"parity": parity[m.sha256]} if m.sha256 in parity else {})})
            for m in plan.models]


def _manifest_parity(plan: AblationPlan) -> dict[str, dict]:
    """sha256 -> the export's parity check of that artifact (kept with the run: the report shows it)."""
    from export.errors import ExportError
    from export.manifest import load_manifest

    try:
        manifest = load_manifest(plan.manifest_path)
    except (ExportError, OSError) as exc:
        log.warning("export parity not recorded: %s", exc)
        return {}
    return {a.sha256: a.parity.to_dict() for a in manifest.artifacts if a.parity is not None}


def _experiment_rows(plan: AblationPlan) -> list[ExperimentRow]:
    return [ExperimentRow(e.index, e.role, e.dataset, e.image_ids, e.labels, e.model_order) for e in plan.experiments]


def _log_dir(store: ResultsStore, options: RunOptions, run_id: str) -> Path:
    root = options.log_root if options.log_root is not None else store.path.parent / "runs"
    return Path(root) / run_id


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While running, SIGTERM raises ``Terminated`` in the main thread (like Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_ablation(plan: AblationPlan, store: ResultsStore, options: RunOptions = RunOptions(), *,
                 progress: Callable[[ProgressEvent], None] | None = None) -> AblationResult:
    """Store ``plan`` as a new run and run it to the end.

    Returns:
        The run's id, final status and where its logs are.

    Raises:
        TargetError, PlanError, DeviceError, NoTimingLinesError: the run stopped; it is stored as
            ``incomplete`` with the message and can be resumed.
    """
    verify_plan_files(plan)
    run_id = store.create_run(plan=plan.to_dict(), artifacts=_artifact_records(plan),
                              experiments=_experiment_rows(plan), label=options.label)
    log_dir = _log_dir(store, options, run_id)
    with store.transaction() as conn:
        conn.execute("UPDATE runs SET log_dir = ? WHERE run_id = ?", (str(log_dir), run_id))
    log.info("run %s: %d experiments x %d models x %d targets", run_id, len(plan.experiments), len(plan.models),
             len(plan.targets))
    return _execute(plan, store, run_id, log_dir, options, progress)


def resume_ablation(store: ResultsStore, run_id: str, options: RunOptions = RunOptions(), *,
                    plan: AblationPlan | None = None,
                    progress: Callable[[ProgressEvent], None] | None = None) -> AblationResult:
    """Continue a stored run where it stopped.

    Args:
        plan: when given (the user re-stated the options), it must equal the stored plan.

    Raises:
        ResumeError: the run is complete, or its plan, artifacts or inputs changed.
    """
    run = store.get_run(store.resolve_run_id(run_id))
    run_id = run.run_id
    stored = AblationPlan.from_dict(run.plan)
    if plan is not None and plan.fingerprint != stored.fingerprint:
        raise ResumeError(f"run {run_id} was started with a different plan (differs in: "
                          f"{', '.join(stored.differences(plan)) or 'details'})",
                          hint="resume with only --resume RUN (and --db), or start a new run")
    missing = {t.spec for t in stored.targets
               if len(store.done_experiments(run_id, t.spec)) < len(stored.experiments)}
    if run.status == "complete" or (run.status == "partial" and not missing):
        raise ResumeError(f"run {run_id} is already finished ({run.status})", hint="start a new run instead")
    try:
        verify_plan_files(stored)
    except PlanError as exc:
        raise ResumeError(f"cannot resume run {run_id}: {exc.message}", hint=exc.hint) from exc
    if artifacts_fingerprint(_artifact_records(stored)) != run.artifacts_sha256:
        raise ResumeError(f"run {run_id}: the stored artifacts do not match its plan")
    log_dir = Path(run.log_dir) if run.log_dir else _log_dir(store, options, run_id)
    store.reopen_run(run_id)
    return _execute(stored, store, run_id, log_dir, options, progress)


def _check_inputs(store: ResultsStore, run_id: str, inputs: PreparedInputs) -> None:
    stored = {r["experiment_index"]: r["input_sha256"] for r in store.rows(run_id, "experiments")}
    changed = [i for i, h in inputs.sha256.items() if stored.get(i) not in (None, h)]
    if changed:
        raise ResumeError(f"run {run_id}: the images of experiment(s) {', '.join(map(str, changed[:5]))} preprocess "
                          "to different bytes than when the run started (images or preprocessing changed)",
                          hint="restore the datasets, or start a new run")
    store.set_input_sha256(run_id, inputs.sha256)


def _execute(plan: AblationPlan, store: ResultsStore, run_id: str, log_dir: Path, options: RunOptions,
             progress: Callable[[ProgressEvent], None] | None) -> AblationResult:
    emit = _serialized(progress or (lambda _e: None))
    sessions: dict[str, HostSession | AndroidSession] = {}
    timings: dict[str, TargetTiming] = {}
    hardware: dict[str, fleet.Hardware] = {}
    schedule = fleet.Schedule(())
    stopped: dict[str, str] = {}
    try:
        with _sigterm_as_interrupt():
            inputs = prepare_inputs(plan, log_dir / "inputs")
            _check_inputs(store, run_id, inputs)
            # Open every target first: an unreachable one fails now, not after hours on another.
            for target in plan.targets:
                session = open_session(target, plan, run_id=run_id, log_dir=log_dir / "logs", runner=options.runner,
                                       log_form=options.log_form, runner_timeout_s=options.runner_timeout_s,
                                       connect=options.connect)
                sessions[target.spec] = session
                hardware[target.spec] = fleet.session_hardware(session)
                record = fleet.with_cpu_set(session.describe(), hardware[target.spec],
                                            bool(getattr(getattr(session, "info", None), "is_virtual", False)))
                store.add_target(run_id, record, model_support=support_map(session, plan.models))
            schedule = fleet.plan_schedule([t.spec for t in plan.targets], hardware)
            log.info("run %s: %s", run_id, schedule.describe())
            outcome = fleet.run_schedule(schedule, functools.partial(
                _target_worker, plan, store, run_id, sessions, inputs, options, emit))
            if outcome.interrupted is not None:
                raise outcome.interrupted
            if outcome.failures and not outcome.results:  # nothing finished: stop as a single target does
                raise next(iter(outcome.failures.values()))
            timings.update(outcome.results)
            stopped = {t: (e.message if isinstance(e, EmobenchError) else str(e)) for t, e in outcome.failures.items()}
    except BaseException as exc:
        message = exc.message if isinstance(exc, EmobenchError) else (
            "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            store.finish_run(run_id, "incomplete", f"stopped: {message}; resume with --resume {run_id}")
        if isinstance(exc, KeyboardInterrupt):  # the CLI only says "Aborted!": tell the user how to go on
            log.warning("run %s interrupted (%s); the experiment in flight was not kept; continue it with: "
                        "emobench ablation --resume %s", run_id, exc or "Ctrl-C", run_id)
        raise
    finally:
        for session in sessions.values():
            with contextlib.suppress(Exception):
                session.close()
    failed = store.rows(run_id, "cells", status="failed")
    messages = [f"{target} stopped after {len(store.done_experiments(run_id, target))} of {len(plan.experiments)} "
                f"experiments: {reason}" for target, reason in stopped.items()]
    if stopped:
        messages.append(f"resume with --resume {run_id} to redo the missing experiments")
    if failed:
        models = sorted({f"{c['model_key']} on {c['target_id']}" for c in failed})
        messages.insert(0, f"{len(failed)} cell(s) failed ({'; '.join(models[:5])}); first: "
                           f"{failed[0]['message'][:300]}")
    status, message = ("partial" if failed or stopped else "complete"), "; ".join(messages)
    store.finish_run(run_id, status, message)
    return AblationResult(run_id=run_id, status=status, message=message, log_dir=log_dir, failed_cells=len(failed),
                          timings=timings, schedule=schedule.describe(), stopped_targets=stopped)


def _serialized(emit: Callable[[ProgressEvent], None]) -> Callable[[ProgressEvent], None]:
    """The progress callback, called by one worker at a time."""
    lock = threading.Lock()

    def call(event: ProgressEvent) -> None:
        with lock:
            emit(event)
    return call


def _target_worker(plan: AblationPlan, store: ResultsStore, run_id: str, sessions: Mapping[str, object],
                   inputs: PreparedInputs, options: RunOptions, emit: Callable[[ProgressEvent], None],
                   spec: str, stop: threading.Event) -> TargetTiming:
    """One target's experiments; a worker thread writes through its own connection to the database."""
    if threading.current_thread() is threading.main_thread():
        return _run_target(plan, store, run_id, sessions[spec], inputs, options, emit, stop=stop)
    with ResultsStore(store.path) as own:
        return _run_target(plan, own, run_id, sessions[spec], inputs, options, emit, stop=stop)


def _run_target(plan: AblationPlan, store: ResultsStore, run_id: str, session, inputs: PreparedInputs,
                options: RunOptions, emit: Callable[[ProgressEvent], None], *,
                stop: threading.Event | None = None) -> TargetTiming:
    from android_bench.device import DeviceTimeoutError, DeviceUnreachableError

    lost_errors = (DeviceUnreachableError, DeviceTimeoutError)
    spec = session.target.spec
    t0 = time.perf_counter()
    done = store.done_experiments(run_id, spec)
    total = len(plan.experiments)
    emit(ProgressEvent("target-start", spec, len(done), total))
    supported = [m for m in plan.models if session.support(m) is None]
    if len(done) < total:
        for attempt in range(1, options.experiment_attempts + 1):
            try:
                session.prepare(supported, inputs)
                break
            except lost_errors as exc:
                if attempt == options.experiment_attempts:
                    raise
                _recover(session, run_id, exc, emit, f"transfer: {exc.message}")
    run_count = 0
    for exp in plan.experiments:
        if exp.index in done:
            continue
        if stop is not None and stop.is_set():  # another worker was interrupted: end between experiments
            raise KeyboardInterrupt(f"{spec}: stopped with the other targets")
        for attempt in range(1, options.experiment_attempts + 1):
            try:
                result = _run_experiment(plan, session, exp, inputs, options)
                break
            except lost_errors as exc:
                if attempt == options.experiment_attempts:
                    raise
                _recover(session, run_id, exc, emit, f"experiment {exp.index}: {exc.message}")
        store.record_experiment(run_id, spec, result)
        run_count += 1
        emit(ProgressEvent("experiment", spec, len(done) + run_count, total))
    emit(ProgressEvent("target-done", spec, total, total))
    return TargetTiming(wall_s=time.perf_counter() - t0, inference_s=session.inference_ms_total / 1e3,
                        transfer_s=session.transfer_s, experiments_run=run_count)


def _recover(session, run_id: str, exc, emit: Callable[[ProgressEvent], None], what: str) -> None:
    from android_bench.device import DeviceError

    spec = session.target.spec
    emit(ProgressEvent("retry", spec, message=f"{what}; reconnecting"))
    log.warning("%s: %s; reconnecting and redoing the step in flight", spec, what)
    try:
        session.recover()
    except DeviceError as lost:
        raise TargetError(f"{spec} did not come back after the connection dropped ({lost.message})",
                          hint=f"reconnect the device, then continue with --resume {run_id}") from lost


def _cooldown(plan: AblationPlan, session) -> float:
    """Wait until the target's hottest CPU zone (or any zone) is below the plan's temperature.

    Returns:
        The seconds waited: 0 when the first reading is already below, at most about
        ``cooldown_timeout_s`` (then a warning is logged and the experiment goes on anyway).
    """
    if plan.cooldown_temp_c is None:
        return 0.0
    t0 = time.perf_counter()
    poll = 0
    while True:
        temps = session.telemetry().temperatures_c
        cpu = {k: v for k, v in temps.items() if "cpu" in k.lower()} or temps
        hottest = max(cpu.values()) if cpu else None
        if hottest is None:
            log.warning("%s exposes no temperatures; cooldown skipped", session.target.spec)
            return 0.0
        waited = time.perf_counter() - t0
        if hottest < plan.cooldown_temp_c:
            return waited if poll else 0.0
        if waited >= plan.cooldown_timeout_s:
            log.warning("%s still at %.1f C after %.0f s of cooldown; going on", session.target.spec, hottest, waited)
            return waited
        time.sleep(min(5.0, max(0.5, plan.cooldown_timeout_s / 100)))
        poll += 1


def _cell_result(plan: AblationPlan, session, exp: Experiment, model: ModelSpec, order: int, outcome: CellOutcome,
                 started: str, options: RunOptions) -> CellResult:
    common = dict(model_key=model.key, order_index=order, batch_size=plan.batch_size, warmup=plan.warmup,
                  repeats=plan.repeats, threads=plan.threads, affinity_mask=plan.affinity_mask,
                  how_obtained=session.how_obtained, started_at=started, finished_at=utc_now(),
                  log_path=outcome.log_path)
    if outcome.ok and (outcome.logits is None or outcome.logits.ndim != 2
                       or outcome.logits.shape != (len(exp.image_ids), len(plan.input_spec.class_names))):
        shape = None if outcome.logits is None else tuple(outcome.logits.shape)
        outcome = CellOutcome(error=f"{model.key} returned logits of shape {shape}, expected "
                                    f"({len(exp.image_ids)}, {len(plan.input_spec.class_names)})",
                              runner_output=outcome.runner_output, log_path=outcome.log_path)
    if not outcome.ok:
        return CellResult(status="failed", message=outcome.error, runner_output=outcome.runner_output, **common)
    logits = outcome.logits
    assert logits is not None  # an ok outcome without logits became a failed cell above
    top, prob = softmax_top1(logits)
    preds = tuple(
        PredictionRow(position=i, image_id=image_id, label=int(label), prediction=int(top[i]), top1_prob=float(prob[i]),
                      logits=tuple(float(v) for v in logits[i]) if options.store_logits else None)
        for i, (image_id, label) in enumerate(zip(exp.image_ids, exp.labels, strict=True)))
    return CellResult(status="ok", latencies_ms=tuple(outcome.latencies_ms), predictions=preds, **common)


def _run_experiment(plan: AblationPlan, session, exp: Experiment, inputs: PreparedInputs,
                    options: RunOptions) -> ExperimentResult:
    started = utc_now()
    cooldown_s = _cooldown(plan, session)
    before = session.telemetry()
    cells = []
    for order, key in enumerate(k for k in exp.model_order if session.support(plan.model(k)) is None):
        model = plan.model(key)
        cell_started = utc_now()
        outcome = session.run_cell(exp, model, inputs)
        cells.append(_cell_result(plan, session, exp, model, order, outcome, cell_started, options))
    after = session.telemetry()
    return ExperimentResult(experiment_index=exp.index, started_at=started, finished_at=utc_now(), cells=tuple(cells),
                            before=before, after=after, cooldown_s=cooldown_s)


__all__ = ["AblationResult", "ProgressEvent", "ResumeError", "RunOptions", "StoreError", "resume_ablation",
           "run_ablation"]
