"""`emobench results merge`: runs copied with every row, conflicts refused, origins kept, idempotent."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from device_results.merge import MergeConflictError, merge_databases, read_origins
from device_results.store import (
    TABLE_ORDER,
    ArtifactRecord,
    CellResult,
    ExperimentResult,
    ExperimentRow,
    PredictionRow,
    ResultsStore,
    StoreError,
    TargetRecord,
    Telemetry,
    utc_now,
)
from emobench import cli

MODELS = ("executorch-fp32", "executorch-int8-dynamic")
ARTIFACTS = [
    ArtifactRecord(MODELS[0], "executorch", "fp32", "none", "m_fp32.pte", 1000, "a" * 64, {"x": 1}),
    ArtifactRecord(MODELS[1], "executorch", "int8", "dynamic", "m_int8.pte", 400, "b" * 64),
]
EXPERIMENTS = [ExperimentRow(i, "seen", "rafdb", (f"img{i}a", f"img{i}b"), (0, 1), MODELS) for i in range(3)]


def _write_run(db: Path, serial: str, *, latency_ms: float, experiments: int = 3, status: str = "complete",
               run_id: str | None = None) -> str:
    """A run of one virtual android target written through the store's own API."""
    target_id = f"android:{serial}"
    with ResultsStore(db) as store:
        run_id = store.create_run(plan={"seed": 0, "targets": [{"spec": target_id}]}, artifacts=ARTIFACTS,
                                  experiments=EXPERIMENTS, run_id=run_id)
        store.add_target(run_id, TargetRecord(target_id, "android", True, {"model": serial}, {"executorch": "1.5.1"},
                                              1, "0x1", "runner"), model_support={m: None for m in MODELS})
        for index in range(experiments):
            now = utc_now()
            cells = tuple(
                CellResult(model_key=m, status="ok", order_index=o, batch_size=2, warmup=1, repeats=2, threads=1,
                           affinity_mask="0x1", how_obtained="runner", started_at=now, finished_at=now,
                           latencies_ms=(latency_ms + o, latency_ms + o + 0.5),
                           predictions=(PredictionRow(0, f"img{index}a", 0, 0, 0.9, (0.9, 0.1)),
                                        PredictionRow(1, f"img{index}b", 1, 0, 0.6, None)))
                for o, m in enumerate(MODELS))
            tel = Telemetry({"cpu": 40.0}, {"0": 1_800_000}, now)
            store.record_experiment(run_id, target_id, ExperimentResult(index, now, now, cells, tel, tel))
        store.finish_run(run_id, status)
    return run_id


def _dump(db: Path, run_id: str) -> dict:
    with ResultsStore(db) as store:
        return store.dump_run(run_id)


@pytest.fixture()
def two_hosts(tmp_path):
    a, b = tmp_path / "host-a.db", tmp_path / "host-b.db"
    run_a = _write_run(a, "virtual-a", latency_ms=5.0)
    run_b = _write_run(b, "virtual-b", latency_ms=7.0)
    return a, b, run_a, run_b


def test_merge_copies_every_row_and_keeps_origin(tmp_path, two_hosts):
    a, b, run_a, run_b = two_hosts
    into = tmp_path / "merged" / "all.db"
    result = merge_databases([a, b], into, source_hosts=["lab-a", "lab-b"])
    assert result.runs_added == 2
    assert [s.runs_added for s in result.sources] == [(run_a,), (run_b,)]
    # 1 target, 2 supports, 2 artifacts, 3 experiments, 3 markers, 6 cells, 12 latencies, 12 predictions, 6 telemetry
    assert result.sources[0].rows_added == {"runs": 1, "targets": 1, "target_models": 2, "artifacts": 2,
                                            "experiments": 3, "target_experiments": 3, "cells": 6, "latencies": 12,
                                            "predictions": 12, "telemetry": 6, "profiles": 0,
                                            "operator_profiles": 0}
    # every row of both runs, byte for byte as the store reads it back
    assert _dump(into, run_a) == _dump(a, run_a)
    assert _dump(into, run_b) == _dump(b, run_b)
    with ResultsStore(into) as store:
        assert {r.run_id for r in store.list_runs()} == {run_a, run_b}
        assert store.integrity_check() == "ok"
        latencies = store.rows(run_b, "latencies", model_key=MODELS[1])
        assert [r["latency_ms"] for r in latencies[:2]] == [8.0, 8.5]
        origins = read_origins(store)
    assert origins[run_a].source_host == "lab-a" and origins[run_b].source_host == "lab-b"
    assert origins[run_a].source_db == str(a.resolve()) and origins[run_b].source_db == str(b.resolve())
    assert origins[run_a].merged_by_host


def test_merge_twice_adds_nothing(tmp_path, two_hosts):
    a, b, run_a, run_b = two_hosts
    into = tmp_path / "all.db"
    merge_databases([a], into)
    again = merge_databases([a, b], into)
    assert again.sources[0].runs_added == () and again.sources[0].runs_already_present == (run_a,)
    assert again.sources[1].runs_added == (run_b,)
    third = merge_databases([a, b], into)
    assert third.runs_added == 0 and third.rows_added == 0
    conn = sqlite3.connect(into)
    for table in ("runs", *TABLE_ORDER):
        total = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        expected = sum(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                       for conn in (sqlite3.connect(a), sqlite3.connect(b)))
        assert total == expected, table
    assert conn.execute("SELECT count(*) FROM run_origins").fetchone()[0] == 2


def test_origin_survives_a_second_merge(tmp_path, two_hosts):
    a, b, run_a, _ = two_hosts
    first = tmp_path / "first.db"
    merge_databases([a], first, source_hosts=["lab-a"])
    final = tmp_path / "final.db"
    merge_databases([first, b], final, source_hosts=["aggregator", "lab-b"])
    with ResultsStore(final) as store:
        origins = read_origins(store)
    assert origins[run_a].source_host == "lab-a" and origins[run_a].source_db == str(a.resolve())


def test_conflicting_run_id_is_refused_naming_both_files(tmp_path):
    a, b = tmp_path / "host-a.db", tmp_path / "host-b.db"
    run_id = _write_run(a, "virtual-a", latency_ms=5.0, run_id="20260101-000000-abcdef")
    _write_run(b, "virtual-b", latency_ms=5.0, run_id=run_id, experiments=2)
    other = _write_run(b, "virtual-c", latency_ms=6.0)
    into = tmp_path / "all.db"
    with pytest.raises(MergeConflictError) as err:
        merge_databases([a, b], into)
    message = str(err.value)
    assert run_id in message and str(a) in message and str(b) in message and "cells: 6 vs 4 rows" in message
    # nothing of either source was written
    with ResultsStore(into) as store:
        assert store.list_runs() == []
    # against a destination that already holds the run, from an earlier merge
    merge_databases([a], into)
    with pytest.raises(MergeConflictError, match=rf"{run_id}.*all\.db \(merged there from .*host-a\.db\)"):
        merge_databases([b], into)
    with ResultsStore(into) as store:
        assert [r.run_id for r in store.list_runs()] == [run_id]
        assert other not in {r.run_id for r in store.list_runs()}


def test_same_counts_different_values_is_a_conflict(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    run_id = _write_run(a, "virtual-a", latency_ms=5.0, run_id="20260101-000000-000001")
    _write_run(b, "virtual-a", latency_ms=5.25, run_id=run_id)
    with pytest.raises(MergeConflictError, match="same row counts, different values"):
        merge_databases([a, b], tmp_path / "all.db")


def test_bad_sources_are_refused(tmp_path, two_hosts):
    a, _, _, _ = two_hosts
    with pytest.raises(StoreError, match="missing.db does not exist"):
        merge_databases([a, tmp_path / "missing.db"], tmp_path / "all.db")
    with pytest.raises(StoreError, match="is the destination"):
        merge_databases([a], a)
    with pytest.raises(StoreError, match="named twice"):
        merge_databases([a, a], tmp_path / "all.db")
    with pytest.raises(StoreError, match="1 source hosts for 2"):
        merge_databases([a, tmp_path / "host-b.db"], tmp_path / "all.db", source_hosts=["x"])
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite" * 200)
    with pytest.raises(StoreError, match="junk.db"):
        merge_databases([junk], tmp_path / "all.db")
    assert not (tmp_path / "all.db").exists() or ResultsStore(tmp_path / "all.db").list_runs() == []


def test_cli_merge(tmp_path, two_hosts):
    a, b, run_a, run_b = two_hosts
    into = tmp_path / "all.db"
    args = ["results", "merge", str(a), str(b), "--into", str(into), "--source-host", "lab-a", "--source-host", "lab-b"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"{into}: 2 run(s), 96 rows added" in result.output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and f"{into}: 0 run(s), 0 rows added" in again.output
    listed = CliRunner().invoke(cli, ["results", "list", "--db", str(into)])
    assert run_a in listed.output and run_b in listed.output


def test_cli_conflict_is_one_line_and_exit_1(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    run_id = _write_run(a, "virtual-a", latency_ms=5.0, run_id="20260101-000000-000002")
    _write_run(b, "virtual-a", latency_ms=5.0, run_id=run_id, experiments=1)
    proc = subprocess.run([sys.executable, "-m", "emobench", "results", "merge", str(a), str(b), "--into",
                           str(tmp_path / "c.db")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and run_id in proc.stderr and "Hint: a run id must mean one run" in proc.stderr
