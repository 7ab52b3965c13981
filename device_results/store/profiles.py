"""Per-operator profiles in the results store (issue 13): one summary per (run, target, model) and its operators.

``PROFILES_V3`` is the schema migration that adds the two tables (``schema.MIGRATIONS``); writing a
profile also creates them when missing (``CREATE TABLE IF NOT EXISTS``), so a database opened by an
emobench from before the migration was added still takes profiles.

- ``profiles``: status (``ok``; ``no-etdump`` when the runner was built without the event tracer and
  only its latency is known; ``failed``), runs, median ``Method::execute`` ms, the median of the summed
  operator times, coverage (their ratio), which runner ran (native / stand-in / in-process runtime,
  with its sha256) and whether the ETRecord was used.
- ``operator_profiles``: operator (XNNPACK's or the kernel's name without instance number), kind
  (convolution, depthwise convolution, activation, SE multiply, fully connected, quantize/convert ...),
  backend, delegated or not, calls per execution, median and p90 ms over runs, share of the method's time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emobench_common.names import utc_now

PROFILE_STATUSES = ("ok", "no-etdump", "failed")

PROFILES_V3 = """
CREATE TABLE IF NOT EXISTS profiles (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    target_id TEXT NOT NULL,
    model_key TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'no-etdump', 'failed')),
    message TEXT NOT NULL DEFAULT '',
    runs INTEGER NOT NULL,
    execute_median_ms REAL,
    profiled_median_ms REAL,
    coverage REAL,
    runner TEXT NOT NULL,
    runner_sha256 TEXT NOT NULL DEFAULT '',
    etrecord_used INTEGER NOT NULL DEFAULT 0,
    etdump_path TEXT,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (run_id, target_id, model_key)
);
CREATE TABLE IF NOT EXISTS operator_profiles (
    run_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    model_key TEXT NOT NULL,
    operator TEXT NOT NULL,
    delegated INTEGER NOT NULL,
    kind TEXT NOT NULL,
    backend TEXT NOT NULL,
    calls INTEGER NOT NULL,
    median_ms REAL NOT NULL,
    p90_ms REAL NOT NULL,
    share REAL NOT NULL,
    PRIMARY KEY (run_id, target_id, model_key, operator, delegated),
    FOREIGN KEY (run_id, target_id, model_key) REFERENCES profiles(run_id, target_id, model_key) ON DELETE CASCADE
)
"""

PROFILE_TABLE_ORDER: dict[str, tuple[str, ...]] = {
    "profiles": ("target_id", "model_key"),
    "operator_profiles": ("target_id", "model_key", "operator", "delegated"),
}


@dataclass(frozen=True)
class OperatorRow:
    """One operator of a profile (see the module docstring)."""

    operator: str
    kind: str
    backend: str
    delegated: bool
    calls: int
    median_ms: float
    p90_ms: float
    share: float


@dataclass(frozen=True)
class ProfileRecord:
    """A program's profile on one target."""

    target_id: str
    model_key: str
    status: str
    runs: int
    runner: str
    execute_median_ms: float | None = None
    profiled_median_ms: float | None = None
    coverage: float | None = None
    runner_sha256: str = ""
    etrecord_used: bool = False
    etdump_path: str | None = None
    message: str = ""
    operators: tuple[OperatorRow, ...] = ()


def ensure_profile_tables(conn: sqlite3.Connection) -> None:
    """Create the profile tables where a database has none yet (idempotent)."""
    for statement in PROFILES_V3.split(";"):
        if statement.strip():
            conn.execute(statement)


def record_profile(store: Any, run_id: str, profile: ProfileRecord) -> None:
    """Write (or replace) one profile and its operators in one transaction.

    Args:
        store: a ``ResultsStore``.
    """
    if profile.status not in PROFILE_STATUSES:
        raise ValueError(f"profile status must be one of {PROFILE_STATUSES}, got {profile.status!r}")
    with store.transaction() as conn:
        ensure_profile_tables(conn)
        key = (run_id, profile.target_id, profile.model_key)
        conn.execute("DELETE FROM operator_profiles WHERE run_id = ? AND target_id = ? AND model_key = ?", key)
        conn.execute("DELETE FROM profiles WHERE run_id = ? AND target_id = ? AND model_key = ?", key)
        conn.execute(
            "INSERT INTO profiles (run_id, target_id, model_key, status, message, runs, execute_median_ms,"
            " profiled_median_ms, coverage, runner, runner_sha256, etrecord_used, etdump_path, recorded_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*key, profile.status, profile.message, profile.runs, profile.execute_median_ms,
             profile.profiled_median_ms, profile.coverage, profile.runner, profile.runner_sha256,
             int(profile.etrecord_used), profile.etdump_path, utc_now()))
        conn.executemany(
            "INSERT INTO operator_profiles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*key, o.operator, int(o.delegated), o.kind, o.backend, o.calls, o.median_ms, o.p90_ms, o.share)
             for o in profile.operators])


def read_profiles(store: Any, run_id: str) -> list[ProfileRecord]:
    """A run's profiles with their operators (slowest first); empty for a database without profiles."""
    if not store.has_table("profiles"):
        return []
    out = []
    for p in store.query("SELECT * FROM profiles WHERE run_id = ? ORDER BY target_id, model_key", (run_id,)):
        ops = store.query(
            "SELECT * FROM operator_profiles WHERE run_id = ? AND target_id = ? AND model_key = ?"
            " ORDER BY median_ms DESC, operator", (run_id, p["target_id"], p["model_key"]))
        out.append(ProfileRecord(
            target_id=p["target_id"], model_key=p["model_key"], status=p["status"], runs=p["runs"],
            runner=p["runner"], execute_median_ms=p["execute_median_ms"], profiled_median_ms=p["profiled_median_ms"],
            coverage=p["coverage"], runner_sha256=p["runner_sha256"], etrecord_used=bool(p["etrecord_used"]),
            etdump_path=p["etdump_path"], message=p["message"],
            operators=tuple(OperatorRow(operator=o["operator"], kind=o["kind"], backend=o["backend"],
                                        delegated=bool(o["delegated"]), calls=o["calls"], median_ms=o["median_ms"],
                                        p90_ms=o["p90_ms"], share=o["share"]) for o in ops)))
    return out


def profile_records_from(rows: Sequence[ProfileRecord]) -> dict[tuple[str, str], ProfileRecord]:
    """(target_id, model_key) -> profile."""
    return {(r.target_id, r.model_key): r for r in rows}
