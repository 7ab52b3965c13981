"""Reading runs back from the results store: run rows, table rows in a stable order, and counts."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from device_results.store.connection import StoreConnection
from device_results.store.errors import RunNotFoundError
from device_results.store.records import RunRow
from device_results.store.schema import SCHEMA_VERSION, TABLE_ORDER


class RunReader(StoreConnection):
    """The reading half of ``ResultsStore``."""

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

    def has_table(self, name: str) -> bool:
        """Whether the database holds a table of that name (tables of later migrations may be absent)."""
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name = ?",
                                  (name,)).fetchone() is not None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of one read-only statement (``SELECT``/``WITH``), for modules that keep tables of their own.

        Raises:
            ValueError: the statement is not a query.
        """
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            raise ValueError(f"store.query runs SELECT statements only, got {sql.split()[0] if sql.split() else sql!r}")
        return self._conn.execute(sql, tuple(params)).fetchall()

    def table_columns(self, table: str) -> list[str]:
        """The column names of one of the run's tables (``runs`` or a table of ``TABLE_ORDER``), in order."""
        if table != "runs" and table not in TABLE_ORDER:
            raise ValueError(f"unknown table {table!r}; one of runs, {', '.join(TABLE_ORDER)}")
        cur = self._conn.execute(f"SELECT * FROM {table} LIMIT 0")
        return [d[0] for d in cur.description]


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _run_row(row: sqlite3.Row) -> RunRow:
    return RunRow(run_id=row["run_id"], created_at=row["created_at"], finished_at=row["finished_at"],
                  status=row["status"], status_message=row["status_message"], plan=json.loads(row["plan_json"]),
                  plan_sha256=row["plan_sha256"], artifacts_sha256=row["artifacts_sha256"], log_dir=row["log_dir"],
                  label=row["label"])
