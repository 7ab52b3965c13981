"""Where temperatures and CPU frequencies came from: stored per target, migrated, and honoured by the report."""

from __future__ import annotations

import sqlite3

import pytest

from android_bench.device_info import telemetry_sources
from device_results.report import ReportConfig, load_report_data
from device_results.report.tables import build_tables
from device_results.store import (
    ArtifactRecord,
    CellResult,
    ExperimentResult,
    ExperimentRow,
    PredictionRow,
    ResultsStore,
    TargetRecord,
    Telemetry,
    schema,
    utc_now,
)

N_EXP = 4


def _run(store: ResultsStore, targets: list[tuple[str, bool, str]]) -> str:
    """One run; every target's temperature climbs 30 -> 45 C and its CPUs drop 2.4 -> 1.2 GHz."""
    arts = [ArtifactRecord("executorch-fp32", "executorch", "fp32", "none", "m.pte", 100, "a" * 64)]
    exps = [ExperimentRow(i, "seen", "rafdb", (f"img{i}",), (0,), ("executorch-fp32",)) for i in range(N_EXP)]
    run_id = store.create_run(plan={"class_names": ["anger", "happy"], "batch_size": 1}, artifacts=arts,
                              experiments=exps)
    for target, virtual, source in targets:
        store.add_target(run_id, TargetRecord(target, "android", virtual, {"model": "x"}, {}, 1, None, "runner",
                                              thermal_source=source, freq_source=source),
                         model_support={"executorch-fp32": None})
        for i in range(N_EXP):
            now = utc_now()
            cell = CellResult("executorch-fp32", "ok", 0, 1, 1, 2, 1, None, "runner", now, now, (5.0, 5.1),
                              (PredictionRow(0, f"img{i}", 0, 0, 0.9),))
            temp, khz = 30.0 + 5 * i, 2_400_000 - 400_000 * i
            store.record_experiment(run_id, target, ExperimentResult(
                i, now, now, (cell,), Telemetry({"cpu": temp}, {"0": khz}, now),
                Telemetry({"cpu": temp + 1}, {"0": khz}, now)))
    store.finish_run(run_id, "complete")
    return run_id


def test_profile_constants_are_not_shown_as_measured(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        run_id = _run(store, [("android:PHONE", False, "sensor"), ("android:127.0.0.1:5555", True, "profile constant")])
        assert {r["target_id"]: (r["thermal_source"], r["freq_source"]) for r in store.rows(run_id, "targets")} == {
            "android:PHONE": ("sensor", "sensor"), "android:127.0.0.1:5555": ("profile constant", "profile constant")}
        data = load_report_data(store, [run_id], ReportConfig(bootstrap_resamples=50))
    warned = {(w.kind, w.target) for w in data.warnings if w.kind in ("thermal", "frequency")}
    assert warned == {("thermal", "android:PHONE"), ("frequency", "android:PHONE")}
    virtual = data.target("android:127.0.0.1:5555")
    assert virtual.telemetry_note == ("temperature: not measured (profile constant); "
                                      "CPU frequency: not measured (profile constant)")
    assert all(p.temp_before_c is None and p.temp_after_c is None and p.freq_before_mhz is None
               for p in data.thermal["android:127.0.0.1:5555"])  # no curve can be drawn from them
    assert [p.temp_after_c for p in data.thermal["android:PHONE"]] == [31.0, 36.0, 41.0, 46.0]
    targets = next(t for t in build_tables(data) if t.key == "targets")
    column = targets.columns.index("temperature and frequency")
    assert {row[0].split(" ")[0]: row[column] for row in targets.rows}["android:PHONE"] == (
        "temperature: sensor; CPU frequency: sensor")


def test_migration_records_what_older_databases_can_say(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in schema.SCHEMA_V1.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO runs (run_id, created_at, status, plan_json, plan_sha256, artifacts_sha256) "
                 "VALUES ('r1', 'now', 'complete', '{}', 'x', 'y')")
    for target, kind, virtual in (("host-cpu", "host-cpu", 0), ("android:PHONE", "android", 0),
                                  ("android:127.0.0.1:5555", "android", 1)):
        conn.execute("INSERT INTO targets VALUES ('r1', ?, ?, ?, '{}', '{}', 1, NULL, 'x', 'now')",
                     (target, kind, virtual))
    conn.commit()
    conn.close()
    with ResultsStore(path) as store:
        got = {r["target_id"]: (r["thermal_source"], r["freq_source"]) for r in store.rows("r1", "targets")}
    assert got == {"host-cpu": ("host sensor", "host sensor"), "android:PHONE": ("sensor", "sensor"),
                   "android:127.0.0.1:5555": ("not recorded", "not recorded")}
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    conn.close()


@pytest.mark.parametrize("props, virtual, have, expected", [
    ({}, False, True, "sensor"),
    ({}, False, False, "unavailable"),
    ({"ro.emobench.thermal_source": "profile", "ro.emobench.cpu_freq_source": "profile"}, True, True,
     "profile constant"),
    ({"ro.emobench.thermal_source": "host", "ro.emobench.cpu_freq_source": "host"}, True, True, "host sensor"),
    ({"ro.kernel.qemu": "1"}, True, True, "profile constant"),  # an emulator makes its readings up too
])
def test_telemetry_sources(props, virtual, have, expected):
    assert telemetry_sources(props, is_virtual=virtual, have_temps=have, have_freqs=have) == (expected, expected)


def test_a_target_record_refuses_an_unknown_source():
    with pytest.raises(ValueError, match="thermal_source 'guess'"):
        TargetRecord("t", "android", False, {}, {}, 1, None, "x", thermal_source="guess")
