"""Several targets in one ablation: the schedule, real virtual devices side by side, isolation, resume.

The end-to-end test runs one ablation with two virtual devices pinned to disjoint CPUs and
host-cpu: all three complete, the devices overlap in time, host-cpu runs alone. Then the same plan
again, with one device stopped mid-run: the other's cells complete, the run ends ``partial`` naming
the device, and ``resume`` (device back) redoes exactly its missing experiments, giving the rows of
the undisturbed run.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import pytest

from android_bench.ablation import RunOptions, resume_ablation, run_ablation
from android_bench.device import connect
from android_bench.fleet import Lane, expand_all_android, plan_schedule, run_schedule
from android_bench.keys import ensure_adb_key
from android_bench.plan import PlanConfig, build_plan
from android_bench.virtual import VirtualDevice
from device_results.overlap import Hardware, run_overlaps
from device_results.store import ResultsStore
from emobench_common.errors import EmobenchError
from tests.android_bench.test_real_adb import adb_server  # noqa: F401 - the isolated real adb server fixture
from tests.device_results.tiny_export import EXPORT_BATCH, build_tiny_export

HOST = Hardware("host CPU", None)
MODELS = ("executorch-fp32", "executorch-int8-dynamic")


def _lanes(schedule) -> list[list[list[str]]]:
    return [[list(lane.targets) for lane in phase] for phase in schedule.phases]


def test_schedule_rules():
    hw = {"host-cpu": HOST, "host-cuda": HOST,
          "android:a": Hardware("host CPU", frozenset({0})), "android:b": Hardware("host CPU", frozenset({1})),
          "android:c": Hardware("host CPU", frozenset({1, 2})), "android:u": Hardware("host CPU", None),
          "android:P1": Hardware("phone P1", None), "android:P2": Hardware("phone P2", None)}
    # disjoint virtual devices side by side; host-cpu alone, in plan order
    assert _lanes(plan_schedule(["host-cpu", "android:a", "android:b"], hw)) == [
        [["host-cpu"]], [["android:a"], ["android:b"]]]
    assert _lanes(plan_schedule(["android:a", "host-cpu", "android:b", "host-cuda"], hw)) == [
        [["android:a"], ["android:b"]], [["host-cpu"]], [["host-cuda"]]]
    # overlapping CPU sets share a lane (one after the other); an unpinned device overlaps every other one
    assert _lanes(plan_schedule(["android:a", "android:b", "android:c"], hw)) == [
        [["android:a"], ["android:b", "android:c"]]]
    assert _lanes(plan_schedule(["android:a", "android:u", "android:b"], hw)) == [
        [["android:a", "android:u", "android:b"]]]
    # phones each run on their own, next to virtual devices
    assert _lanes(plan_schedule(["android:P1", "android:P2", "android:a"], hw)) == [
        [["android:P1"], ["android:P2"], ["android:a"]]]


def test_run_schedule_isolates_failures_and_runs_lanes_together():
    started: dict[str, float] = {}
    both_running = threading.Barrier(2, timeout=10)

    def work(target: str, stop: threading.Event) -> str:
        if target in ("a", "b"):
            both_running.wait()  # deadlocks unless a and b run at the same time
        if target == "bad":
            raise EmobenchError("bad dropped off the hub")
        started[target] = 1
        return target.upper()

    from android_bench.fleet import Schedule
    schedule = Schedule(((Lane(("host",)),), (Lane(("a", "bad")), Lane(("b", "after"))),))
    outcome = run_schedule(schedule, work)
    assert outcome.results == {"host": "HOST", "a": "A", "b": "B", "after": "AFTER"}
    assert list(outcome.failures) == ["bad"] and "dropped" in str(outcome.failures["bad"])
    assert outcome.interrupted is None


def test_run_schedule_stops_every_worker_on_interrupt():
    seen = []
    b_started = threading.Event()

    def work(target: str, stop: threading.Event) -> str:
        if target == "a":
            assert b_started.wait(10)
            raise KeyboardInterrupt("Ctrl-C")
        b_started.set()
        assert stop.wait(10)  # the other worker is told to stop
        seen.append(target)
        return target

    from android_bench.fleet import Schedule
    outcome = run_schedule(Schedule(((Lane(("a",)), Lane(("b", "c"))), (Lane(("host",)),))), work)
    assert isinstance(outcome.interrupted, KeyboardInterrupt)
    assert seen == ["b"]  # c and host never started


def test_android_all_expands_to_authorised_devices(caplog):
    devices = [("R58M1", "device"), ("R58M2", "unauthorized"), ("127.0.0.1:5555", "device"), ("X9", "offline")]
    assert expand_all_android(["host-cpu", "android:all"], list_devices=lambda: devices) == (
        "host-cpu", "android:R58M1", "android:adb:127.0.0.1:5555")
    assert "skips R58M2: it is unauthorized (accept the 'Allow USB debugging?'" in caplog.text
    assert "skips X9: it is offline" in caplog.text
    assert expand_all_android(["host-cpu"], list_devices=lambda: 1 / 0) == ("host-cpu",)  # never asked
    with pytest.raises(EmobenchError, match=r"lists no authorised device \(seen: R58M2 \(unauthorized\)\)"):
        expand_all_android(["android:all"], list_devices=lambda: [("R58M2", "unauthorized")])


# --- end to end, on real virtual devices ------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, tiny_sample) -> Path:
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny_export_executorch", tiny_sample,
                             formats=("executorch",))


def _rows(store: ResultsStore, run_id: str) -> dict[str, set]:
    """Everything an undisturbed run must reproduce (not timings)."""
    return {
        "markers": {(r["target_id"], r["experiment_index"]) for r in store.rows(run_id, "target_experiments")},
        "cells": {(r["target_id"], r["experiment_index"], r["model_key"], r["status"], r["order_index"])
                  for r in store.rows(run_id, "cells")},
        "predictions": {(r["target_id"], r["experiment_index"], r["model_key"], r["position"], r["image_id"],
                         r["label"], r["prediction"]) for r in store.rows(run_id, "predictions")},
        "latencies": {(r["target_id"], r["experiment_index"], r["model_key"], r["repeat_index"])
                      for r in store.rows(run_id, "latencies")},
    }


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two virtual devices on disjoint CPUs need two CPUs")
def test_two_pinned_devices_side_by_side_then_one_dropped_and_resumed(tmp_path, manifest, tiny_sample, adb_key):
    cpu_a, cpu_b = sorted(os.sched_getaffinity(0))[:2]
    keys = Path(f"{adb_key}.pub")
    options = RunOptions(connect=functools.partial(connect, adb_key=adb_key))
    vd_a = VirtualDevice(tmp_path / "a", authorized_keys=keys, cpus={cpu_a}).start()
    vd_b = VirtualDevice(tmp_path / "b", authorized_keys=keys, cpus={cpu_b}).start()
    port_b = vd_b.port
    a, b = f"android:{vd_a.address}", f"android:{vd_b.address}"
    try:
        plan = build_plan(PlanConfig(manifest=manifest, seen=tiny_sample["rafdb"], unseen=tiny_sample["custom"],
                                     targets=("host-cpu", a, b), experiments=4, batch_size=EXPORT_BATCH, warmup=0,
                                     repeats=1, threads=1, seed=3, models=MODELS, include_eager=False))
        with ResultsStore(tmp_path / "r.db") as store:
            # 1. undisturbed: all three complete; the devices overlap, host-cpu runs alone
            ref = run_ablation(plan, store, options)
            assert ref.status == "complete", ref.message
            assert ref.schedule == f"host-cpu (alone) then {a} | {b}"
            for target in ("host-cpu", a, b):
                assert store.done_experiments(ref.run_id, target) == {0, 1, 2, 3}
            overlaps = {(o.target_a, o.target_b): o for o in run_overlaps(store, ref.run_id)}
            assert set(overlaps) == {tuple(sorted((a, b)))}, overlaps  # host-cpu overlapped with nobody
            assert overlaps[tuple(sorted((a, b)))].shared_hardware is None  # disjoint CPUs share nothing
            info = {t["target_id"]: t["info_json"] for t in store.rows(ref.run_id, "targets")}
            assert f'"cpu_set":"{cpu_a}"' in info[a] and f'"cpu_set":"{cpu_b}"' in info[b]
            reference = _rows(store, ref.run_id)
            assert len(reference["cells"]) == 3 * 4 * len(MODELS)

            # 2. the same plan; device b is stopped after its second experiment
            def progress(event) -> None:
                if event.kind == "experiment" and event.target == b and event.done == 2:
                    vd_b.stop()

            hit = run_ablation(plan, store, options, progress=progress)
            assert hit.status == "partial" and list(hit.stopped_targets) == [b]
            assert f"{b} stopped after 2 of 4 experiments" in hit.message and "did not come back" in hit.message
            assert f"--resume {hit.run_id}" in hit.message
            assert store.get_run(hit.run_id).status == "partial"
            assert store.done_experiments(hit.run_id, a) == {0, 1, 2, 3}  # the other device went on
            assert store.done_experiments(hit.run_id, "host-cpu") == {0, 1, 2, 3}
            assert store.done_experiments(hit.run_id, b) == {0, 1}

            # 3. the device is back: resume redoes exactly its two missing experiments
            vd_b = VirtualDevice(tmp_path / "b", authorized_keys=keys, cpus={cpu_b}, port=port_b).start()
            done = resume_ablation(store, hit.run_id, options)
            assert done.status == "complete", done.message
            assert {t: r.experiments_run for t, r in done.timings.items()} == {a: 0, b: 2, "host-cpu": 0}
            assert _rows(store, hit.run_id) == reference
    finally:
        vd_a.stop()
        vd_b.stop()


@pytest.mark.system
def test_android_all_asks_the_real_adb_server(adb_server, tmp_path, caplog):  # noqa: F811
    """Two virtual devices `adb connect`ed to a real adb server: the one that trusts the server's key is
    listed, the one that does not is named with its state and skipped."""
    run, server_key = adb_server
    other = ensure_adb_key(tmp_path / "other" / "adbkey", create=True)
    with VirtualDevice(tmp_path / "trusting", authorized_keys=Path(f"{server_key}.pub")) as trusting, \
            VirtualDevice(tmp_path / "stranger", authorized_keys=Path(f"{other}.pub")) as stranger:
        run("connect", trusting.address)
        run("connect", stranger.address, check=False)
        listed = dict(line.split("\t") for line in run("devices").stdout.splitlines()[1:] if "\t" in line)
        # a refused key shows as 'unauthorized' while a phone's prompt is up, 'offline' once it is refused
        assert listed[trusting.serial] == "device" and listed[stranger.serial] in ("unauthorized", "offline")
        assert expand_all_android(["host-cpu", "android:all"]) == ("host-cpu", f"android:adb:{trusting.serial}")
        assert f"skips {stranger.serial}: it is {listed[stranger.serial]}" in caplog.text
        with connect(f"adb:{trusting.serial}") as dev:  # the expanded target is reachable through the server
            assert dev.info().is_virtual


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two virtual devices on disjoint CPUs need two CPUs")
def test_cli_two_served_devices_on_disjoint_cpus_and_host_cpu(tmp_path, manifest, tiny_sample, adb_key):
    """As a user would: two `emobench device serve --cpus N` processes, one `emobench ablation` over both and
    host-cpu; the devices overlap in time, host-cpu runs alone, every target's rows are complete."""
    import subprocess
    import sys

    cpus = sorted(os.sched_getaffinity(0))[:2]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    servers = [subprocess.Popen([sys.executable, "-m", "emobench", "device", "serve", "--cpus", str(cpu), "--root",
                                 str(tmp_path / f"dev{cpu}"), "--authorized-keys", f"{adb_key}.pub"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
               for cpu in cpus]
    try:
        targets = [f"android:{s.stdout.readline().strip()}" for s in servers]
        db = tmp_path / "r.db"
        args = [sys.executable, "-m", "emobench", "ablation", "--manifest", str(manifest), "--seen",
                str(tiny_sample["rafdb"]), "--unseen", str(tiny_sample["custom"]), "--target", "host-cpu",
                "--target", targets[0], "--target", targets[1], "--experiments", "3", "--batch-size",
                str(EXPORT_BATCH), "--warmup", "0", "--repeats", "1", "--threads", "1", "--no-eager", "--db", str(db),
                "--adb-key", str(adb_key)]
        for m in MODELS:
            args += ["--model", m]
        done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"schedule: host-cpu (alone) then {targets[0]} | {targets[1]}" in done.stderr
        with ResultsStore(db) as store:
            run_id = store.resolve_run_id("latest")
            assert store.get_run(run_id).status == "complete"
            for target in ("host-cpu", *targets):
                assert store.done_experiments(run_id, target) == {0, 1, 2}
                assert len(store.rows(run_id, "cells", target_id=target, status="ok")) == 3 * len(MODELS)
            pairs = {(o.target_a, o.target_b): o.shared_hardware for o in run_overlaps(store, run_id)}
        assert pairs == {tuple(sorted(targets)): None}  # the devices overlapped, sharing no CPU; host-cpu alone
    finally:
        for s in servers:
            s.terminate()
            s.wait(timeout=30)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two virtual devices on disjoint CPUs need two CPUs")
def test_latency_runs_pinned_devices_side_by_side(tmp_path, manifest, adb_key, caplog):
    import logging

    from android_bench.latency import measure_latency

    cpu_a, cpu_b = sorted(os.sched_getaffinity(0))[:2]
    keys = Path(f"{adb_key}.pub")
    with VirtualDevice(tmp_path / "a", authorized_keys=keys, cpus={cpu_a}) as vd_a, \
            VirtualDevice(tmp_path / "b", authorized_keys=keys, cpus={cpu_b}) as vd_b:
        a, b = f"android:{vd_a.address}", f"android:{vd_b.address}"
        with caplog.at_level(logging.INFO, logger="android_bench.latency"):
            rows = measure_latency(manifest, ("host-cpu", a, b), runs=3, warmup=1, threads=1, include_eager=False,
                                   connect=functools.partial(connect, adb_key=adb_key))
    assert f"latency: host-cpu (alone) then {a} | {b}" in caplog.text
    assert [(r.target, r.model_key) for r in rows] == [(t, m) for t in ("host-cpu", a, b) for m in MODELS]
    assert all(r.median_ms and r.median_ms > 0 and not r.note for r in rows)
    assert [r.is_virtual for r in rows] == [False] * 2 + [True] * 4
