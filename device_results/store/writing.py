"""Writing runs to the results store: a run with its plan, its targets, and each finished experiment.

Everything about one (experiment, target) is written in ONE transaction together with its marker,
so a crash or a kill loses at most the experiment in flight, and resume redoes exactly that one.
"""

from __future__ import annotations

import datetime as _dt
import json
import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from device_results.store.connection import StoreConnection
from device_results.store.errors import AlreadyRecordedError, RunNotFoundError
from device_results.store.records import (
    ArtifactRecord,
    CellResult,
    ExperimentResult,
    ExperimentRow,
    TargetRecord,
    artifacts_fingerprint,
    canonical_json,
    sha256_text,
    utc_now,
)
from device_results.store.schema import CELL_STATUSES, RUN_STATUSES


class RunWriter(StoreConnection):
    """The writing half of ``ResultsStore``."""

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
        run_id = run_id or new_run_id()
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
                "INSERT INTO targets (run_id, target_id, kind, is_virtual, info_json, library_versions_json, "
                "threads, affinity_mask, how_obtained, recorded_at, thermal_source, freq_source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, target.target_id, target.kind, int(target.is_virtual), canonical_json(dict(target.info)),
                 canonical_json(dict(target.library_versions)), target.threads, target.affinity_mask,
                 target.how_obtained, utc_now(), target.thermal_source, target.freq_source),
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


def new_run_id() -> str:
    """A fresh run id: ``YYYYMMDD-HHMMSS-<6 hex>`` (UTC)."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
