"""Per-operator profiles: ETDump on host-cpu and on the virtual device's native runner, stored in SQLite."""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import pytest

from android_bench.device import connect
from android_bench.profiling import ProfileError, analyse_etdump, operator_kind, profile_manifest
from device_results.store import ResultsStore
from device_results.store.profiles import read_profiles
from tests.device_results.tiny_export import build_tiny_export


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, tiny_sample) -> Path:
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny_export", tiny_sample)


def _has_etrecord(manifest: Path, key_precision: str) -> bool:
    data = json.loads(manifest.read_text())
    for a in data["artifacts"]:
        if a["format"] == "executorch" and a["precision"] == key_precision:
            rec = (a.get("details") or {}).get("etrecord")
            return bool(rec) and (manifest.parent / rec["path"]).is_file()
    return False


@pytest.mark.parametrize("name,kind", [
    ("Convolution (NHWC, F32) IGEMM", "convolution"), ("Convolution (NHWC, QD8, F32, QC8W) IGEMM", "convolution"),
    ("Convolution (NHWC, F32) DWConv", "depthwise convolution"), ("Sigmoid (NC)", "activation"),
    ("Multiply (ND)", "SE multiply"), ("Fully Connected (NC, F32) GEMM", "fully connected / 1x1 conv"),
    ("Convert (NC, F32, QD8)", "quantize/convert"), ("Mean (ND) Reduce2", "pooling/mean"),
    ("Transpose (ND, X32)", "layout (transpose/copy/reshape)"), ("native_call_add.out", "add"),
])
def test_operator_kinds(name, kind):
    assert operator_kind(name) == kind


def test_profile_host_cpu_and_the_virtual_devices_native_runner(tmp_path, manifest, virtual_device, adb_key,
                                                                native_runner):
    target = f"android:{virtual_device.address}"
    with ResultsStore(tmp_path / "r.db") as store:
        run_id, records = profile_manifest(manifest, ["host-cpu", target], store, out_root=tmp_path / "profiles",
                                           runs=4, warmup=1, connect=functools.partial(connect, adb_key=adb_key))
        assert store.get_run(run_id).status == "complete"
        stored = read_profiles(store, run_id)
        targets = {t["target_id"]: t for t in store.rows(run_id, "targets")}
    assert sorted(stored, key=lambda r: (r.target_id, r.model_key)) == sorted(records, key=lambda r: (r.target_id, r.model_key))
    keys = {(r.target_id, r.model_key) for r in stored}
    assert keys == {(t, m) for t in ("host-cpu", target) for m in ("executorch-fp32", "executorch-int8-dynamic")}
    for r in stored:
        assert r.status == "ok", r.message
        assert r.runs == 4 and r.execute_median_ms > 0
        assert 0.2 < r.coverage <= 1.05, (r.target_id, r.model_key, r.coverage)
        kinds = {o.kind for o in r.operators}
        assert "convolution" in kinds and "depthwise convolution" in kinds and "fully connected / 1x1 conv" in kinds
        assert all(o.delegated and o.backend == "XnnpackBackend" for o in r.operators if "NHWC" in o.operator)
        for o in r.operators:
            assert 0 <= o.share <= 1 and o.share == pytest.approx(o.median_ms / r.execute_median_ms)
            assert o.p90_ms >= o.median_ms and o.calls >= 1
        assert r.etrecord_used == _has_etrecord(manifest, r.model_key.split("-")[1])
        assert Path(r.etdump_path).is_file()
    int8 = next(r for r in stored if r.target_id == target and r.model_key == "executorch-int8-dynamic")
    assert "quantize/convert" in {o.kind for o in int8.operators}  # dynamic INT8 converts activations per call
    device_rows = [r for r in stored if r.target_id == target]
    assert all("native executor_runner" in r.runner and r.runner_sha256 == native_runner.sha256 for r in device_rows)
    versions = json.loads(targets[target]["library_versions_json"])
    assert versions["runner"] == "native" and versions["runner_sha256"] == native_runner.sha256

    # The report's "Where the time goes": summary, FP32 vs INT8 per kind, top operators and one chart.
    from device_results.report import write_report
    from tests.device_results.test_report_html import ARTIFACT_DIR, check_page_in_chromium

    files = write_report(tmp_path / "r.db", [run_id], tmp_path / "report")
    page = files.html.read_text()
    assert '<h2 id="where-the-time-goes">Where the time goes</h2>' in page
    for key in ("profile_summary", "profile_kinds", "profile_top_operators"):
        assert f'id="t-{key}"' in page and (files.out_dir / f"{key}.csv").is_file()
    assert "where_the_time_goes.png" in {p.name for p in files.png}
    assert "emobench&#x27;s native executor_runner" in page and native_runner.sha256[:12] in page
    kinds_csv = (files.out_dir / "profile_kinds.csv").read_text()
    assert "convolution" in kinds_csv and "executorch-int8-dynamic" in kinds_csv
    seen = check_page_in_chromium(files.html, ARTIFACT_DIR / "report-profile.png")
    assert "Where the time goes" in seen["headings"]
    assert any("Where the time goes" in i["alt"] for i in seen["images"])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two virtual devices on disjoint CPUs need two CPUs")
def test_profile_two_pinned_devices_side_by_side(tmp_path, manifest, adb_key, native_runner, caplog):
    """Virtual devices on disjoint CPUs are profiled by one worker each, each writing its own profiles."""
    from android_bench.virtual import VirtualDevice

    cpu_a, cpu_b = sorted(os.sched_getaffinity(0))[:2]
    keys = Path(f"{adb_key}.pub")
    with VirtualDevice(tmp_path / "a", authorized_keys=keys, cpus={cpu_a}) as vd_a, \
            VirtualDevice(tmp_path / "b", authorized_keys=keys, cpus={cpu_b}) as vd_b, ResultsStore(tmp_path / "r.db") as store:
        a, b = f"android:{vd_a.address}", f"android:{vd_b.address}"
        with caplog.at_level(logging.INFO, logger="android_bench.profiling"):
            run_id, records = profile_manifest(manifest, ["host-cpu", a, b], store, out_root=tmp_path / "profiles",
                                               runs=2, warmup=0, threads=1,
                                               connect=functools.partial(connect, adb_key=adb_key))
        stored = read_profiles(store, run_id)
    schedule = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("profile: "))
    assert "host-cpu (alone)" in schedule and (f"{a} | {b}" in schedule or f"{b} | {a}" in schedule), schedule
    assert {(r.target_id, r.model_key) for r in stored} == {
        (t, m) for t in ("host-cpu", a, b) for m in ("executorch-fp32", "executorch-int8-dynamic")}
    assert all(r.status == "ok" and r.runs == 2 for r in stored), [(r.target_id, r.message) for r in stored]
    assert sorted((r.target_id, r.model_key) for r in records) == sorted((r.target_id, r.model_key) for r in stored)


def test_a_runner_without_the_event_tracer_gives_latency_and_the_cmake_flags(tmp_path, manifest, virtual_device,
                                                                             adb_key, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no cmake, no compiler: the virtual device's Python stand-in runs
    target = f"android:{virtual_device.address}"
    with ResultsStore(tmp_path / "r.db") as store:
        run_id, records = profile_manifest(manifest, [target], store, out_root=tmp_path / "profiles", runs=3,
                                           warmup=1, connect=functools.partial(connect, adb_key=adb_key))
    assert records and all(r.status == "no-etdump" for r in records)
    for r in records:
        assert "stand-in" in r.runner
        assert "-DEXECUTORCH_BUILD_DEVTOOLS=ON -DEXECUTORCH_ENABLE_EVENT_TRACER=ON" in r.message
        assert r.runs == 3 and r.execute_median_ms > 0 and r.operators == ()


def test_a_file_that_is_not_an_etdump_is_one_clear_error(tmp_path):
    bad = tmp_path / "x.etdump"
    bad.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(ProfileError, match="is not a readable ETDump"):
        analyse_etdump(bad)


def test_profile_cli_prints_operators_and_stores_them(tmp_path, manifest):
    from click.testing import CliRunner

    from emobench import cli

    db = tmp_path / "r.db"
    result = CliRunner().invoke(cli, ["profile", str(manifest), "--target", "host-cpu", "--runs", "3", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "Method::execute median" in result.output and "Convolution (NHWC" in result.output
    with ResultsStore(db) as store:
        run = store.list_runs()[0]
        assert run.label == "profile" and len(read_profiles(store, run.run_id)) == 2


def test_an_older_database_gets_the_profile_tables_by_migration(tmp_path):
    import sqlite3

    from device_results.store import SCHEMA_VERSION
    from device_results.store.profiles import OperatorRow, ProfileRecord, record_profile
    from device_results.store.schema import MIGRATIONS

    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:2]:  # a database written before profiles existed
        for statement in migration.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with ResultsStore(path) as store:
        assert SCHEMA_VERSION == 3
        assert store.table_columns("operator_profiles")[3:6] == ["operator", "delegated", "kind"]
        run_id = store.create_run(plan={"kind": "profile"}, artifacts=[], experiments=[])
        op = OperatorRow("Convolution (NHWC, F32) IGEMM", "convolution", "XnnpackBackend", True, 12, 1.5, 1.7, 0.4)
        record_profile(store, run_id, ProfileRecord("host-cpu", "executorch-fp32", "ok", 5, "in-process",
                                                    3.75, 3.4, 0.9, operators=(op,)))
        assert read_profiles(store, run_id)[0].operators == (op,)
        assert store.counts(run_id)["operator_profiles"] == 1
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3


def test_ablation_profile_puts_profiles_into_the_ablation_run(tmp_path, manifest, tiny_sample, virtual_device,
                                                              adb_key):
    from click.testing import CliRunner

    from emobench import cli

    db = tmp_path / "r.db"
    target = f"android:{virtual_device.address}"
    result = CliRunner().invoke(cli, [
        "ablation", "--manifest", str(manifest), "--seen", str(tiny_sample["rafdb"]), "--unseen",
        str(tiny_sample["custom"]), "--target", "host-cpu", "--target", target, "--experiments", "2",
        "--batch-size", "2", "--repeats", "1", "--warmup", "0", "--model", "executorch-fp32", "--no-eager",
        "--db", str(db), "--profile", "--profile-runs", "3", "--adb-key", str(adb_key)])
    assert result.exit_code == 0, result.output
    with ResultsStore(db) as store:
        run = store.list_runs()[0]
        assert store.counts(run.run_id)["cells"] == 4
        profiles = read_profiles(store, run.run_id)
    # the ablation's ExecuTorch programs (only --model executorch-fp32 here), on both targets, in its own run
    assert {(p.target_id, p.model_key) for p in profiles} == {("host-cpu", "executorch-fp32"),
                                                              (target, "executorch-fp32")}
    assert all(p.status == "ok" and p.runs == 3 for p in profiles)
    assert "Method::execute median" in result.output
