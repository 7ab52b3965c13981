"""Independent export jobs in parallel worker processes (``ExportConfig.jobs``; ``export_all`` decides when).

Jobs are grouped by what they share through ``ExportContext.cache`` (``group_key``): the ONNX INT8
artifacts start from the FP32 graph, so ONNX is one group; ExecuTorch's static and mixed INT8 share one
calibration, while its FP32 and dynamic INT8 share nothing and run as groups of their own (ExecuTorch
is most of the export's time, so it must spread over the workers); the ``qat`` artifacts of every
format share the QAT run's converted graph. A group runs in one worker, in plan
order, so nothing is computed twice; groups go to free workers longest first.

Workers are *spawned* (a forked copy of a process that has run torch can hang in OpenMP), sized so that
workers x torch threads <= usable cores (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` are set before the
worker imports anything, ``torch.set_num_threads`` after). Each worker loads the checkpoint from its
path, builds the model once, and receives the already-loaded verification and calibration images and
the eager logits from the parent (pickling the arrays is cheaper than decoding the images again).
It then exports each job of a group into the group's own staging folder and verifies it in the
artifact's runtime, exactly as the in-process path does (``export.jobs.export_verified``).

The parent owns everything a user sees: progress events, log records (forwarded from the workers),
moving verified files into place and the manifest. A worker that dies (segfault, OOM kill) fails the
job it was exporting with ``WorkerDiedError``; the group's jobs it had not started are queued again
for a fresh worker (their shared intermediates are rebuilt there). An exception in the parent,
Ctrl-C included, terminates every worker before it propagates: no process is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import connection, get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from export.artifact import Artifact
from export.config import ExportConfig
from export.data import ImageSet
from export.errors import ExportError
from export.jobs import export_verified, failure_reason, format_module

log = logging.getLogger(__name__)

Job = tuple[str, str, str | None]  # (format, precision, mode)

# Which jobs share intermediates through ``ctx.cache``, where a format module does not say so itself with
# a ``parallel_group(precision, mode) -> str``. (format, mode) -> group key; format None = any format.
# ExecuTorch's static and mixed INT8 share one calibration (``export.mixed``); the ExecuTorch and ONNX
# ``qat`` artifacts share the QAT run's converted graph (``export.mixed.quantized_qat``).
_SHARED: dict[tuple[str | None, str | None], str] = {
    ("executorch", "static"): "executorch:calibrated", ("executorch", "mixed"): "executorch:calibrated",
    (None, "qat"): "qat",
}
# Formats whose other jobs share nothing, each a group of its own (ExecuTorch is most of an export's time,
# so it must spread over the workers). Any other format is one group: ONNX's dynamic and static INT8 start
# from its FP32 graph; TorchScript's two jobs are quick.
_INDEPENDENT_JOBS: frozenset[str] = frozenset({"executorch"})
# Seconds one job took (export + verification; EfficientNet-B0 at 64 px, 128 calibration images, 2 cores,
# 2026-12-02), only to hand out the longest groups first; a job not listed counts _DEFAULT_JOB_COST_S.
_JOB_COST_S: dict[Job, float] = {
    ("executorch", "fp32", None): 30.0, ("executorch", "int8", "dynamic"): 37.0,
    ("executorch", "int8", "static"): 64.0, ("executorch", "int8", "mixed"): 60.0,
    ("executorch", "int8", "hybrid"): 70.0,  # 68 s alone (2026-12-07): auto's four observers, measured per image
    ("executorch", "int8", "qat"): 40.0, ("onnx", "int8", "qat"): 10.0,
    ("onnx", "fp32", None): 8.0, ("onnx", "int8", "dynamic"): 1.0, ("onnx", "int8", "static"): 5.0,
    ("torchscript", "fp32", None): 5.0, ("torchscript", "int8", "dynamic"): 13.0,
}
_DEFAULT_JOB_COST_S = 30.0
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Test hook: "<label>=<action>[;...]" (label as in ExportEvent, e.g. "onnx fp32"; action exit, kill, segv
# or raise) makes a worker fail that job that way. Honoured only inside a pytest run.
FAULT_ENV = "EMOBENCH_TEST_EXPORT_WORKER_FAULT"
_STOP_GRACE_S = 5.0


class WorkerDiedError(ExportError):
    """An export worker process ended without reporting the job it was running (crash or kill)."""


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to load the model: given when it is spawned, before the images are read."""

    checkpoint_path: Path
    config: ExportConfig
    threads: int
    log_level: int
    export_log_level: int
    quiet: bool


@dataclass(frozen=True)
class WorkerData:
    """The images and eager logits the parent has loaded: sent to each worker once it is ready."""

    verification: ImageSet
    eager_logits: np.ndarray
    calibration: ImageSet | None


@dataclass(frozen=True)
class JobResult:
    """A job's verified artifacts, still in the staging folder, or the reason it failed."""

    staged: tuple[Artifact, ...] = ()
    error: str | None = None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a Slurm or container limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_count(requested: int | None, groups: int, cores: int) -> int:
    """Worker processes to use: ``requested`` (``None`` = one per core), never more than there are groups."""
    wanted = cores if requested is None else int(requested)
    return max(1, min(wanted, groups))


def job_label(job: Job) -> str:
    fmt, precision, mode = job
    return f"{fmt} {precision}" + (f"-{mode}" if mode else "")


def group_key(job: Job) -> str:
    """Jobs with the same key share intermediates (``ctx.cache``) and run in one worker, in plan order.

    Splitting a group is never wrong (each worker builds what it lacks), only slower when it builds a
    shared intermediate twice; so a job the rules do not know (a new mode) gets a group of its own.
    """
    fmt, precision, mode = job
    grouping = getattr(format_module(fmt), "parallel_group", None)
    if callable(grouping):
        return f"{fmt}:{grouping(precision, mode)}"
    shared = _SHARED.get((fmt, mode)) or _SHARED.get((None, mode))
    if shared is not None:
        return shared
    return f"{fmt}:{precision}-{mode}" if fmt in _INDEPENDENT_JOBS else fmt


def job_cost_s(job: Job) -> float:
    """Roughly how long a job takes (only its rank among the others matters)."""
    return _JOB_COST_S.get(job, _DEFAULT_JOB_COST_S)


def group_jobs(jobs: Sequence[Job]) -> list[list[int]]:
    """Indices into ``jobs``, grouped by ``group_key`` (plan order kept inside a group), longest group first."""
    groups: dict[str, list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(group_key(job), []).append(index)
    return sorted(groups.values(), key=lambda members: -sum(job_cost_s(jobs[i]) for i in members))


class _Worker:
    """The parent's handle on one worker process and the group it is running."""

    def __init__(self, process: Any, conn: Connection) -> None:
        self.spawned_at = time.perf_counter()
        self.process = process
        self.conn = conn
        self.ready = False
        self.fatal = False
        self.group: deque[int] = deque()  # jobs of the current group not yet reported done
        self.running: int | None = None  # the job started and not yet done
        self.group_dir: Path | None = None

    @property
    def busy(self) -> bool:
        return bool(self.group)


class WorkerPool:
    """Spawned export workers: ``start`` them early (they import torch and build the model meanwhile),
    then ``run`` the jobs; ``shutdown`` always (a ``with`` block does it), on success, error or Ctrl-C.

    ``on_start``/``on_result`` of ``run`` are called in this process, in the order the workers report;
    every job gets exactly one ``on_result`` (a job whose worker died gets a ``WorkerDiedError`` reason).
    """

    def __init__(self, setup: WorkerSetup, *, workers: int) -> None:
        self.setup = setup
        self.mp = get_context("spawn")
        self.target_workers = workers
        self.workers: list[_Worker] = []
        self.pending: deque[list[int]] = deque()
        self.jobs: Sequence[Job] = ()
        self.data: WorkerData | None = None
        self.staging_dir = Path()
        self.on_start: Callable[[int], None] = lambda _index: None
        self.on_result: Callable[[int, JobResult], None] = lambda _index, _result: None
        self.groups_made = 0
        self.last_death = ""

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def start(self) -> None:
        """Spawn the workers; each loads the checkpoint and builds the model, then waits for ``run``."""
        for _ in range(self.target_workers):
            self._spawn()

    def run(self, jobs: Sequence[Job], groups: Sequence[Sequence[int]], data: WorkerData, *, staging_dir: Path,
            on_start: Callable[[int], None], on_result: Callable[[int, JobResult], None]) -> None:
        """Export ``jobs`` (``groups`` of their indices, each group in one worker) into ``staging_dir``."""
        self.jobs, self.data, self.staging_dir = jobs, data, staging_dir
        self.on_start, self.on_result = on_start, on_result
        self.pending.extend(list(g) for g in groups)
        if not self.workers and self.pending:
            self.start()
        while self.pending or any(w.busy for w in self.workers):
            for worker in list(self.workers):
                if worker.ready and not worker.busy and self.pending:
                    self._assign(worker, self.pending.popleft())
            if not self.workers:  # every worker died before it could take a group
                self._fail_pending()
                break
            waitables: list[Any] = [w.conn for w in self.workers] + [w.process.sentinel for w in self.workers]
            ready = connection.wait(waitables)
            for worker in list(self.workers):
                if worker.conn in ready or worker.process.sentinel in ready:
                    self._service(worker)

    def _spawn(self) -> None:
        parent_conn, child_conn = self.mp.Pipe(duplex=True)
        process = self.mp.Process(target=_worker_main, args=(child_conn, self.setup), name="emobench-export-worker")
        with _thread_env(self.setup.threads):  # read by the worker's OpenMP/MKL before anything imports them
            process.start()
        child_conn.close()
        self.workers.append(_Worker(process, parent_conn))
        log.debug("started export worker pid %s", process.pid)

    def _assign(self, worker: _Worker, group: list[int]) -> None:
        worker.group_dir = self.staging_dir / f"group-{self.groups_made}"
        self.groups_made += 1
        worker.group_dir.mkdir()
        worker.group = deque(group)
        try:
            worker.conn.send(("group", str(worker.group_dir), [(i, self.jobs[i]) for i in group]))
        except OSError:
            self._died(worker)

    def _service(self, worker: _Worker) -> None:
        """Handle everything the worker has sent; a closed pipe or an ended process is a death."""
        try:
            while worker.conn.poll():
                self._handle(worker, worker.conn.recv())
        except (EOFError, OSError):
            self._died(worker)
            return
        if not worker.process.is_alive():
            self._died(worker)

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "log":
            record: logging.LogRecord = message[1]
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)
        elif kind == "ready":
            try:
                worker.conn.send(("data", self.data))
            except OSError:
                self._died(worker)
                return
            worker.ready = True
            log.debug("export worker pid %s ready after %.1f s", worker.process.pid,
                      time.perf_counter() - worker.spawned_at)
        elif kind == "start":
            worker.running = message[1]
            self.on_start(message[1])
        elif kind == "done":
            index, result = message[1], message[2]
            worker.running = None
            if index in worker.group:
                worker.group.remove(index)
            self.on_result(index, result)
        elif kind == "fatal":  # the worker could not set itself up; it exits next
            worker.fatal = True
            self.last_death = message[1]
            log.error("export worker pid %s could not start: %s", worker.process.pid, message[1])

    def _died(self, worker: _Worker) -> None:
        if worker not in self.workers:
            return
        self.workers.remove(worker)
        worker.process.join(timeout=_STOP_GRACE_S)
        how = _exit_description(worker.process.exitcode)
        worker.conn.close()
        if worker.running is not None:
            label = job_label(self.jobs[worker.running])
            reason = failure_reason(WorkerDiedError(f"the export worker process died ({how}) while exporting {label}"))
            self.last_death = reason
            worker.group.remove(worker.running)
            self.on_result(worker.running, JobResult(error=reason))
        elif not self.last_death:
            self.last_death = failure_reason(WorkerDiedError(f"an export worker process died ({how}) before its first job"))
        if worker.group:  # the rest of its group: a fresh worker rebuilds what they share
            self.pending.appendleft(list(worker.group))
        if worker.running is not None and self.pending and len(self.workers) < self.target_workers:
            self._spawn()  # each respawn follows a crash that cost one job, so the respawns end
        elif not worker.ready and not worker.fatal:
            log.error("export worker pid %s ended before it was ready (%s)", worker.process.pid, how)

    def _fail_pending(self) -> None:
        reason = self.last_death or failure_reason(WorkerDiedError("no export worker process could start"))
        while self.pending:
            for index in self.pending.popleft():
                self.on_start(index)
                self.on_result(index, JobResult(error=reason))

    def shutdown(self) -> None:
        """Stop every worker: an idle one is asked, a busy one gets SIGTERM, then SIGKILL; none outlives this."""
        for worker in self.workers:
            if worker.ready and not worker.busy:
                try:
                    worker.conn.send(("stop",))
                except OSError:
                    worker.process.terminate()
            else:
                worker.process.terminate()
        deadline = time.monotonic() + _STOP_GRACE_S
        for worker in self.workers:
            worker.process.join(timeout=max(0.1, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=1.0)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
            worker.process.close()
        self.workers.clear()


def _exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


@contextlib.contextmanager
def _thread_env(threads: int) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in _THREAD_ENV}
    os.environ.update({name: str(threads) for name in _THREAD_ENV})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ---------------------------------------------------------------- worker side


class _Channel:
    """The worker's end of the pipe; one lock, so a log record from another thread never splits a message."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.send(message)

    def put_nowait(self, record: logging.LogRecord) -> None:  # the "queue" of a QueueHandler
        self.send(("log", record))


def _worker_main(conn: Connection, setup: WorkerSetup) -> None:
    """A worker: build the model, say ready, then export and verify each group sent until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    channel = _Channel(conn)
    _forward_logs(channel, setup)
    try:
        import torch

        from training.checkpoint import load_checkpoint

        torch.set_num_threads(setup.threads)
        checkpoint = load_checkpoint(setup.checkpoint_path)
        model = checkpoint.build_model()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the jobs with it
        channel.send(("fatal", failure_reason(exc)))
        return
    channel.send(("ready",))
    data: WorkerData | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if message[0] == "data":
            data = message[1]
        elif message[0] == "group" and data is not None:
            _, group_dir, group = message
            _run_group(channel, setup, data, checkpoint, model, Path(group_dir), group)
        else:
            return


def _run_group(channel: _Channel, setup: WorkerSetup, data: WorkerData, checkpoint: Any, model: Any,
               group_dir: Path, group: list[tuple[int, Job]]) -> None:
    from export.context import ExportContext

    pipeline_log = logging.getLogger("export.pipeline")
    ctx = ExportContext(checkpoint=checkpoint, model=model, config=setup.config, staging_dir=group_dir,
                        calibration=data.calibration)
    for index, job in group:
        channel.send(("start", index))
        label = job_label(job)
        try:
            _inject_test_fault(label)
            staged = export_verified(ctx, *job, data.verification, data.eager_logits)
        except Exception as exc:  # noqa: BLE001 - any exporter failure is recorded; the other jobs go on
            pipeline_log.debug("%s failed", label, exc_info=True)
            channel.send(("done", index, JobResult(error=failure_reason(exc))))
            continue
        channel.send(("done", index, JobResult(staged=tuple(staged))))


def _forward_logs(channel: _Channel, setup: WorkerSetup) -> None:
    from emobench_common import quiet

    quiet.configure(0 if setup.quiet else 1)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(channel))  # type: ignore[arg-type]
    root.setLevel(setup.log_level)
    logging.getLogger("export").setLevel(setup.export_log_level)


def _inject_test_fault(label: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec or "PYTEST_CURRENT_TEST" not in os.environ:
        return
    for item in spec.split(";"):
        target, _, action = item.rpartition("=")
        if target.strip() != label:
            continue
        if action == "exit":
            os._exit(70)
        elif action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif action == "raise":
            raise RuntimeError(f"injected test fault in {label}")
