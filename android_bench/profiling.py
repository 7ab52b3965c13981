"""Per-operator profiles from ExecuTorch's ETDump: where the time goes inside a ``.pte``.

A profile runs one ExecuTorch program ``warmup + runs`` times with the event tracer on, on the host
(``executorch.runtime`` with ``enable_etdump=True``) or on a device (the runner's ``--etdump_path``,
pulled back), and reads the ETDump with ExecuTorch's ``Inspector`` (with the program's ETRecord when
the export wrote one, so delegate calls map back to the model's modules). XNNPACK logs one event per
operator it runs (``Convolution (NHWC, F32) IGEMM #3``, ``Sigmoid (NC) #7`` ...), so the profile sees
inside the delegate.

Operators are grouped by name without the instance number: ``calls`` is how many instances one
execution runs, ``median_ms`` / ``p90_ms`` are over runs of the per-run sum of those instances, and
``share`` is the median over the median ``Method::execute`` time. ``coverage`` (median over runs of
the summed operator times / ``Method::execute``) says how much of execute time the profile accounts
for; the rest is delegate and runtime overhead between operators.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device_results.store.profiles import OperatorRow
from emobench_common.errors import EmobenchError

log = logging.getLogger(__name__)

# The operator kinds the report compares between FP32 and INT8, in display order.
OPERATOR_KINDS: tuple[str, ...] = ("convolution", "depthwise convolution", "activation", "SE multiply",
                                   "fully connected / 1x1 conv", "quantize/convert", "pooling/mean", "add",
                                   "layout (transpose/copy/reshape)", "other")
_CONTAINER_EVENTS = {"DELEGATE_CALL", "Method::execute", "OPERATOR_CALL"}
_INSTANCE = re.compile(r"\s*#\d+$")


class ProfileError(EmobenchError):
    """An ETDump that cannot be read or holds no execution."""


def operator_kind(name: str) -> str:
    """The kind of an operator event, from XNNPACK's operator names or an ExecuTorch kernel's name.

    ``SE multiply`` is XNNPACK's ``Multiply``: in EfficientNet it carries the squeeze-excitation
    scaling and the product of SiLU (``x * sigmoid(x)``), which XNNPACK runs as one more multiply.
    ``fully connected / 1x1 conv`` is XNNPACK's ``Fully Connected``: it runs every 1x1 (pointwise)
    convolution as one, besides the SE layers and the classifier (65 calls in EfficientNet-B0).
    """
    n = name.lower()
    if any(k in n for k in ("convert", "quantize", "dequantize", "choose_qparams")):
        return "quantize/convert"
    if "dwconv" in n or "depthwise" in n:
        return "depthwise convolution"
    if "convolution" in n or re.search(r"\bconv", n):
        return "convolution"
    if "fully connected" in n or "linear" in n or "addmm" in n or n.startswith("native_call_mm"):
        return "fully connected / 1x1 conv"
    if any(k in n for k in ("sigmoid", "swish", "silu", "clamp", "relu", "hardswish", "tanh", "gelu", "elu")):
        return "activation"
    if "multiply" in n or re.search(r"\bmul\b|native_call_mul", n):
        return "SE multiply"
    if "mean" in n or "pool" in n or "reduce" in n:
        return "pooling/mean"
    if re.search(r"\badd\b|native_call_add", n):
        return "add"
    if any(k in n for k in ("transpose", "copy", "reshape", "permute", "view", "squeeze", "expand")):
        return "layout (transpose/copy/reshape)"
    return "other"




@dataclass(frozen=True)
class ModelProfile:
    """A program's profile: execute time, what the operators account for, and the operators."""

    runs: int
    execute_median_ms: float
    profiled_median_ms: float
    coverage: float
    operators: tuple[OperatorRow, ...]
    etrecord_used: bool
    status: str = "ok"
    message: str = ""
    runner_latencies_ms: tuple[float, ...] = field(default_factory=tuple)
    coverage_per_run: tuple[float, ...] = field(default_factory=tuple)
    execute_ms_per_run: tuple[float, ...] = field(default_factory=tuple)

    def top(self, n: int = 10) -> tuple[OperatorRow, ...]:
        return tuple(sorted(self.operators, key=lambda o: -o.median_ms)[:n])


def no_etdump_profile(message: str, latencies_ms: Sequence[float] = ()) -> ModelProfile:
    """The record for a runner that wrote no ETDump (built without the event tracer): latency alone."""
    lat = tuple(float(v) for v in latencies_ms)
    med = float(np.median(lat)) if lat else 0.0
    return ModelProfile(runs=len(lat), execute_median_ms=med, profiled_median_ms=0.0, coverage=0.0, operators=(),
                        etrecord_used=False, status="no-etdump", message=message, runner_latencies_ms=lat)


def _inspector(etdump: Path, etrecord: Path | None):
    from executorch.devtools import Inspector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if etrecord is not None:
            try:
                return Inspector(etdump_path=str(etdump), etrecord=str(etrecord)), True
            except Exception as exc:  # noqa: BLE001 - an ETRecord of another program: profile without it
                log.warning("ETRecord %s does not match %s (%s); profiling without it", etrecord, etdump, exc)
        return Inspector(etdump_path=str(etdump)), False


def analyse_etdump(etdump: str | Path, *, etrecord: str | Path | None = None, warmup: int = 1,
                   runner_latencies_ms: Sequence[float] = ()) -> ModelProfile:
    """Read an ETDump (with its ETRecord when given) into a per-operator profile.

    Args:
        etdump: the ETDump file.
        etrecord: the program's ETRecord (optional: maps delegate calls to the model's modules).
        warmup: leading executions to drop (the first XNNPACK run sets up its workspace).
        runner_latencies_ms: the runner's own ``Iteration`` times, kept beside the profile.

    Raises:
        ProfileError: the file is not an ETDump, or it recorded no ``Method::execute``.
    """
    etdump = Path(etdump)
    try:
        inspector, used = _inspector(etdump, Path(etrecord) if etrecord else None)
        frame = inspector.to_dataframe()
    except Exception as exc:  # noqa: BLE001 - flatbuffer/parse errors of every kind
        raise ProfileError(f"{etdump} is not a readable ETDump: {exc}",
                           hint="profile again; the runner writes the file only after a successful run") from exc
    execute = frame[frame["event_block_name"] == "Execute"]
    method_rows = execute[execute["event_name"] == "Method::execute"]
    if method_rows.empty:
        raise ProfileError(f"{etdump} holds no Method::execute event", hint="run at least one execution")
    method_ms = np.asarray(method_rows.iloc[0]["raw"], dtype=float)
    keep = slice(warmup if len(method_ms) > warmup else 0, None)
    method_ms = method_ms[keep]
    leaves = execute[~execute["event_name"].isin(_CONTAINER_EVENTS)]
    if not bool(leaves["is_delegated_op"].any()):
        # A delegate that logs no per-operator events: its calls are the finest grain there is.
        leaves = execute[execute["event_name"] != "Method::execute"]
    groups: dict[tuple[str, bool, str], list[np.ndarray]] = {}
    for _, row in leaves.iterrows():
        raw = np.asarray(row["raw"], dtype=float)
        if len(raw) != len(method_ms) + (keep.start or 0):
            continue  # an event not logged on every execution (e.g. one-off init inside a delegate)
        name = _INSTANCE.sub("", str(row["event_name"]))
        delegated = bool(row["is_delegated_op"])
        backend = str(row["delegate_backend_name"] or ("XnnpackBackend" if delegated else "ExecuTorch kernels"))
        groups.setdefault((name, delegated, backend), []).append(raw[keep])
    method_median = float(np.median(method_ms))
    operators = []
    per_run_total = np.zeros(len(method_ms))
    for (name, delegated, backend), instances in groups.items():
        totals = np.sum(instances, axis=0)
        per_run_total += totals
        median = float(np.median(totals))
        operators.append(OperatorRow(operator=name, kind=operator_kind(name), backend=backend, delegated=delegated,
                                      calls=len(instances), median_ms=median,
                                      p90_ms=float(np.percentile(totals, 90)),
                                      share=median / method_median if method_median > 0 else 0.0))
    operators.sort(key=lambda o: (-o.median_ms, o.operator))
    with np.errstate(divide="ignore", invalid="ignore"):
        per_run_coverage = np.where(method_ms > 0, per_run_total / method_ms, 0.0)
    return ModelProfile(runs=len(method_ms), execute_median_ms=method_median,
                        profiled_median_ms=float(np.median(per_run_total)),
                        coverage=float(np.median(per_run_coverage)), operators=tuple(operators), etrecord_used=used,
                        runner_latencies_ms=tuple(float(v) for v in runner_latencies_ms),
                        coverage_per_run=tuple(float(c) for c in per_run_coverage),
                        execute_ms_per_run=tuple(float(m) for m in method_ms))


def host_etdump(pte: str | Path, input_bytes: bytes, etdump: str | Path, *, executions: int,
                threads: int | None = None) -> None:
    """Run ``pte`` ``executions`` times in ``executorch.runtime`` with ETDump on; write the ETDump to ``etdump``."""
    import torch
    from executorch.runtime import Runtime, Verification

    if threads:
        with contextlib.suppress(ImportError, AttributeError, RuntimeError):
            from export.runtimes import set_executorch_threads

            set_executorch_threads(threads)
    program = Runtime.get().load_program(Path(pte), verification=Verification.Minimal, enable_etdump=True,
                                         debug_buffer_size=0)
    names = sorted(program.method_names)
    method_name = "forward" if "forward" in names else names[0]
    method = program.load_method(method_name)
    meta = method.metadata.input_tensor_meta(0)
    sizes = tuple(meta.sizes())
    x = torch.frombuffer(bytearray(input_bytes), dtype=torch.float32).reshape(sizes)
    for _ in range(executions):
        method.execute([x])
    with tempfile.TemporaryDirectory(prefix="emobench-debug-") as tmp:
        program.write_etdump_result_to_file(str(etdump), str(Path(tmp) / "debug.bin"))


def profile_on_host(pte: str | Path, input_bytes: bytes, *, etrecord: str | Path | None, runs: int, warmup: int = 1,
                    keep_etdump: str | Path | None = None, threads: int | None = None) -> ModelProfile:
    """Profile ``pte`` in this process (``executorch.runtime``); optionally keep the ETDump at ``keep_etdump``."""
    with tempfile.TemporaryDirectory(prefix="emobench-etdump-") as tmp:
        dump = Path(keep_etdump) if keep_etdump else Path(tmp) / "host.etdump"
        dump.parent.mkdir(parents=True, exist_ok=True)
        host_etdump(pte, input_bytes, dump, executions=warmup + runs, threads=threads)
        return analyse_etdump(dump, etrecord=etrecord, warmup=warmup)


# --- profiling a manifest on targets, into the results store -----------------------------------------

NO_TRACER_HINT = ("its runner was built without ExecuTorch's event tracer, so it wrote no ETDump; only its latency "
                  "is recorded. Rebuild ExecuTorch for the phone with -DEXECUTORCH_BUILD_DEVTOOLS=ON "
                  "-DEXECUTORCH_ENABLE_EVENT_TRACER=ON, then `emobench runner build --android-ndk NDK "
                  "--executorch-prefix PREFIX` and pass the result with --runner")


@dataclass(frozen=True)
class _Program:
    key: str
    path: Path
    etrecord: Path | None
    batch_size: int


def _programs(manifest: Path) -> list[_Program]:
    from android_bench.plan import PlanError, model_key
    from export.errors import ManifestError
    from export.manifest import load_manifest

    try:
        loaded = load_manifest(manifest, verify_files=True)
    except ManifestError as exc:
        raise PlanError(exc.message, hint=exc.hint) from exc
    out = []
    for a in loaded.artifacts:
        if a.format != "executorch":
            continue
        rec = (a.details or {}).get("etrecord")
        etrecord = a.path.parent / rec["path"] if rec and (a.path.parent / rec["path"]).is_file() else None
        out.append(_Program(model_key(a.format, a.precision, a.mode), a.path, etrecord, int(a.batch_size)))
    if not out:
        raise PlanError(f"{manifest} lists no ExecuTorch program to profile",
                        hint="export with --format executorch (profiles come from ExecuTorch's ETDump)")
    return out


def _to_record(target_id: str, key: str, profile: ModelProfile, *, runner: str, runner_sha256: str = "",
               etdump_path: str | None = None):
    from device_results.store.profiles import ProfileRecord

    return ProfileRecord(
        target_id=target_id, model_key=key, status=profile.status, runs=profile.runs, runner=runner,
        execute_median_ms=profile.execute_median_ms, profiled_median_ms=profile.profiled_median_ms,
        coverage=profile.coverage, runner_sha256=runner_sha256, etrecord_used=profile.etrecord_used,
        etdump_path=etdump_path, message=profile.message,
        operators=profile.operators)


def _failed_record(target_id: str, key: str, message: str, runner: str):
    from device_results.store.profiles import ProfileRecord

    return ProfileRecord(target_id=target_id, model_key=key, status="failed", runs=0, runner=runner, message=message)


def profile_run(store: Any, run_id: str, plan: Any, *, out_dir: Path, runs: int = 20, warmup: int = 2,
                runner: Path | None = None, connect: Any = None, seed: int = 0, add_targets: bool = False) -> list:
    """Profile every ExecuTorch program of ``plan`` on each of its targets; store the profiles under ``run_id``.

    Args:
        store: an open ``ResultsStore``.
        plan: the ``AblationPlan`` (manifest, targets, threads, affinity).
        out_dir: where the ETDumps and runner logs are kept (``<target>/<model>.etdump``).
        runs / warmup: timed executions and the ones dropped before them.
        runner: a local executor_runner for Android targets (default: the virtual device's native runner, or
            the runner already on the phone).
        add_targets: record each target in the store first (a profile-only run).

    Returns:
        The stored ``ProfileRecord`` list.
    """
    from android_bench import fleet
    from android_bench.inputs import DTYPE, PreparedInputs
    from android_bench.runners import HostSession, open_session, support_map
    from device_results.store import ResultsStore
    from emobench_common.fileio import atomic_write_bytes

    programs = _programs(Path(plan.manifest_path))
    batch = max(p.batch_size for p in programs)
    out_dir = Path(out_dir)
    inputs_dir = out_dir / "inputs"
    inputs_dir.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).standard_normal(plan.input_spec.batch_shape(batch)).astype(DTYPE)
    path = atomic_write_bytes(inputs_dir / "exp_000.f32", x.tobytes())
    import hashlib

    inputs = PreparedInputs(folder=inputs_dir, shape=x.shape, files={0: path},
                            sha256={0: hashlib.sha256(x.tobytes()).hexdigest()})
    models = [m for m in plan.models if m.format == "executorch"]
    by_key = {p.key: p for p in programs}
    sessions: dict[str, Any] = {}
    try:
        # every target opened first (an unreachable one fails before anything runs), then profiled as
        # android_bench.fleet schedules them: phones side by side, virtual devices only on disjoint CPUs
        for target in plan.targets:
            target_dir = out_dir / re.sub(r"[^A-Za-z0-9._-]+", "_", target.spec)
            sessions[target.spec] = open_session(target, plan, run_id=run_id, log_dir=target_dir / "logs",
                                                 runner=runner, connect=connect)
            if add_targets:
                store.add_target(run_id, sessions[target.spec].describe(),
                                 model_support=support_map(sessions[target.spec], models))
        schedule = fleet.plan_schedule([t.spec for t in plan.targets],
                                       {spec: fleet.session_hardware(s) for spec, s in sessions.items()})
        log.info("profile: %s", schedule.describe())

        def profile_target(spec: str, own_store: Any) -> list:
            session = sessions[spec]
            target_dir = out_dir / re.sub(r"[^A-Za-z0-9._-]+", "_", spec)
            if not isinstance(session, HostSession):
                session.prepare(models, inputs)
                return _profile_on_device(session, models, by_key, inputs, target_dir, runs=runs, warmup=warmup,
                                          store=own_store, run_id=run_id)
            done = []
            for m in models:
                prog = by_key[m.key]
                dump = target_dir / f"{m.key}.etdump"
                try:
                    profile = profile_on_host(prog.path, x[: prog.batch_size].tobytes(), etrecord=prog.etrecord,
                                              runs=runs, warmup=warmup, keep_etdump=dump, threads=plan.threads)
                    rec = _to_record(spec, m.key, profile, runner="in-process executorch.runtime",
                                     etdump_path=str(dump))
                except Exception as exc:  # noqa: BLE001 - one program's failure is recorded, the rest go on
                    rec = _failed_record(spec, m.key, f"{type(exc).__name__}: {exc}"[:500],
                                         "in-process executorch.runtime")
                store_record(own_store, run_id, rec)
                done.append(rec)
            return done

        def work(spec: str, stop: object) -> list:
            if threading.current_thread() is threading.main_thread():
                return profile_target(spec, store)
            with ResultsStore(store.path) as own:  # a worker thread writes through its own connection
                return profile_target(spec, own)

        outcome = fleet.run_schedule(schedule, work)
        if outcome.interrupted is not None:
            raise outcome.interrupted
        if outcome.failures:
            raise next(iter(outcome.failures.values()))
    finally:
        for session in sessions.values():
            session.close()
    return [rec for target in plan.targets for rec in outcome.results[target.spec]]


def store_record(store: Any, run_id: str, rec: Any) -> None:
    from device_results.store.profiles import record_profile

    record_profile(store, run_id, rec)


def _profile_on_device(session: Any, models: Sequence[Any], by_key: dict, inputs: Any, target_dir: Path, *,
                       runs: int, warmup: int, store: Any, run_id: str) -> list:
    from android_bench.runners import RUNNER_LABELS

    dev = session.device
    runner_name = RUNNER_LABELS.get(session.runner_kind, session.runner_kind)
    runner_sha = ""
    with contextlib.suppress(Exception):
        runner_sha = dev.sha256(session.remote_runner)
    records = []
    for m in models:
        prog = by_key[m.key]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", m.key)
        remote_dump = f"{session.run_dir}/out/{slug}.etdump"
        local_dump = target_dir / f"{m.key}.etdump"
        dev.shell(["rm", "-f", remote_dump], timeout_s=30, check=False)
        input_remote = session.remote_inputs.get((0, None))
        latencies, error, _output, _status = session.invoke_runner(
            session.remote_models[m.key], input_remote, f"{session.run_dir}/out/{slug}_profile", warmup + runs,
            log_name=f"profile_{slug}", extra_args=["--etdump_path", remote_dump])
        if latencies is None:
            rec = _failed_record(session.target.spec, m.key, error, runner_name)
        elif not dev.exists(remote_dump):
            message = f"{session.target.spec}: {NO_TRACER_HINT}"
            log.warning("%s", message)
            profile = no_etdump_profile(message, latencies[warmup:])
            rec = _to_record(session.target.spec, m.key, profile, runner=runner_name, runner_sha256=runner_sha)
        else:
            local_dump.parent.mkdir(parents=True, exist_ok=True)
            dev.pull(remote_dump, local_dump)
            try:
                profile = analyse_etdump(local_dump, etrecord=prog.etrecord, warmup=warmup,
                                         runner_latencies_ms=latencies[warmup:])
                rec = _to_record(session.target.spec, m.key, profile, runner=runner_name, runner_sha256=runner_sha,
                                 etdump_path=str(local_dump))
            except ProfileError as exc:
                rec = _failed_record(session.target.spec, m.key, exc.message, runner_name)
        store_record(store, run_id, rec)
        records.append(rec)
    return records


def profile_manifest(manifest: str | Path, targets: Sequence[str], store: Any, *, out_root: Path, runs: int = 20,
                     warmup: int = 2, threads: int | None = None, affinity: str | None = None,
                     runner: Path | None = None, connect: Any = None, seed: int = 0) -> tuple[str, list]:
    """``emobench profile``: a profile-only run in the store; returns (run_id, profiles).

    Raises:
        PlanError: a bad manifest or setting; TargetError: an unusable target.
    """
    from android_bench.latency import latency_plan
    from device_results.store import ArtifactRecord, new_run_id

    plan = latency_plan(Path(manifest), targets, runs=runs, warmup=warmup, threads=threads, affinity=affinity,
                        include_eager=False)
    run_id = new_run_id()
    arts = [ArtifactRecord(model_key=m.key, format=m.format, precision=m.precision,
                           quantization=m.mode or "none", path=m.path, size_bytes=m.size_bytes, sha256=m.sha256)
            for m in plan.models if m.format == "executorch"]
    plan_json = {"kind": "profile", "manifest_path": plan.manifest_path, "manifest_sha256": plan.manifest_sha256,
                 "targets": [t.spec for t in plan.targets], "runs": runs, "warmup": warmup, "threads": threads,
                 "affinity_mask": plan.affinity_mask, "seed": seed,
                 "input": "standard normal values (seeded), the manifest's input shape"}
    out_dir = Path(out_root) / run_id
    store.create_run(plan=plan_json, artifacts=arts, experiments=[], log_dir=str(out_dir), label="profile",
                     run_id=run_id)
    try:
        records = profile_run(store, run_id, plan, out_dir=out_dir, runs=runs, warmup=warmup, runner=runner,
                              connect=connect, seed=seed, add_targets=True)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            store.finish_run(run_id, "partial", f"profiling stopped: {exc}"[:500])
        raise
    failed = [r for r in records if r.status == "failed"]
    store.finish_run(run_id, "partial" if failed else "complete",
                     f"{len(failed)} profile(s) failed" if failed else "")
    return run_id, records
