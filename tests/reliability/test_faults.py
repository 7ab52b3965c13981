"""Faults during an ablation on the virtual device: the run survives them and loses no row.

Every test runs a small ablation (a tiny real export, 4 experiments of 2 images, FP32 and INT8
ExecuTorch programs, 1 warm-up + 1 timed run) against a virtual device and injects one fault with the
device's ``FaultPlan`` or by stopping/restarting it on the same port and sandbox (a reboot). The
finished run's rows are compared with an undisturbed run's: the same predictions, cells and
latency rows, none lost, none duplicated. Each outcome is counted in the ``faults`` summary line.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from android_bench.ablation import RunOptions, resume_ablation, run_ablation
from android_bench.device import DeviceStorageError, connect
from android_bench.keys import ensure_adb_key
from android_bench.plan import PlanConfig, build_plan
from android_bench.runners import TargetError
from android_bench.virtual import VirtualDevice
from device_results.store import ResultsStore
from tests.device_results.tiny_export import EXPORT_BATCH, build_tiny_export

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("executorch-fp32", "executorch-int8-dynamic")
EXPERIMENTS = 4
SEED = 11


# ------------------------------------------------------------------------------------ the rig


class Rig:
    """A virtual device that can be stopped and started again on the same port and sandbox (a reboot)."""

    def __init__(self, root: Path, key: Path) -> None:
        self.root, self.pub = root, Path(f"{key}.pub")
        self.vd = VirtualDevice(root, authorized_keys=self.pub).start()
        self.port = self.vd.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.vd.stop()

    def start(self) -> None:
        self.vd = VirtualDevice(self.root, port=self.port, authorized_keys=self.pub).start()

    def reboot_in_background(self, down_s: float, then: Callable[[], None] | None = None) -> threading.Thread:
        def reboot():
            self.stop()
            if then:
                then()
            time.sleep(down_s)
            self.start()

        thread = threading.Thread(target=reboot, daemon=True)
        thread.start()
        return thread


class HookedDevice:
    """A Device whose push/pull/shell first run the matching one-shot hooks (faults injected on cue)."""

    def __init__(self, device, hooks: list) -> None:
        self._device, self._hooks = device, hooks
        self.calls: Counter = Counter()
        self.errors: list[tuple[str, str]] = []

    def __getattr__(self, name):
        return getattr(self._device, name)

    def _call(self, what: str, key: str, fn, *args, **kwargs):
        self.calls[(what, key)] += 1
        undo = []
        for hook in list(self._hooks):
            if hook["on"] == what and hook["when"](key, self.calls[(what, key)]):
                self._hooks.remove(hook)
                result = hook["do"]()
                if callable(result):
                    undo.append(result)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self.errors.append((what, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            for u in undo:
                u()

    def push(self, local, remote, **kw):
        return self._call("push", str(remote), self._device.push, local, remote, **kw)

    def pull(self, remote, local, **kw):
        return self._call("pull", str(remote), self._device.pull, remote, local, **kw)

    def shell(self, args, **kw):
        key = " ".join(args) if not isinstance(args, str) else args
        return self._call("shell", key, self._device.shell, args, **kw)


def hook(on: str, when: Callable[[str, int], bool], do: Callable[[], object]) -> dict:
    return {"on": on, "when": when, "do": do}


def runner_call(experiment: int, model: str = "") -> Callable[[str, int], bool]:
    """Matches the executor_runner invocation of ``experiment`` (and a model, by a part of its file name)."""
    return lambda key, _n: "--model_path" in key and f"exp_{experiment:03d}" in key and model in key


# ------------------------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, tiny_sample) -> Path:
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny_export", tiny_sample)


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> Path:
    return ensure_adb_key(tmp_path_factory.mktemp("fault-keys") / "adbkey", create=True)


def make_plan(manifest: Path, sample: dict, address: str, experiments: int = EXPERIMENTS):
    return build_plan(PlanConfig(manifest=manifest, seen=sample["rafdb"], unseen=sample["custom"],
                                 targets=(f"android:{address}",), experiments=experiments, batch_size=EXPORT_BATCH,
                                 warmup=1, repeats=1, threads=1, seed=SEED, models=MODELS))


def run_rows(db: Path, run_id: str) -> dict[str, list[tuple]]:
    """Every result row of a run, without target ids (each test's device has its own port) and timings."""
    conn = sqlite3.connect(db)
    try:
        q = {
            "predictions": "SELECT experiment_index, model_key, position, image_id, label, prediction, correct "
                           "FROM predictions WHERE run_id = ? ORDER BY 1, 2, 3",
            "cells": "SELECT experiment_index, model_key, status FROM cells WHERE run_id = ? ORDER BY 1, 2",
            "latencies": "SELECT experiment_index, model_key, repeat_index FROM latencies WHERE run_id = ? "
                         "ORDER BY 1, 2, 3",
            "target_experiments": "SELECT experiment_index FROM target_experiments WHERE run_id = ? ORDER BY 1",
        }
        return {name: conn.execute(sql, (run_id,)).fetchall() for name, sql in q.items()}
    finally:
        conn.close()


def compare(got: dict[str, list[tuple]], expected: dict[str, list[tuple]]) -> tuple[int, int]:
    """(rows lost, rows duplicated) over every table."""
    lost = dup = 0
    for table, rows in expected.items():
        have = Counter(got[table])
        want = Counter(rows)
        lost += sum((want - have).values())
        dup += sum((have - want).values())
    return lost, dup


@pytest.fixture(scope="module")
def reference_run(manifest, tiny_sample, key, tmp_path_factory) -> tuple[Path, str, dict[str, list[tuple]]]:
    """An undisturbed run: its database, run id and rows."""
    base = tmp_path_factory.mktemp("reference")
    rig = Rig(base / "device", key)
    try:
        with ResultsStore(base / "r.db") as store:
            result = run_ablation(make_plan(manifest, tiny_sample, rig.address), store,
                                  RunOptions(connect=functools.partial(connect, adb_key=key)))
            assert result.status == "complete", result.message
        rows = run_rows(base / "r.db", result.run_id)
    finally:
        rig.stop()
    assert len(rows["predictions"]) == EXPERIMENTS * len(MODELS) * EXPORT_BATCH
    assert len(rows["cells"]) == EXPERIMENTS * len(MODELS) == len(rows["latencies"])
    return base / "r.db", result.run_id, rows


@pytest.fixture(scope="module")
def reference(reference_run) -> dict[str, list[tuple]]:
    """The rows of an undisturbed run."""
    return reference_run[2]


_ITERATION_LINE = re.compile(r"Iteration (\d+) of (\d+): ([0-9.]+) ms")


def test_report_of_the_virtual_device_says_temperatures_were_not_measured(reference_run, tmp_path):
    """On a host without thermal zones the virtual device serves its profile's constants: the stored
    target says so, and the report calls them not measured and draws no temperature curve."""
    from device_results.report import ReportConfig, load_report_data, write_report

    db, run_id, _ = reference_run
    host_sensors = any(Path("/sys/class/thermal").glob("thermal_zone*/temp"))
    expected = "host sensor" if host_sensors else "profile constant"
    with ResultsStore(db) as store:
        (row,) = store.rows(run_id, "targets")
        data = load_report_data(store, [run_id], ReportConfig(bootstrap_resamples=50))
    assert row["thermal_source"] == expected
    if host_sensors:
        pytest.skip("this host has thermal zones: the virtual device passes real host readings through")
    (target,) = data.targets
    assert "temperature: not measured (profile constant)" in target.telemetry_note
    points = data.thermal[target.label]
    assert points and all(p.temp_before_c is None and p.temp_after_c is None for p in points)
    assert not [w for w in data.warnings if w.kind in ("thermal", "frequency")]
    files = write_report(db, [run_id], tmp_path / "report")
    page = files.html.read_text()
    assert "temperature: not measured (profile constant)" in page
    # the export's parity check travels with the run: every artifact shows it
    assert {a.model_key for a in data.artifacts if a.parity and a.parity.get("images")} == set(MODELS)


def test_stored_latencies_are_the_runner_log_lines_saved_for_the_cell(reference_run):
    """Every latency stored for a device cell is the runner's own timing line in the log saved for that
    cell, after the warm-up iterations, in order; read here with a regex of its own, not the parser."""
    db, run_id, _ = reference_run
    conn = sqlite3.connect(db)
    try:
        cells = conn.execute("SELECT target_id, experiment_index, model_key, warmup, repeats, log_path FROM cells "
                             "WHERE run_id = ? AND status = 'ok' ORDER BY 2, 3", (run_id,)).fetchall()
        assert len(cells) == EXPERIMENTS * len(MODELS)
        for target_id, experiment, model, warmup, repeats, log_path in cells:
            stored = [ms for (ms,) in conn.execute(
                "SELECT latency_ms FROM latencies WHERE run_id = ? AND target_id = ? AND experiment_index = ? "
                "AND model_key = ? ORDER BY repeat_index", (run_id, target_id, experiment, model))]
            text = Path(log_path).read_text()
            assert f"exp_{experiment:03d}" in text and "--num_executions" in text  # the log of this very cell
            logged = [(int(i), int(n), float(ms)) for i, n, ms in _ITERATION_LINE.findall(text)]
            executions = warmup + repeats
            assert [(i, n) for i, n, _ in logged] == [(i, executions) for i in range(1, executions + 1)], log_path
            assert len(stored) == repeats
            assert stored == pytest.approx([ms for _, _, ms in logged[warmup:]], rel=1e-9, abs=1e-9), log_path
    finally:
        conn.close()


def options_for(key: Path, hooks: list, devices: list, **kw) -> RunOptions:
    def hooked_connect(address: str):
        dev = HookedDevice(connect(address, adb_key=key), hooks)
        devices.append(dev)
        return dev

    return RunOptions(connect=hooked_connect, **kw)


def check_survived(tally, db: Path, run_ids: str | list[str], reference: dict, *, expected_status: str = "complete",
                   expected: dict | None = None) -> None:
    """Count one fault: survived when every run has the expected status and exactly the expected rows."""
    run_ids = [run_ids] if isinstance(run_ids, str) else run_ids
    with ResultsStore(db) as store:
        runs = [store.get_run(r) for r in run_ids]
        integrity = store.integrity_check()
    lost = dup = 0
    for run_id in run_ids:
        run_lost, run_dup = compare(run_rows(db, run_id), expected or reference)
        lost, dup = lost + run_lost, dup + run_dup
    survived = integrity == "ok" and all(r.status == expected_status for r in runs) and lost == dup == 0
    tally.fault(survived=survived, rows_lost=lost, rows_duplicated=dup)
    assert integrity == "ok"
    assert all(r.status == expected_status for r in runs), [r.status_message for r in runs]
    assert (lost, dup) == (0, 0), f"{lost} rows lost, {dup} rows duplicated"


# ------------------------------------------------------------------------------------ connection drops


def _drop_after_bytes(rig: Rig, n: int):
    return lambda: rig.vd.set_faults(close_after_bytes=n)


@pytest.mark.parametrize("where", ["push", "runner", "pull"])
def test_connection_drop_then_reconnect_redoes_only_the_experiment_in_flight(tmp_path, tally, manifest, tiny_sample,
                                                                            key, reference, where):
    rig = Rig(tmp_path / "device", key)
    hooks: list = []
    if where == "push":  # a few acknowledgements into the first model's transfer
        hooks.append(hook("push", lambda k, n: k.endswith(".pte") and n == 1, _drop_after_bytes(rig, 100)))
    elif where == "runner":  # the runner is running (held) when the link drops
        def hang_then_drop():
            rig.vd.set_faults(runner_fault="hang")
            threading.Timer(0.5, lambda: (rig.vd.set_faults(runner_fault=None), rig.vd.drop_connections())).start()
        hooks.append(hook("shell", runner_call(2, "int8"), hang_then_drop))
    else:  # between the STAT and the data of an output pull
        hooks.append(hook("pull", lambda k, n: "exp002" in k, _drop_after_bytes(rig, 30)))
    devices: list = []
    events = []
    try:
        with ResultsStore(tmp_path / "r.db") as store:
            result = run_ablation(make_plan(manifest, tiny_sample, rig.address), store,
                                  options_for(key, hooks, devices), progress=events.append)
    finally:
        rig.stop()
    assert not hooks, "the fault was never injected"
    dev = devices[0]
    assert any(what == where.replace("runner", "shell") for what, _ in dev.errors), dev.errors
    retries = [e for e in events if e.kind == "retry"]
    assert len(retries) == 1 and "reconnecting" in retries[0].message
    if where != "push":  # only experiment 2 ran again: its runner calls before the drop, then both models
        runs = Counter(k.split("exp_")[1][:3] for (what, k), n in dev.calls.items() for _ in range(n)
                       if what == "shell" and "--model_path" in k)
        assert runs["002"] in (3, 4) and [runs[e] for e in ("000", "001", "003")] == [2, 2, 2], runs
    check_survived(tally, tmp_path / "r.db", result.run_id, reference)


def test_device_reboots_mid_run_and_lost_files_are_pushed_again(tmp_path, tally, manifest, tiny_sample, key,
                                                                 reference):
    """The device goes away for ~1.5 s (same address, same storage); a model file it had is gone after."""
    rig = Rig(tmp_path / "device", key)
    lost_file: list[Path] = []

    def lose_a_model():
        models = sorted((rig.root / "emobench" / "models").glob("*int8*"))
        models[0].unlink()
        lost_file.append(models[0])

    hooks = [hook("shell", runner_call(1, "fp32"), lambda: rig.reboot_in_background(1.5, then=lose_a_model).join(0.3))]
    devices: list = []
    try:
        with ResultsStore(tmp_path / "r.db") as store:
            result = run_ablation(make_plan(manifest, tiny_sample, rig.address), store, options_for(key, hooks, devices))
    finally:
        rig.stop()
    assert lost_file and lost_file[0].is_file(), "the lost model was not pushed again"
    pushes = Counter(k for (what, k), n in devices[0].calls.items() if what == "push" for _ in range(n))
    assert [n for k, n in pushes.items() if lost_file[0].name in k] == [2]
    assert all(n == 1 for k, n in pushes.items() if lost_file[0].name not in k)  # nothing else re-sent
    check_survived(tally, tmp_path / "r.db", result.run_id, reference)


def test_device_not_coming_back_stops_clearly_and_resume_finishes(tmp_path, tally, manifest, tiny_sample, key,
                                                                  reference):
    rig = Rig(tmp_path / "device", key)
    hooks = [hook("shell", runner_call(2), rig.stop)]
    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        t0 = time.monotonic()
        with pytest.raises(TargetError, match="did not come back") as info:
            run_ablation(make_plan(manifest, tiny_sample, rig.address), store, options_for(key, hooks, []))
        waited_s = time.monotonic() - t0
        assert "--resume" in info.value.hint
        run_id = store.resolve_run_id("latest")
        run = store.get_run(run_id)
        assert run.status == "incomplete" and f"--resume {run_id}" in run.status_message
        assert store.done_experiments(run_id, f"android:{rig.address}") == {0, 1}
        assert waited_s < 60  # bounded backoff, not forever
        rig.start()  # the phone is back
        try:
            result = resume_ablation(store, run_id, RunOptions(connect=functools.partial(connect, adb_key=key)))
        finally:
            rig.stop()
    assert result.status == "complete"
    check_survived(tally, db, run_id, reference)


# ------------------------------------------------------------------------------------ the runner


@pytest.mark.parametrize("fault", ["crash", "hang"])
def test_runner_crash_or_hang_fails_one_cell_and_the_rest_continues(tmp_path, tally, manifest, tiny_sample, key,
                                                                    reference, fault):
    rig = Rig(tmp_path / "device", key)

    def inject():
        rig.vd.set_faults(runner_fault=fault)
        return lambda: rig.vd.set_faults(runner_fault=None)

    hooks = [hook("shell", runner_call(1, "int8"), inject)]
    try:
        with ResultsStore(tmp_path / "r.db") as store:
            result = run_ablation(make_plan(manifest, tiny_sample, rig.address), store,
                                  options_for(key, hooks, [], runner_timeout_s=3.0))
            failed = store.rows(result.run_id, "cells", status="failed")
    finally:
        rig.stop()
    assert result.status == "partial" and result.failed_cells == 1
    (cell,) = failed
    assert (cell["experiment_index"], cell["model_key"]) == (1, "executorch-int8-dynamic")
    if fault == "crash":
        assert "status 139" in cell["message"] and "exit status 139" in cell["runner_output"]
    else:
        assert "did not finish within 3 s" in cell["message"] and "--model_path" in cell["runner_output"]
    # everything else is there, exactly once; the failed cell has no predictions or latencies
    bad = (1, "executorch-int8-dynamic")
    expected = {t: [r for r in rows if t in ("target_experiments", "cells") or tuple(r[:2]) != bad]
                for t, rows in reference.items()}
    expected["cells"] = [(*r[:2], "failed") if tuple(r[:2]) == bad else r for r in reference["cells"]]
    check_survived(tally, tmp_path / "r.db", result.run_id, reference, expected_status="partial", expected=expected)


# ------------------------------------------------------------------------------------ storage


def test_storage_full_is_detected_before_the_transfer(tmp_path, tally, manifest, tiny_sample, key, reference):
    rig = Rig(tmp_path / "device", key)
    rig.vd.set_faults(storage_free_bytes=200_000)
    db = tmp_path / "r.db"
    try:
        with ResultsStore(db) as store:
            with pytest.raises(TargetError, match=r"MB free under /data/local/tmp/emobench; the run needs"):
                run_ablation(make_plan(manifest, tiny_sample, rig.address), store,
                             RunOptions(connect=functools.partial(connect, adb_key=key)))
            run_id = store.resolve_run_id("latest")
            assert store.get_run(run_id).status == "incomplete"
            assert not list((rig.root / "emobench" / "models").glob("*")), "something was pushed anyway"
            # a push that does not fit is refused clearly too (the check above is the usual way to see it)
            big = tmp_path / "big.bin"
            big.write_bytes(os.urandom(300_000))
            with connect(rig.address, adb_key=key) as dev, \
                    pytest.raises(DeviceStorageError, match=r"No space left on device.*bytes free") as info:
                dev.push(big, "/data/local/tmp/big.bin")
            assert str(big) in info.value.message and "300000 bytes" in info.value.message
            rig.vd.set_faults(storage_free_bytes=None)  # room made on the phone: resume
            result = resume_ablation(store, run_id, RunOptions(connect=functools.partial(connect, adb_key=key)))
    finally:
        rig.stop()
    assert result.status == "complete"
    check_survived(tally, db, run_id, reference)


# ------------------------------------------------------------------------------------ real processes


def _ablation_cmd(manifest: Path, sample: dict, address: str, db: Path, *extra: str) -> list[str]:
    args = [sys.executable, str(ROOT / "emobench.py"), "ablation", "--manifest", str(manifest), "--seen",
            str(sample["rafdb"]), "--unseen", str(sample["custom"]), "--target", f"android:{address}",
            "--experiments", str(EXPERIMENTS), "--batch-size", str(EXPORT_BATCH), "--warmup", "1", "--repeats", "1",
            "--threads", "1", "--seed", str(SEED), "--db", str(db), *extra]
    for m in MODELS:
        args += ["--model", m]
    return args


def _target_experiments(db: Path) -> int:
    try:
        conn = sqlite3.connect(db, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM target_experiments").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_experiment_rolls_back_and_resume_works(tmp_path, tally, manifest, tiny_sample, adb_key,
                                                            reference, sig):
    """A real ``emobench ablation`` process gets the signal while a runner call is held on the device."""
    rig = Rig(tmp_path / "device", adb_key)  # the process finds adb_key as $HOME/.android/adbkey
    db = tmp_path / "r.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # Armed before the run starts (setting it once experiment 0 was seen raced a fast run to its end):
    # experiment 0's runner calls succeed, the first call of experiment 1 stays in flight.
    rig.vd.set_faults(runner_fault="hang", runner_fault_after_calls=len(MODELS))
    proc = subprocess.Popen(_ablation_cmd(manifest, tiny_sample, rig.address, db), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _target_experiments(db) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)
        done_before = _target_experiments(db)
        assert proc.poll() is None and 1 <= done_before < EXPERIMENTS, "the run ended before the signal"
        proc.send_signal(sig)
        stderr = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "interrupted" in stderr and "emobench ablation --resume" in stderr, stderr[-3000:]
    with ResultsStore(db) as store:
        assert store.integrity_check() == "ok"
        run_id = store.resolve_run_id("latest")
        run = store.get_run(run_id)
        assert run.status == "incomplete" and "interrupted" in run.status_message and f"--resume {run_id}" in run.status_message
        done = store.done_experiments(run_id, f"android:{rig.address}")
        assert len(done) == done_before  # the experiment in flight left nothing behind
        cells = {r["experiment_index"] for r in store.rows(run_id, "cells")}
        assert cells == done
        rig.vd.set_faults(runner_fault=None)
    resumed = subprocess.run([sys.executable, str(ROOT / "emobench.py"), "ablation", "--resume", run_id, "--db",
                              str(db)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    rig.stop()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_survived(tally, db, run_id, reference)


def test_two_ablations_write_to_one_database_at_once(tmp_path, tally, manifest, tiny_sample, adb_key, reference):
    """Two real processes, each on its own (slowed) device, commit into the same SQLite file concurrently."""
    rigs = [Rig(tmp_path / f"device{i}", adb_key) for i in range(2)]
    for rig in rigs:
        rig.vd.set_faults(reply_delay_s=0.006)  # each run takes a few seconds, so the two overlap
    db = tmp_path / "shared.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen(_ablation_cmd(manifest, tiny_sample, rig.address, db, "--label", f"p{i}"), cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, rig in enumerate(rigs)]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for rig in rigs:
            rig.stop()
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    with ResultsStore(db) as store:
        assert store.integrity_check() == "ok"
        runs = [r for r in store.list_runs() if r.label in ("p0", "p1")]
        windows = []
        for run in runs:
            rows = store.rows(run.run_id, "target_experiments")
            windows.append((min(r["started_at"] for r in rows), max(r["finished_at"] for r in rows)))
    assert len(runs) == 2 and runs[0].run_id != runs[1].run_id
    assert max(w[0] for w in windows) < min(w[1] for w in windows), f"the two runs did not overlap: {windows}"
    check_survived(tally, db, [run.run_id for run in runs], reference)


_OPENER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.device_results.test_store import make_cell, make_result, new_run
from device_results.store import ResultsStore
go = Path(sys.argv[2])
while not go.exists():  # start together (spinning): the race is in creating the database
    pass
with ResultsStore(sys.argv[1], busy_timeout_s=30) as store:
    run_id = new_run(store)
    for i in range(3):
        store.record_experiment(run_id, "host-cpu", make_result(i, [make_cell("executorch-fp32", 0)]))
    store.finish_run(run_id, "complete")
"""


def test_processes_creating_one_new_database_at_once(tmp_path, tally):
    """Four processes released together onto a database file that does not exist yet, four times (SQLite
    refuses a concurrent switch to WAL with an immediate "database is locked"; the store retries it)."""
    script = tmp_path / "opener.py"
    script.write_text(_OPENER.format(root=str(ROOT)))
    failures, lost = [], 0
    for attempt in range(4):
        db, go = tmp_path / f"fresh{attempt}.db", tmp_path / f"go{attempt}"
        procs = [subprocess.Popen([sys.executable, str(script), str(db), str(go)], stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        time.sleep(1.0)
        go.touch()
        for p in procs:
            err = p.communicate(timeout=120)[1]
            if p.returncode != 0:
                failures.append(err.strip().splitlines()[-1])
        with ResultsStore(db) as store:
            runs = store.list_runs()
            lost += sum(3 - store.counts(r.run_id)["target_experiments"] for r in runs) + 3 * (4 - len(runs))
            assert store.integrity_check() == "ok"
    tally.fault(survived=not failures and lost == 0, rows_lost=lost)
    assert not failures, failures
    assert lost == 0
