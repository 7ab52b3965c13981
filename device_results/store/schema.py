"""The results database's schema: its tables, its version and the migrations between versions.

``PRAGMA user_version`` holds the version a database was written with. ``MIGRATIONS[v]`` takes a
database from version ``v`` to ``v + 1`` (``MIGRATIONS[0]`` creates the tables of a new file), so
``SCHEMA_VERSION == len(MIGRATIONS)``. To add a column or a table, append one migration (e.g.
``ALTER TABLE cells ADD COLUMN ...``), add the table to ``TABLE_ORDER`` when it is new, and never
edit a migration that has shipped: databases in the field were written by it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from device_results.store.errors import StoreError
from device_results.store.profiles import PROFILE_TABLE_ORDER, PROFILES_V3

RUN_STATUSES = ("incomplete", "partial", "complete")
CELL_STATUSES = ("ok", "failed")

SCHEMA_V1 = """
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

# Version 2: where each target's temperatures and CPU frequencies came from (issue 15). Rows written
# before it: a phone's and the host's readings were their sensors'; a virtual device's may have been
# its profile's constants, and nobody can tell now, so they say 'not recorded' (never shown as measured).
TELEMETRY_SOURCES_V2 = """
ALTER TABLE targets ADD COLUMN thermal_source TEXT NOT NULL DEFAULT 'not recorded';
ALTER TABLE targets ADD COLUMN freq_source TEXT NOT NULL DEFAULT 'not recorded';
UPDATE targets SET
    thermal_source = CASE WHEN is_virtual = 1 THEN 'not recorded' WHEN kind = 'android' THEN 'sensor'
                          ELSE 'host sensor' END,
    freq_source = CASE WHEN is_virtual = 1 THEN 'not recorded' WHEN kind = 'android' THEN 'sensor'
                       ELSE 'host sensor' END
"""

# MIGRATIONS[v] upgrades a database from version v to v + 1; statements are separated by ";".
# Version 3: per-operator profiles from ExecuTorch's ETDump (issue 13; DDL in store/profiles.py).
MIGRATIONS: tuple[str, ...] = (SCHEMA_V1, TELEMETRY_SOURCES_V2, PROFILES_V3)
SCHEMA_VERSION = len(MIGRATIONS)

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
TABLE_ORDER.update(PROFILE_TABLE_ORDER)


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version a database was written with (0 for a new, empty file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def needs_migration(conn: sqlite3.Connection, path: Path) -> bool:
    """Whether a database is older than ``SCHEMA_VERSION`` (or new and empty), after checking it is not newer.

    Raises:
        StoreError: the database was written by a newer emobench.
    """
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} has results schema version {version}; this emobench reads up to "
                         f"{SCHEMA_VERSION}", hint="upgrade emobench to read this database")
    return version < SCHEMA_VERSION


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring a database up to ``SCHEMA_VERSION``; the caller holds the write transaction.

    The version is read again under the lock, so two processes opening one new file migrate it once.

    Raises:
        StoreError: the file is an SQLite database of something else.
    """
    version = schema_version(conn)
    if version == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
        if tables and not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'").fetchone():
            raise StoreError(f"{path} is an SQLite database of something else (no 'runs' table)",
                             hint="point --db at a new file")
    if version >= SCHEMA_VERSION:
        return
    for migration in MIGRATIONS[version:]:
        for statement in migration.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
