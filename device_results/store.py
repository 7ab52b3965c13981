"""The SQLite results store: the system of record of every ablation run.

One file holds many runs. What a run records:

- ``runs``: the plan (JSON, with its sha256), the artifacts' combined hash, status
  (``incomplete`` until it ends, then ``complete`` or ``partial`` when some cells failed), a status
  message, created/finished times, the folder of raw runner logs.
- ``targets``: each target's kind, DeviceInfo or host info (JSON), library versions, whether it is
  virtual, threads, CPU affinity mask and how numbers were obtained.
- ``target_models``: which models a target can run, and why not where it cannot (e.g. dynamic INT8
  on CUDA, ONNX on a phone): stated, not hidden.
- ``artifacts``: manifest entries with format, precision, quantization, path, bytes and sha256.
- ``experiments``: index, dataset role and name, exact image ids, the sha256 of the input tensor.
- ``cells``: one row per (target, experiment, model): status ``ok`` / ``failed``, the runner's
  message and output when it failed, the order the model ran in, threads, affinity, how obtained.
- ``latencies``: one row per timed repeat (a whole batch), in ms.
- ``predictions``: per image: id, label, prediction, correct, top-1 probability, logits (optional).
- ``telemetry``: temperatures and CPU frequencies before and after each experiment, cooldown wait.
- ``target_experiments``: the marker that an (experiment, target) is finished.

Everything about one (experiment, target) is written in ONE transaction together with its marker,
so a crash or a kill loses at most the experiment in flight, and resume redoes exactly that one.
The database runs in WAL mode with a busy timeout and takes its write lock up front (``BEGIN
IMMEDIATE``), so two processes can write to the same file at once.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emobench_common.errors import EmobenchError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RUN_STATUSES = ("incomplete", "partial", "complete")
CELL_STATUSES = ("ok", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('incomplete', 'partial', 'complete')),
    status_message TEXT NOT NULL DEFAULT '',
    plan_json TEXT NOT NULL,
    plan_sha256 TEXT NOT NULL,
    artifacts_sha256 TEXT NOT NULL,
    log_dir TEXT,
    label TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS targets (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    target_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    is_virtual INTEGER NOT NULL,
    info_json TEXT NOT NULL,
    library_versions_json TEXT NOT NULL,
    threads INTEGER,
    affinity_mask TEXT,
    how_obtained TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (run_id, target_id)
);
CREATE TABLE IF NOT EXISTS target_models (
    run_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    model_key TEXT NOT NULL,
    supported INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, target_id, model_key),
    FOREIGN KEY (run_id, target_id) REFERENCES targets(run_id, target_id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    model_key TEXT NOT NULL,
    format TEXT NOT NULL,
    precision TEXT NOT NULL,
    quantization TEXT NOT NULL,
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    entry_json TEXT NOT NULL,
    PRIMARY KEY (run_id, model_key)
);
CREATE TABLE IF NOT EXISTS experiments (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    experiment_index INTEGER NOT NULL,
    dataset_role TEXT NOT NULL,
    dataset_name TEXT NOT NULL,
    image_ids_json TEXT NOT NULL,
    labels_json TEXT NOT NULL,
    model_order_json TEXT NOT NULL,
    input_sha256 TEXT,
    PRIMARY KEY (run_id, experiment_index)
);
CREATE TABLE IF NOT EXISTS target_experiments (
    run_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    experiment_index INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    cooldown_s REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, target_id, experiment_index),
    FOREIGN KEY (run_id, target_id) REFERENCES targets(run_id, target_id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS cells (
    run_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    experiment_index INTEGER NOT NULL,
    model_key TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    order_index INTEGER NOT NULL,
    batch_size INTEGER NOT NULL,
    warmup INTEGER NOT NULL,
    repeats INTEGER NOT NULL,
    threads INTEGER,
    affinity_mask TEXT,
    how_obtained TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    runner_output TEXT NOT NULL DEFAULT '',
    log_path TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    PRIMARY KEY (run_id, target_id, experiment_index, model_key),
    FOREIGN KEY (run_id, target_id, experiment_index)
        REFERENCES target_experiments(run_id, target_id, experiment_index) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS latencies (
    run_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    experiment_index INTEGER NOT NULL,
    model_key TEXT NOT NULL,
    repeat_index INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    PRIMARY KEY (run_id, target_id, experiment_index, model_key, repeat_index),
    FOREIGN KEY (run_id, target_id, experiment_index, model_key)
        REFERENCES cells(run_id, target_id, experiment_index, model_key) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS predictions (
    run_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    experiment_index INTEGER NOT NULL,
    model_key TEXT NOT NULL,
    position INTEGER NOT NULL,
    image_id TEXT NOT NULL,
    label INTEGER NOT NULL,
    prediction INTEGER NOT NULL,
    correct INTEGER NOT NULL,
    top1_prob REAL NOT NULL,
    logits_json TEXT,
    PRIMARY KEY (run_id, target_id, experiment_index, model_key, position),
    FOREIGN KEY (run_id, target_id, experiment_index, model_key)
        REFERENCES cells(run_id, target_id, experiment_index, model_key) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS telemetry (
    run_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    experiment_index INTEGER NOT NULL,
    phase TEXT NOT NULL CHECK (phase IN ('before', 'after')),
    temperatures_json TEXT NOT NULL,
    cpu_freqs_json TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (run_id, target_id, experiment_index, phase),
    FOREIGN KEY (run_id, target_id, experiment_index)
        REFERENCES target_experiments(run_id, target_id, experiment_index) ON DELETE CASCADE
);
"""

# Columns of each table that identify a row and the order rows are listed in.
TABLE_ORDER: dict[str, tuple[str, ...]] = {
    "targets": ("target_id",),
    "target_models": ("target_id", "model_key"),
    "artifacts": ("model_key",),
    "experiments": ("experiment_index",),
    "target_experiments": ("target_id", "experiment_index"),
    "cells": ("target_id", "experiment_index", "model_key"),
    "latencies": ("target_id", "experiment_index", "model_key", "repeat_index"),
    "predictions": ("target_id", "experiment_index", "model_key", "position"),
    "telemetry": ("target_id", "experiment_index", "phase"),
}


class StoreError(EmobenchError):
    """The results database cannot be opened or does not hold what was asked for."""


class RunNotFoundError(StoreError):
    """No run with that id in the database."""


class AlreadyRecordedError(StoreError):
    """An (experiment, target) that is already in the database was written again."""


def utc_now() -> str:
    """Current UTC time as ISO 8601 with microseconds."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the form hashes are taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- what the runner hands the store --------------------------------------------------------------


@dataclass(frozen=True)
class TargetRecord:
    """A target as it was found at the start of a run."""

    target_id: str
    kind: str
    is_virtual: bool
    info: Mapping[str, Any]
    library_versions: Mapping[str, str]
    threads: int | None
    affinity_mask: str | None
    how_obtained: str


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


# --- the store ------------------------------------------------------------------------------------


class ResultsStore:
    """A results database. Use as a context manager or call ``close()``.

    Args:
        path: the SQLite file (created with its folder when absent).
        busy_timeout_s: how long a writer waits for another process's write lock.

    Raises:
        StoreError: the file is not an SQLite database, or was written by a newer emobench.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            mode = self._journal_mode_wal(busy_timeout_s)
            if str(mode).lower() != "wal":
                log.warning("%s: journal mode is %s, not WAL (a filesystem without shared memory?)", self.path, mode)
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self._conn.close()
            raise StoreError(f"{self.path} is not a usable emobench results database ({exc})",
                             hint="point --db at a new file or at a database written by emobench") from exc

    def _journal_mode_wal(self, busy_timeout_s: float) -> str:
        # Switching a new database to WAL needs an exclusive lock, and SQLite answers "database is locked"
        # at once (no busy handler) while another process does the same: retry for the busy timeout.
        deadline = time.monotonic() + busy_timeout_s
        while True:
            try:
                return str(self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _init_schema(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has results schema version {version}; this emobench reads up to "
                             f"{SCHEMA_VERSION}", hint="upgrade emobench to read this database")
        if version == SCHEMA_VERSION:
            return
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
                if tables and not conn.execute(
                        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'").fetchone():
                    raise StoreError(f"{self.path} is an SQLite database of something else (no 'runs' table)",
                                     hint="point --db at a new file")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's write lock from its first statement."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # --- writing ----------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        plan: Mapping[str, Any],
        artifacts: Sequence[ArtifactRecord],
        experiments: Sequence[ExperimentRow],
        log_dir: str | None = None,
        label: str = "",
        run_id: str | None = None,
    ) -> str:
        """Store a new run (status ``incomplete``) with its plan, artifacts and experiments.

        Returns:
            The run id: ``YYYYMMDD-HHMMSS-<6 hex>`` unless given.
        """
        run_id = run_id or _new_run_id()
        plan_text = canonical_json(plan)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, created_at, status, plan_json, plan_sha256, artifacts_sha256, log_dir, label)"
                " VALUES (?, ?, 'incomplete', ?, ?, ?, ?, ?)",
                (run_id, utc_now(), plan_text, sha256_text(plan_text), artifacts_fingerprint(artifacts),
                 log_dir, label),
            )
            conn.executemany(
                "INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, a.model_key, a.format, a.precision, a.quantization, a.path, int(a.size_bytes), a.sha256,
                  canonical_json(dict(a.entry))) for a in artifacts],
            )
            conn.executemany(
                "INSERT INTO experiments VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, e.experiment_index, e.dataset_role, e.dataset_name, json.dumps(list(e.image_ids)),
                  json.dumps(list(e.labels)), json.dumps(list(e.model_order)), e.input_sha256) for e in experiments],
            )
        return run_id

    def set_input_sha256(self, run_id: str, hashes: Mapping[int, str]) -> None:
        """Record the sha256 of each experiment's preprocessed input tensor (first time only)."""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE experiments SET input_sha256 = ? WHERE run_id = ? AND experiment_index = ?"
                " AND input_sha256 IS NULL",
                [(h, run_id, i) for i, h in hashes.items()],
            )

    def add_target(self, run_id: str, target: TargetRecord, *, model_support: Mapping[str, str | None]) -> None:
        """Record a target (once per run; a resumed run keeps the first record) and its models.

        ``model_support`` maps model key -> None when supported, else the reason it is not.
        """
        with self.transaction() as conn:
            exists = conn.execute("SELECT 1 FROM targets WHERE run_id = ? AND target_id = ?",
                                  (run_id, target.target_id)).fetchone()
            if exists:
                return
            conn.execute(
                "INSERT INTO targets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, target.target_id, target.kind, int(target.is_virtual), canonical_json(dict(target.info)),
                 canonical_json(dict(target.library_versions)), target.threads, target.affinity_mask,
                 target.how_obtained, utc_now()),
            )
            conn.executemany(
                "INSERT INTO target_models VALUES (?, ?, ?, ?, ?)",
                [(run_id, target.target_id, key, int(reason is None), reason or "")
                 for key, reason in model_support.items()],
            )

    def record_experiment(self, run_id: str, target_id: str, result: ExperimentResult) -> None:
        """Write one (experiment, target) with its cells, latencies, predictions and telemetry atomically.

        Raises:
            AlreadyRecordedError: that (experiment, target) is already in the database.
        """
        try:
            with self.transaction() as conn:
                conn.execute(
                    "INSERT INTO target_experiments VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, target_id, result.experiment_index, result.started_at, result.finished_at,
                     float(result.cooldown_s)),
                )
                for phase, tel in (("before", result.before), ("after", result.after)):
                    if tel is not None:
                        conn.execute(
                            "INSERT INTO telemetry VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (run_id, target_id, result.experiment_index, phase,
                             canonical_json(dict(tel.temperatures_c)), canonical_json(dict(tel.cpu_freqs_khz)),
                             tel.recorded_at),
                        )
                for cell in result.cells:
                    self._insert_cell(conn, run_id, target_id, result.experiment_index, cell)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                raise AlreadyRecordedError(
                    f"{self.path}: run {run_id} already holds experiment {result.experiment_index} on {target_id}"
                ) from exc
            raise

    @staticmethod
    def _insert_cell(conn: sqlite3.Connection, run_id: str, target_id: str, index: int, cell: CellResult) -> None:
        if cell.status not in CELL_STATUSES:
            raise ValueError(f"cell status must be one of {CELL_STATUSES}, got {cell.status!r}")
        key = (run_id, target_id, index, cell.model_key)
        conn.execute(
            "INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*key, cell.status, cell.order_index, cell.batch_size, cell.warmup, cell.repeats, cell.threads,
             cell.affinity_mask, cell.how_obtained, cell.message, cell.runner_output, cell.log_path,
             cell.started_at, cell.finished_at),
        )
        conn.executemany("INSERT INTO latencies VALUES (?, ?, ?, ?, ?, ?)",
                         [(*key, i, float(ms)) for i, ms in enumerate(cell.latencies_ms)])
        conn.executemany(
            "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*key, p.position, p.image_id, int(p.label), int(p.prediction), int(p.correct), float(p.top1_prob),
              None if p.logits is None else json.dumps([float(v) for v in p.logits]))
             for p in cell.predictions],
        )

    def finish_run(self, run_id: str, status: str, message: str = "") -> None:
        """Set a run's final status (``complete``, ``partial``, or ``incomplete`` when it stopped early)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
        finished = utc_now() if status != "incomplete" else None
        with self.transaction() as conn:
            cur = conn.execute("UPDATE runs SET status = ?, status_message = ?, finished_at = ? WHERE run_id = ?",
                               (status, message, finished, run_id))
            if cur.rowcount == 0:
                raise RunNotFoundError(f"{self.path} holds no run {run_id!r}")

    def reopen_run(self, run_id: str) -> None:
        """Mark a run incomplete again before resuming it."""
        self.finish_run(run_id, "incomplete", "resumed")

    # --- reading ----------------------------------------------------------------------------------

    def list_runs(self) -> list[RunRow]:
        """Every run, oldest first."""
        rows = self._conn.execute("SELECT * FROM runs ORDER BY created_at, run_id").fetchall()
        return [_run_row(r) for r in rows]

    def resolve_run_id(self, ref: str) -> str:
        """A run id from a full id, a unique prefix, or ``latest``.

        Raises:
            RunNotFoundError: nothing or more than one run matches.
        """
        if ref == "latest":
            row = self._conn.execute("SELECT run_id FROM runs ORDER BY created_at DESC, run_id DESC LIMIT 1").fetchone()
            if row is None:
                raise RunNotFoundError(f"{self.path} holds no runs yet", hint="run `emobench ablation` first")
            return row[0]
        rows = self._conn.execute("SELECT run_id FROM runs WHERE run_id = ? OR run_id LIKE ? ESCAPE '\\'",
                                  (ref, _like_prefix(ref))).fetchall()
        ids = sorted({r[0] for r in rows})
        if ref in ids:
            return ref
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise RunNotFoundError(f"{self.path} holds no run {ref!r}", hint="list runs with `emobench results list`")
        raise RunNotFoundError(f"run id {ref!r} is ambiguous in {self.path}: {', '.join(ids[:5])}",
                               hint="give more characters of the run id")

    def get_run(self, run_id: str) -> RunRow:
        """The run row.

        Raises:
            RunNotFoundError: no such run.
        """
        row = self._conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFoundError(f"{self.path} holds no run {run_id!r}", hint="list runs with `emobench results list`")
        return _run_row(row)

    def rows(self, run_id: str, table: str, **where: Any) -> list[dict[str, Any]]:
        """Rows of one table for a run, in a stable order, optionally filtered by column equality."""
        if table not in TABLE_ORDER:
            raise ValueError(f"unknown table {table!r}; one of {', '.join(TABLE_ORDER)}")
        clauses = ["run_id = ?"]
        params: list[Any] = [run_id]
        for column, value in where.items():
            if not column.isidentifier():
                raise ValueError(f"bad column name {column!r}")
            clauses.append(f"{column} = ?")
            params.append(value)
        sql = f"SELECT * FROM {table} WHERE {' AND '.join(clauses)} ORDER BY {', '.join(TABLE_ORDER[table])}"
        return [dict(r) for r in self._conn.execute(sql, params).fetchall()]

    def done_experiments(self, run_id: str, target_id: str) -> set[int]:
        """Indices of the experiments finished on a target."""
        rows = self._conn.execute(
            "SELECT experiment_index FROM target_experiments WHERE run_id = ? AND target_id = ?", (run_id, target_id)
        ).fetchall()
        return {int(r[0]) for r in rows}

    def counts(self, run_id: str) -> dict[str, int]:
        """Number of rows per table for a run."""
        return {t: int(self._conn.execute(f"SELECT count(*) FROM {t} WHERE run_id = ?", (run_id,)).fetchone()[0])
                for t in TABLE_ORDER}

    def dump_run(self, run_id: str) -> dict[str, Any]:
        """A run and all its rows as plain data (JSON-ready)."""
        run = self.get_run(run_id)
        out: dict[str, Any] = {
            "run": {"run_id": run.run_id, "created_at": run.created_at, "finished_at": run.finished_at,
                    "status": run.status, "status_message": run.status_message, "plan_sha256": run.plan_sha256,
                    "artifacts_sha256": run.artifacts_sha256, "log_dir": run.log_dir, "label": run.label,
                    "plan": run.plan},
            "schema_version": SCHEMA_VERSION,
        }
        for table in TABLE_ORDER:
            out[table] = self.rows(run_id, table)
        return out

    def integrity_check(self) -> str:
        """SQLite's integrity check ('ok' when the file is sound)."""
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])


def artifacts_fingerprint(artifacts: Sequence[ArtifactRecord]) -> str:
    """sha256 over (model key, sha256) of every artifact, order-independent."""
    return sha256_text(canonical_json(sorted([a.model_key, a.sha256] for a in artifacts)))


def _new_run_id() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _run_row(row: sqlite3.Row) -> RunRow:
    return RunRow(run_id=row["run_id"], created_at=row["created_at"], finished_at=row["finished_at"],
                  status=row["status"], status_message=row["status_message"], plan=json.loads(row["plan_json"]),
                  plan_sha256=row["plan_sha256"], artifacts_sha256=row["artifacts_sha256"], log_dir=row["log_dir"],
                  label=row["label"])
