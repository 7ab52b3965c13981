"""The SQLite results store: schema, one transaction per (experiment, target), concurrency, bad files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from device_results.store import (
    AlreadyRecordedError,
    ArtifactRecord,
    CellResult,
    ExperimentResult,
    ExperimentRow,
    PredictionRow,
    ResultsStore,
    RunNotFoundError,
    StoreError,
    TargetRecord,
    Telemetry,
    utc_now,
)

ARTIFACTS = [
    ArtifactRecord("executorch-fp32", "executorch", "fp32", "none", "m_fp32.pte", 1000, "a" * 64, {"x": 1}),
    ArtifactRecord("executorch-int8-dynamic", "executorch", "int8", "dynamic", "m_int8.pte", 400, "b" * 64),
]
EXPERIMENTS = [
    ExperimentRow(i, "seen" if i % 2 == 0 else "unseen", "rafdb", (f"img{i}a", f"img{i}b"), (0, 1),
                  ("executorch-fp32", "executorch-int8-dynamic"))
    for i in range(3)
]
TARGET = TargetRecord("host-cpu", "host-cpu", False, {"cpu": "test"}, {"torch": "x"}, 2, None, "python")


def make_cell(key: str, order: int, *, status: str = "ok", preds=((0, 0), (1, 0))) -> CellResult:
    now = utc_now()
    return CellResult(
        model_key=key, status=status, order_index=order, batch_size=2, warmup=1, repeats=2, threads=2,
        affinity_mask=None, how_obtained="python", started_at=now, finished_at=now,
        latencies_ms=(1.5, 1.25) if status == "ok" else (),
        predictions=tuple(PredictionRow(i, f"img{i}", label, pred, 0.5, (0.1, 0.9)) for i, (label, pred)
                          in enumerate(preds)) if status == "ok" else (),
        message="" if status == "ok" else "runner crashed", runner_output="" if status == "ok" else "E boom",
    )


def make_result(index: int, cells) -> ExperimentResult:
    tel = Telemetry({"cpu": 40.5}, {"0": 1800000}, utc_now())
    return ExperimentResult(index, utc_now(), utc_now(), tuple(cells), before=tel, after=tel, cooldown_s=0.0)


def new_run(store: ResultsStore) -> str:
    run_id = store.create_run(plan={"seed": 0, "experiments": 3}, artifacts=ARTIFACTS, experiments=EXPERIMENTS)
    store.add_target(run_id, TARGET, model_support={"executorch-fp32": None, "executorch-int8-dynamic": None})
    return run_id


def test_round_trip_and_counts(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        run_id = new_run(store)
        assert store.get_run(run_id).status == "incomplete"
        store.record_experiment(run_id, "host-cpu", make_result(0, [make_cell("executorch-fp32", 0),
                                                                make_cell("executorch-int8-dynamic", 1)]))
        assert store.done_experiments(run_id, "host-cpu") == {0}
        counts = store.counts(run_id)
        assert counts["cells"] == 2 and counts["latencies"] == 4 and counts["predictions"] == 4
        assert counts["telemetry"] == 2 and counts["experiments"] == 3 and counts["artifacts"] == 2
        preds = store.rows(run_id, "predictions", model_key="executorch-fp32")
        assert [(p["label"], p["prediction"], p["correct"]) for p in preds] == [(0, 0, 1), (1, 0, 0)]
        store.finish_run(run_id, "complete")
        run = store.get_run(run_id)
        assert run.status == "complete" and run.finished_at and run.plan == {"seed": 0, "experiments": 3}
        dump = store.dump_run(run_id)
        assert dump["run"]["run_id"] == run_id and len(dump["latencies"]) == 4
    # WAL mode persists in the file
    conn = sqlite3.connect(tmp_path / "r.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_experiment_is_written_all_or_nothing(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        run_id = new_run(store)
        bad = make_cell("executorch-int8-dynamic", 1, status="exploded")
        with pytest.raises(ValueError):
            store.record_experiment(run_id, "host-cpu", make_result(0, [make_cell("executorch-fp32", 0), bad]))
        assert store.done_experiments(run_id, "host-cpu") == set()
        assert store.counts(run_id)["cells"] == 0 and store.counts(run_id)["predictions"] == 0
        store.record_experiment(run_id, "host-cpu", make_result(0, [make_cell("executorch-fp32", 0),
                                                                make_cell("executorch-int8-dynamic", 1, status="failed")]))
        with pytest.raises(AlreadyRecordedError):
            store.record_experiment(run_id, "host-cpu", make_result(0, [make_cell("executorch-fp32", 0)]))
        failed = store.rows(run_id, "cells", status="failed")
        assert failed[0]["message"] == "runner crashed" and failed[0]["runner_output"] == "E boom"


def test_resolve_and_missing_runs(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        with pytest.raises(RunNotFoundError):
            store.resolve_run_id("latest")
        run_id = new_run(store)
        assert store.resolve_run_id("latest") == run_id
        assert store.resolve_run_id(run_id[:12]) == run_id
        with pytest.raises(RunNotFoundError, match="no run"):
            store.get_run("nope")
        with pytest.raises(RunNotFoundError):
            store.resolve_run_id("zz%")


def test_refuses_foreign_and_newer_files(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="junk.db"):
        ResultsStore(junk)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE stuff (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="something else"):
        ResultsStore(other)
    newer = tmp_path / "newer.db"
    ResultsStore(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="version 99"):
        ResultsStore(newer)


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.device_results.test_store import new_run, make_result, make_cell
    from device_results.store import ResultsStore
    with ResultsStore(sys.argv[1], busy_timeout_s=30) as store:
        run_id = new_run(store)
        for i in range(3):
            store.record_experiment(run_id, "host-cpu", make_result(i, [make_cell("executorch-fp32", 0),
                                                                    make_cell("executorch-int8-dynamic", 1)]))
        store.finish_run(run_id, "complete")
""")


def test_two_processes_write_at_once(tmp_path):
    db = tmp_path / "shared.db"
    root = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(root=root))
    procs = [subprocess.Popen([sys.executable, str(script), str(db)], stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    with ResultsStore(db) as store:
        runs = store.list_runs()
        assert len(runs) == 2 and all(r.status == "complete" for r in runs)
        for r in runs:
            assert store.counts(r.run_id)["predictions"] == 12
        assert store.integrity_check() == "ok"


def test_table_columns_and_csv_export_of_empty_tables(tmp_path):
    from device_results.export import export_run

    with ResultsStore(tmp_path / "r.db") as store:
        run_id = new_run(store)
        assert store.table_columns("latencies") == ["run_id", "target_id", "experiment_index", "model_key",
                                                    "repeat_index", "latency_ms"]
        assert store.table_columns("runs")[:2] == ["run_id", "created_at"]
        with pytest.raises(ValueError, match="unknown table"):
            store.table_columns("sqlite_master")
        paths = export_run(store, run_id, tmp_path / "csv")
    # No experiment was recorded: the empty tables still get their header row.
    assert (tmp_path / "csv" / "latencies.csv").read_text() == (
        "run_id,target_id,experiment_index,model_key,repeat_index,latency_ms\n")
    assert (tmp_path / "csv" / "targets.csv").read_text().count("\n") == 2
    assert len(paths) == 12  # run.csv + 11 tables (9 + the profile tables of migration 3)


def test_migrations_bring_an_older_file_up_and_run_once(tmp_path, monkeypatch):
    from device_results.store import schema

    path = tmp_path / "old.db"
    ResultsStore(path).close()
    # A later emobench adds a column: one more migration, one more version.
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, "ALTER TABLE cells ADD COLUMN note TEXT"))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(schema.MIGRATIONS))
    for _ in range(2):  # the second open finds the file current and changes nothing
        with ResultsStore(path) as store:
            assert "note" in store.table_columns("cells")
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
        conn.close()


def test_read_only_queries_for_tables_of_other_modules(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        run_id = new_run(store)
        assert store.has_table("cells") and not store.has_table("no_such_table")
        rows = store.query("SELECT model_key, size_bytes FROM artifacts WHERE run_id = ? ORDER BY model_key", [run_id])
        assert [(r["model_key"], r["size_bytes"]) for r in rows] == [("executorch-fp32", 1000),
                                                                    ("executorch-int8-dynamic", 400)]
        with pytest.raises(ValueError, match="SELECT statements only"):
            store.query("DELETE FROM artifacts")
        assert store.counts(run_id)["artifacts"] == 2

