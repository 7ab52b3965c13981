"""The full 30-experiment ablation of a tiny real export on host-cpu and the virtual device.

One run covers both targets and lands in SQLite; the virtual device's per-image predictions (and
logits) equal host ExecuTorch's for the same artifact, image by image. A real subprocess running
``emobench ablation`` is SIGKILLed mid-run and resumed; its rows equal an uninterrupted run's.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from android_bench.ablation import ResumeError, RunOptions, resume_ablation, run_ablation
from android_bench.device import connect
from android_bench.plan import PlanConfig, build_plan
from android_bench.virtual import FaultPlan, VirtualDevice
from device_results.store import ResultsStore
from emobench import cli
from tests.device_results.tiny_export import EXPORT_BATCH, build_tiny_export

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("eager-fp32", "executorch-fp32", "executorch-int8-dynamic", "onnx-int8-dynamic")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, tiny_sample) -> Path:
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny_export", tiny_sample)


def _config(manifest: Path, sample: dict, targets: tuple[str, ...]) -> PlanConfig:
    return PlanConfig(manifest=manifest, seen=sample["rafdb"], unseen=sample["custom"], targets=targets,
                      experiments=30, batch_size=EXPORT_BATCH, warmup=1, repeats=1, threads=1, seed=7,
                      models=MODELS)


def _rows(db: Path, run_id: str, table: str, columns: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT {columns} FROM {table} WHERE run_id = ? ORDER BY {columns}", (run_id,)).fetchall()
    finally:
        conn.close()


def test_full_ablation_host_and_virtual_device(tmp_path, manifest, tiny_sample, virtual_device, adb_key):
    target = f"android:{virtual_device.address}"
    plan = build_plan(_config(manifest, tiny_sample, ("host-cpu", target)))
    assert len(plan.experiments) == 30
    assert [e.role for e in plan.experiments[:4]] == ["seen", "unseen", "seen", "unseen"]
    options = RunOptions(connect=functools.partial(connect, adb_key=adb_key))
    with ResultsStore(tmp_path / "results.db") as store:
        result = run_ablation(plan, store, options)
        assert result.status == "complete", result.message
        counts = store.counts(result.run_id)
        # host-cpu runs 4 models, the device 2 (.pte only): 30 x 6 cells, one timed repeat each.
        assert counts["target_experiments"] == 60
        assert counts["cells"] == 30 * 6 and counts["latencies"] == 30 * 6
        assert counts["predictions"] == 30 * 6 * EXPORT_BATCH
        assert counts["telemetry"] == 60 * 2
        unsupported = store.rows(result.run_id, "target_models", target_id=target, supported=0)
        assert sorted(u["model_key"] for u in unsupported) == ["eager-fp32", "onnx-int8-dynamic"]
        targets = {t["target_id"]: t for t in store.rows(result.run_id, "targets")}
        assert targets[target]["is_virtual"] == 1 and targets["host-cpu"]["is_virtual"] == 0
        assert "Iteration i of N" in targets[target]["how_obtained"]
        for key in ("executorch-fp32", "executorch-int8-dynamic"):
            host = store.rows(result.run_id, "predictions", target_id="host-cpu", model_key=key)
            dev = store.rows(result.run_id, "predictions", target_id=target, model_key=key)
            assert len(host) == len(dev) == 30 * EXPORT_BATCH
            for h, d in zip(host, dev, strict=True):
                assert (h["experiment_index"], h["position"], h["image_id"], h["label"]) == \
                       (d["experiment_index"], d["position"], d["image_id"], d["label"])
                assert h["prediction"] == d["prediction"]
                assert h["logits_json"] == d["logits_json"]  # same program, same bytes in: same floats out
        # every image of an experiment is distinct and no seen image repeats before the split is used up
        seen_ids = [i for e in plan.experiments if e.role == "seen" for i in e.image_ids]
        assert len(seen_ids) == len(set(seen_ids))
        # latencies on the device are the runner's own
        logs = sorted(Path(result.log_dir, "logs").rglob("exp000_*.log"))
        assert logs and "Iteration 2 of 2" in logs[0].read_text()
        with pytest.raises(ResumeError, match="already finished"):
            resume_ablation(store, result.run_id, options)


_KILL_AFTER_DEVICE_EXPERIMENTS = 4


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path, manifest, tiny_sample, virtual_device, adb_key):
    target = f"android:{virtual_device.address}"
    db = tmp_path / "killed.db"
    args = [sys.executable, str(ROOT / "emobench.py"), "ablation", "--manifest", str(manifest),
            "--seen", str(tiny_sample["rafdb"]), "--unseen", str(tiny_sample["custom"]), "--target", "host-cpu",
            "--target", target, "--experiments", "30", "--batch-size", str(EXPORT_BATCH), "--warmup", "1",
            "--repeats", "1", "--threads", "1", "--seed", "7", "--db", str(db)]
    for m in MODELS:
        args += ["--model", m]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    killed_at = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if not db.exists():
                continue
            try:
                conn = sqlite3.connect(db, timeout=5)
                n = conn.execute("SELECT count(*) FROM target_experiments WHERE target_id = ?", (target,)).fetchone()[0]
                conn.close()
            except sqlite3.OperationalError:
                continue
            if n >= _KILL_AFTER_DEVICE_EXPERIMENTS:
                proc.send_signal(signal.SIGKILL)
                killed_at = n
                break
    finally:
        proc.wait(timeout=30)
    assert killed_at is not None, f"the run ended or stalled before it could be killed: {proc.stderr.read()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    with ResultsStore(db) as store:
        run_id = store.resolve_run_id("latest")
        assert store.get_run(run_id).status == "incomplete"
        assert store.integrity_check() == "ok"
        before = store.counts(run_id)["target_experiments"]
        assert 30 + killed_at <= before < 60
    resumed = subprocess.run([sys.executable, str(ROOT / "emobench.py"), "ablation", "--resume", run_id, "--db",
                              str(db)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"run {run_id}: complete" in resumed.stdout

    plan = build_plan(_config(manifest, tiny_sample, ("host-cpu", target)))
    with ResultsStore(tmp_path / "clean.db") as store:
        clean = run_ablation(plan, store, RunOptions(connect=functools.partial(connect, adb_key=adb_key)))
        clean_plan_sha = store.get_run(clean.run_id).plan_sha256
    with ResultsStore(db) as store:
        assert store.get_run(run_id).plan_sha256 == clean_plan_sha
    pred_cols = "target_id, experiment_index, model_key, position, image_id, label, prediction, correct"
    assert _rows(db, run_id, "predictions", pred_cols) == _rows(tmp_path / "clean.db", clean.run_id, "predictions",
                                                                 pred_cols)
    cell_cols = "target_id, experiment_index, model_key, status, order_index"
    assert _rows(db, run_id, "cells", cell_cols) == _rows(tmp_path / "clean.db", clean.run_id, "cells", cell_cols)
    lat_cols = "target_id, experiment_index, model_key, repeat_index"
    assert _rows(db, run_id, "latencies", lat_cols) == _rows(tmp_path / "clean.db", clean.run_id, "latencies",
                                                              lat_cols)
    exp_cols = "experiment_index, dataset_role, image_ids_json, input_sha256"
    assert _rows(db, run_id, "experiments", exp_cols) == _rows(tmp_path / "clean.db", clean.run_id, "experiments",
                                                                exp_cols)


def test_batch1_export_runs_image_by_image_on_the_device(tmp_path, tiny_sample, virtual_device, adb_key):
    """The most common pairing: `emobench export` writes batch-1 programs (what a phone app runs) and
    the ablation's batches hold several images. On a device each image is then its own runner call,
    the batch latency is their sum, and the predictions still equal host ExecuTorch's."""
    manifest = build_tiny_export(tmp_path / "batch1", tiny_sample, formats=("executorch",), batch_size=1)
    target = f"android:{virtual_device.address}"
    batch = 3
    plan = build_plan(PlanConfig(manifest=manifest, seen=tiny_sample["rafdb"], unseen=tiny_sample["custom"],
                                 targets=("host-cpu", target), experiments=2, batch_size=batch, warmup=1,
                                 repeats=2, threads=1, seed=3, include_eager=False))
    options = RunOptions(connect=functools.partial(connect, adb_key=adb_key), log_root=tmp_path / "logs")
    with ResultsStore(tmp_path / "results.db") as store:
        result = run_ablation(plan, store, options)
        assert result.status == "complete", result.message
        for key in ("executorch-fp32", "executorch-int8-dynamic"):
            host = store.rows(result.run_id, "predictions", target_id="host-cpu", model_key=key)
            dev = store.rows(result.run_id, "predictions", target_id=target, model_key=key)
            assert len(host) == len(dev) == 2 * batch
            assert [(h["image_id"], h["prediction"]) for h in host] == [(d["image_id"], d["prediction"]) for d in dev]
            assert len(store.rows(result.run_id, "latencies", target_id=target, model_key=key)) == 2 * 2
    # one runner call per image: the raw logs show `batch` invocations of each model per experiment
    logs = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "logs").rglob("*") if p.is_file())
    assert logs.count("--model_path") >= 2 * 2 * batch


# --- resume refusals, cooldown ----------------------------------------------------------------------

_FAST = ("executorch-fp32",)


def _small_config(manifest: Path, sample: dict, targets: tuple[str, ...] = ("host-cpu",), **changes) -> PlanConfig:
    return replace(_config(manifest, sample, targets), **{"experiments": 4, "models": _FAST, **changes})


def _stop_after(n: int):
    """A progress callback that interrupts the run (like Ctrl-C) once ``n`` experiments are stored."""
    def progress(event) -> None:
        if event.kind == "experiment" and event.done >= n:
            raise KeyboardInterrupt("test stop")
    return progress


def _interrupted_run(store: ResultsStore, plan, options: RunOptions = RunOptions()) -> str:
    with pytest.raises(KeyboardInterrupt):
        run_ablation(plan, store, options, progress=_stop_after(2))
    run = store.get_run(store.resolve_run_id("latest"))
    assert run.status == "incomplete" and store.counts(run.run_id)["target_experiments"] == 2
    return run.run_id


def test_resume_with_a_changed_plan_is_refused(tmp_path, manifest, tiny_sample):
    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        run_id = _interrupted_run(store, build_plan(_small_config(manifest, tiny_sample)))
        changed = build_plan(_small_config(manifest, tiny_sample, seed=8))
        with pytest.raises(ResumeError, match=r"different plan \(differs in: .*(seed|experiments)"):
            resume_ablation(store, run_id, plan=changed)
    # the same through the CLI, restating the plan with another experiment count
    args = ["ablation", "--manifest", str(manifest), "--seen", str(tiny_sample["rafdb"]), "--unseen",
            str(tiny_sample["custom"]), "--experiments", "6", "--batch-size", str(EXPORT_BATCH), "--warmup", "1",
            "--repeats", "1", "--threads", "1", "--seed", "7", "--model", _FAST[0], "--db", str(db),
            "--resume", run_id]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 1, out.output
    assert f"run {run_id} was started with a different plan" in out.output and "experiments" in out.output
    with ResultsStore(db) as store:  # nothing ran: still 2 of 4, still resumable
        assert store.get_run(run_id).status == "incomplete"
        assert store.counts(run_id)["target_experiments"] == 2


def test_resume_with_plan_options_but_no_manifest_is_refused(tmp_path, manifest, tiny_sample):
    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        run_id = _interrupted_run(store, build_plan(_small_config(manifest, tiny_sample)))
    out = CliRunner().invoke(cli, ["ablation", "--resume", run_id, "--db", str(db), "--target", "host-cuda",
                                   "--experiments", "10"])
    assert out.exit_code == 1, out.output
    assert "--target, --experiments would be ignored" in out.output and "--manifest" in out.output
    with ResultsStore(db) as store:
        assert store.counts(run_id)["target_experiments"] == 2
    # options that say how to run (not what) are fine; the run then completes
    ok = CliRunner().invoke(cli, ["ablation", "--resume", run_id, "--db", str(db), "--label", "again"])
    assert ok.exit_code == 0, ok.output
    assert f"run {run_id}: complete" in ok.output


def test_resume_after_an_artifact_changed_is_refused(tmp_path, manifest, tiny_sample):
    export = shutil.copytree(manifest.parent, tmp_path / "export")
    plan = build_plan(_small_config(export / manifest.name, tiny_sample))
    with ResultsStore(tmp_path / "r.db") as store:
        run_id = _interrupted_run(store, plan)
        artifact = plan.model_path(plan.model(_FAST[0]))
        assert artifact.is_relative_to(export)
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0xFF
        artifact.write_bytes(bytes(data))
        with pytest.raises(ResumeError, match=rf"cannot resume run {run_id}: {_FAST[0]}: .* changed since") as info:
            resume_ablation(store, run_id)
        assert "start a new run" in info.value.hint
        artifact.unlink()
        with pytest.raises(ResumeError, match="is missing"):
            resume_ablation(store, run_id)
        assert store.get_run(run_id).status == "incomplete"


def _device_with_temps(tmp_path: Path, adb_key: Path, temps: tuple[float, ...]) -> VirtualDevice:
    return VirtualDevice(tmp_path / "device-root", authorized_keys=Path(f"{adb_key}.pub"),
                         faults=FaultPlan(temperatures_c=temps))


def test_cooldown_waits_until_the_device_is_below_the_threshold(tmp_path, manifest, tiny_sample, adb_key):
    with _device_with_temps(tmp_path, adb_key, (90.0, 90.0, 90.0, 30.0)) as vd:
        target = f"android:{vd.address}"
        plan = build_plan(_small_config(manifest, tiny_sample, (target,), experiments=2, cooldown_temp_c=50.0,
                                        cooldown_timeout_s=50.0))
        with ResultsStore(tmp_path / "r.db") as store:
            result = run_ablation(plan, store, RunOptions(connect=functools.partial(connect, adb_key=adb_key)))
            assert result.status == "complete", result.message
            waits = {r["experiment_index"]: r["cooldown_s"] for r in store.rows(result.run_id, "target_experiments")}

    assert waits[0] > 0 and waits[1] == 0  # hot at first, cooled down by the first experiment's end


def test_cooldown_that_never_ends_gives_up_after_the_timeout(tmp_path, manifest, tiny_sample, adb_key, caplog):
    with _device_with_temps(tmp_path, adb_key, (90.0,)) as vd:
        target = f"android:{vd.address}"
        plan = build_plan(_small_config(manifest, tiny_sample, (target,), experiments=2, cooldown_temp_c=50.0,
                                        cooldown_timeout_s=1.0))
        with ResultsStore(tmp_path / "r.db") as store, caplog.at_level("WARNING", logger="android_bench.ablation"):
            result = run_ablation(plan, store, RunOptions(connect=functools.partial(connect, adb_key=adb_key)))
            assert result.status == "complete", result.message
            waits = [r["cooldown_s"] for r in store.rows(result.run_id, "target_experiments")]
    assert len(waits) == 2 and all(w >= 1.0 for w in waits)  # gave up after the timeout, each time
    warnings = [r.getMessage() for r in caplog.records if "cooldown" in r.getMessage()]
    assert len(warnings) == 2 and all(f"{target} still at 90.0 C" in w for w in warnings)
