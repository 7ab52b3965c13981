"""Merge the runs of several results databases into one (`emobench results merge`).

Each lab host (or each Slurm array task) writes its own database; merging puts every run, with every
row of every table, into one file so that one report shows all devices. The rules:

- A run is copied whole: its ``runs`` row and every row of each table keyed by ``run_id``
  (tables are found in the source's schema, so tables added later are copied too), in one
  transaction per source database.
- A run id already in the destination with the same content is skipped, so merging twice adds
  nothing. The same run id with different content is a conflict: nothing from that source is
  written and the error names both files.
- Where each run came from is kept in the ``run_origins`` table: the source database, the host that
  produced it (when known), when and by which host it was merged. A run merged again from a merged
  database keeps its first origin.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_results.store import ResultsStore, StoreError, utc_now

log = logging.getLogger(__name__)

ORIGINS_TABLE = "run_origins"
_ORIGINS_DDL = f"""
CREATE TABLE IF NOT EXISTS {ORIGINS_TABLE} (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id) ON DELETE CASCADE,
    source_host TEXT NOT NULL,
    source_db TEXT NOT NULL,
    merged_at TEXT NOT NULL,
    merged_by_host TEXT NOT NULL
)
"""


class MergeConflictError(StoreError):
    """One run id holds different content in two databases."""


@dataclass(frozen=True)
class RunOrigin:
    """Where a merged run came from."""

    run_id: str
    source_host: str
    source_db: str
    merged_at: str
    merged_by_host: str


@dataclass(frozen=True)
class SourceMerge:
    """What merging one source database did."""

    source_db: Path
    source_host: str
    runs_added: tuple[str, ...]
    runs_already_present: tuple[str, ...]
    rows_added: Mapping[str, int] = field(default_factory=dict)

    @property
    def total_rows_added(self) -> int:
        return sum(self.rows_added.values())


@dataclass(frozen=True)
class MergeResult:
    """The outcome of a merge: one entry per source, in the order given."""

    into: Path
    sources: tuple[SourceMerge, ...]

    @property
    def runs_added(self) -> int:
        return sum(len(s.runs_added) for s in self.sources)

    @property
    def rows_added(self) -> int:
        return sum(s.total_rows_added for s in self.sources)


@dataclass(frozen=True)
class _Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]


@dataclass
class _SourceRun:
    run_id: str
    fingerprint: str
    row_counts: dict[str, int]
    origin: RunOrigin | None


def merge_databases(
    sources: Sequence[str | Path],
    into: str | Path,
    *,
    source_hosts: Sequence[str] | None = None,
) -> MergeResult:
    """Copy every run of ``sources`` into the database ``into`` (created when absent).

    Args:
        sources: results databases written by emobench, merged in this order.
        into: the destination database; it may already hold runs.
        source_hosts: the host that produced each source, one per source in the same order
            (recorded in ``run_origins``); runs that already carry an origin keep it.

    Returns:
        What was added from each source, and what was already there.

    Raises:
        StoreError: a source is missing, is the destination itself, or is not a results database.
        MergeConflictError: a run id holds different content in two of the databases; nothing of
            any source is written then.
    """
    into_path = Path(into)
    source_paths = [Path(s) for s in sources]
    if not source_paths:
        raise StoreError("nothing to merge: no source databases given", hint="name one or more .db files")
    if source_hosts is not None and len(source_hosts) != len(source_paths):
        raise StoreError(f"{len(source_hosts)} source hosts for {len(source_paths)} source databases",
                         hint="give one --source-host per source database, in the same order, or none")
    hosts = list(source_hosts) if source_hosts is not None else [""] * len(source_paths)
    _check_paths(source_paths, into_path)

    # First pass, reading only: every run of every source with its fingerprint, so that a conflict
    # anywhere refuses the whole merge before anything is written.
    seen: dict[str, tuple[Path, _SourceRun]] = {}
    scanned: list[dict[str, _SourceRun]] = []
    for path in source_paths:
        runs = _scan_source(path)
        for run_id, run in runs.items():
            if run_id in seen and seen[run_id][1].fingerprint != run.fingerprint:
                raise _conflict(run_id, seen[run_id][0], seen[run_id][1].row_counts, path, run.row_counts)
            seen.setdefault(run_id, (path, run))
        scanned.append(runs)

    merged_by = socket.gethostname()
    results = []
    with ResultsStore(into_path) as dest:
        with dest.transaction() as conn:
            conn.execute(_ORIGINS_DDL)
            for run_id, (path, run) in seen.items():
                existing = _fingerprint_if_present(conn, run_id)
                if existing is not None and existing[0] != run.fingerprint:
                    raise _conflict(run_id, path, run.row_counts, into_path, existing[1],
                                    origin=_read_origin(conn, run_id))
        for path, host, runs in zip(source_paths, hosts, scanned, strict=True):
            results.append(_merge_one(dest, path, host, runs, merged_by))
    result = MergeResult(into=into_path, sources=tuple(results))
    log.info("merged %d run(s), %d row(s) into %s", result.runs_added, result.rows_added, into_path)
    return result


def read_origins(store: ResultsStore) -> dict[str, RunOrigin]:
    """The recorded origin of every merged run of a database, by run id (empty when none was merged)."""
    with store.transaction() as conn:
        if not _has_table(conn, ORIGINS_TABLE):
            return {}
        rows = conn.execute(f"SELECT * FROM {ORIGINS_TABLE} ORDER BY run_id").fetchall()
    return {r["run_id"]: RunOrigin(**{k: r[k] for k in r.keys()}) for r in rows}


# --- sources --------------------------------------------------------------------------------------


def _check_paths(sources: list[Path], into: Path) -> None:
    for path in sources:
        if not path.is_file():
            raise StoreError(f"source database {path} does not exist", hint="check the path of each .db to merge")
        if into.exists() and path.resolve() == into.resolve():
            raise StoreError(f"source database {path} is the destination {into} itself",
                             hint="merge into a different file")
    resolved = [p.resolve() for p in sources]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise StoreError(f"source database {sources[i]} is named twice", hint="name each source once")


def _scan_source(path: Path) -> dict[str, _SourceRun]:
    # Opening through the store checks that it is an emobench database this version can read (and
    # migrates an older one), then a read-only connection reads one consistent snapshot.
    with ResultsStore(path):
        pass
    with _read_only(path) as conn:
        tables = _run_tables(conn)
        origins_present = _has_table(conn, ORIGINS_TABLE)
        out: dict[str, _SourceRun] = {}
        for (run_id,) in conn.execute("SELECT run_id FROM runs ORDER BY created_at, run_id").fetchall():
            fingerprint, counts = _fingerprint(conn, run_id, tables)
            origin = None
            if origins_present:
                row = conn.execute(f"SELECT * FROM {ORIGINS_TABLE} WHERE run_id = ?", (run_id,)).fetchone()
                if row is not None:
                    origin = RunOrigin(**{k: row[k] for k in row.keys()})
            out[run_id] = _SourceRun(run_id, fingerprint, counts, origin)
    return out


class _read_only:
    """A read-only connection holding one read transaction (a snapshot under WAL) while open."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("BEGIN")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read {self.path} ({exc})", hint="check the file and its permissions") from exc
        return self.conn

    def __exit__(self, *exc: Any) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _run_tables(conn: sqlite3.Connection) -> list[_Table]:
    """``runs`` then every table keyed by ``run_id``, each after the tables its foreign keys name."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    tables: dict[str, _Table] = {}
    parents: dict[str, set[str]] = {}
    for name in names:
        if name == ORIGINS_TABLE or name.startswith("sqlite_"):
            continue
        info = conn.execute(f'PRAGMA table_info("{name}")').fetchall()
        columns = tuple(r["name"] for r in info)
        if "run_id" not in columns:
            continue
        pk = tuple(r["name"] for r in sorted((r for r in info if r["pk"]), key=lambda r: r["pk"]))
        tables[name] = _Table(name, columns, pk or columns)
        parents[name] = {r["table"] for r in conn.execute(f'PRAGMA foreign_key_list("{name}")')}
    ordered: list[_Table] = []
    placed: set[str] = set()
    while len(ordered) < len(tables):
        ready = [n for n in sorted(tables) if n not in placed and (parents[n] & set(tables)) <= placed | {n}]
        if not ready:
            raise StoreError(f"foreign keys between {sorted(set(tables) - placed)} form a cycle",
                             hint="this database's schema is not emobench's")
        ordered.extend(tables[n] for n in ready)
        placed.update(ready)
    return ordered


def _fingerprint(conn: sqlite3.Connection, run_id: str, tables: list[_Table]) -> tuple[str, dict[str, int]]:
    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    for table in tables:
        rows = _table_rows(conn, table, run_id)
        counts[table.name] = len(rows)
        digest.update(json.dumps([table.name, list(table.columns), rows], separators=(",", ":")).encode())
    return digest.hexdigest(), counts


def _table_rows(conn: sqlite3.Connection, table: _Table, run_id: str) -> list[list[Any]]:
    columns = ", ".join(f'"{c}"' for c in table.columns)
    order = ", ".join(f'"{c}"' for c in table.key)
    sql = f'SELECT {columns} FROM "{table.name}" WHERE run_id = ? ORDER BY {order}'
    return [list(r) for r in conn.execute(sql, (run_id,)).fetchall()]


# --- the destination ------------------------------------------------------------------------------


def _fingerprint_if_present(conn: sqlite3.Connection, run_id: str) -> tuple[str, dict[str, int]] | None:
    if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
        return None
    return _fingerprint(conn, run_id, _run_tables(conn))


def _read_origin(conn: sqlite3.Connection, run_id: str) -> RunOrigin | None:
    row = conn.execute(f"SELECT * FROM {ORIGINS_TABLE} WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else RunOrigin(**{k: row[k] for k in row.keys()})


def _merge_one(dest: ResultsStore, path: Path, host: str, runs: dict[str, _SourceRun],
               merged_by: str) -> SourceMerge:
    added: list[str] = []
    present: list[str] = []
    rows_added: dict[str, int] = {}
    with _read_only(path) as src, dest.transaction() as conn:
        src_tables = _run_tables(src)
        dest_columns = {t.name: set(t.columns) for t in _run_tables(conn)}
        for table in src_tables:
            missing = set(table.columns) - dest_columns.get(table.name, set())
            if missing:
                raise StoreError(f"{path} has table {table.name} with columns {sorted(missing)} that "
                                 f"{dest.path} lacks", hint="merge with the emobench version that wrote the source")
        for run_id, run in runs.items():
            # The source may have been written to since the first pass: compare this snapshot.
            fingerprint, counts = _fingerprint(src, run_id, src_tables)
            existing = _fingerprint_if_present(conn, run_id)
            if existing is not None:
                if existing[0] != fingerprint:
                    raise _conflict(run_id, path, counts, dest.path, existing[1], origin=_read_origin(conn, run_id))
                present.append(run_id)
                continue
            for table in src_tables:
                rows = _table_rows(src, table, run_id)
                if rows:
                    placeholders = ", ".join("?" for _ in table.columns)
                    columns = ", ".join(f'"{c}"' for c in table.columns)
                    conn.executemany(f'INSERT INTO "{table.name}" ({columns}) VALUES ({placeholders})', rows)
                rows_added[table.name] = rows_added.get(table.name, 0) + len(rows)
            if counts.get("runs") and src.execute("SELECT status FROM runs WHERE run_id = ?",
                                                  (run_id,)).fetchone()[0] == "incomplete":
                log.warning("%s: run %s is incomplete (still running, or stopped early); merging it as it is",
                            path, run_id)
            origin = run.origin or RunOrigin(run_id, host, str(path.resolve()), utc_now(), merged_by)
            conn.execute(f"INSERT INTO {ORIGINS_TABLE} VALUES (?, ?, ?, ?, ?)",
                         (origin.run_id, origin.source_host, origin.source_db, origin.merged_at,
                          origin.merged_by_host))
            added.append(run_id)
    log.info("%s: %d run(s) added, %d already present", path, len(added), len(present))
    return SourceMerge(source_db=path, source_host=host, runs_added=tuple(added),
                       runs_already_present=tuple(present), rows_added=rows_added)


def _conflict(run_id: str, first: Path, first_counts: Mapping[str, int], second: Path,
              second_counts: Mapping[str, int], *, origin: RunOrigin | None = None) -> MergeConflictError:
    differing = [f"{t}: {first_counts.get(t, 0)} vs {second_counts.get(t, 0)} rows"
                 for t in sorted(set(first_counts) | set(second_counts))
                 if first_counts.get(t, 0) != second_counts.get(t, 0)]
    where = f"{second}" + (f" (merged there from {origin.source_db})" if origin else "")
    detail = "; ".join(differing) if differing else "same row counts, different values"
    return MergeConflictError(
        f"run {run_id} is in both {first} and {where} with different content ({detail}); nothing was merged",
        hint="a run id must mean one run: leave one of the two databases out, or remove that run from one",
    )
