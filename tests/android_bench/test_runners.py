"""Targets and their refusals: runner ABI, missing runner, logging off, logcat, a failing model, CUDA."""

from __future__ import annotations

import functools
import struct
from pathlib import Path

import pytest

from android_bench.ablation import RunOptions, run_ablation
from android_bench.device import connect
from android_bench.plan import PlanConfig, TargetSpec, build_plan
from android_bench.runner_log import NoTimingLinesError
from android_bench.runners import HostSession, TargetError
from android_bench.virtual import VirtualDevice
from device_results.store import ResultsStore
from tests.device_results.tiny_export import EXPORT_BATCH, build_tiny_export

PTE = ("executorch-fp32", "executorch-int8-dynamic")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, tiny_sample) -> Path:
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny_export", tiny_sample)


def _plan(manifest, sample, target: str, *, experiments: int = 2, models=PTE):
    return build_plan(PlanConfig(manifest=manifest, seen=sample["rafdb"], unseen=sample["custom"], targets=(target,),
                                 experiments=experiments, batch_size=EXPORT_BATCH, warmup=1, repeats=2, seed=1,
                                 models=models))


def _options(adb_key, **kw) -> RunOptions:
    return RunOptions(connect=functools.partial(connect, adb_key=adb_key), **kw)


def _fake_elf(path: Path, machine: int) -> Path:
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4], header[5] = 2, 1  # 64-bit, little-endian
    header[18:20] = struct.pack("<H", machine)
    path.write_bytes(bytes(header))
    return path


def test_runner_for_the_wrong_abi_is_refused(tmp_path, manifest, tiny_sample, virtual_device, adb_key):
    abi = connect(virtual_device.address, adb_key=adb_key).info().abi
    wrong = 183 if abi != "arm64-v8a" else 62  # arm64 for an x86_64 host, x86_64 otherwise
    runner = _fake_elf(tmp_path / "executor_runner", wrong)
    plan = _plan(manifest, tiny_sample, f"android:{virtual_device.address}")
    with ResultsStore(tmp_path / "r.db") as store:
        with pytest.raises(TargetError, match=f"runs {abi}") as info:
            run_ablation(plan, store, _options(adb_key, runner=runner))
        assert "executor_runner" in info.value.hint and "ANDROID_ABI" in info.value.hint
        run = store.list_runs()[0]
        assert run.status == "incomplete" and "resume" in run.status_message


def test_runner_on_a_device_that_reports_no_abi_is_refused(tmp_path, manifest, tiny_sample, adb_key):
    """An ELF check that cannot be made is an error, not a silent pass (a wrong-ABI runner would fail later)."""
    import json
    import sys

    profile = tmp_path / "no-abi.json"
    profile.write_text(json.dumps({"name": "no-abi", "extends": "pixel-like-virtual",
                                   "properties": {"ro.product.cpu.abilist": "", "ro.product.cpu.abi": ""}}))
    runner = Path(sys.executable).resolve()  # a real ELF for this host's ABI
    with VirtualDevice(tmp_path / "device-root", profile=profile, authorized_keys=Path(f"{adb_key}.pub")) as vd:
        assert connect(vd.address, adb_key=adb_key).info().abis == ()
        target = f"android:{vd.address}"
        plan = _plan(manifest, tiny_sample, target)
        with ResultsStore(tmp_path / "r.db") as store:
            with pytest.raises(TargetError, match=rf"{target} reports no CPU ABI \(ro.product.cpu.abilist") as info:
                run_ablation(plan, store, _options(adb_key, runner=runner))
            assert "getprop ro.product.cpu.abilist" in info.value.hint
            assert store.list_runs()[0].status == "incomplete"


def test_no_runner_on_the_device_and_none_given(tmp_path, manifest, tiny_sample, adb_key):
    # A virtual device standing for a phone whose runner logs to logcat keeps its own runner (the native
    # one logs to stderr), so removing that runner leaves the device without one, as on a phone.
    with VirtualDevice(tmp_path / "root", authorized_keys=Path(str(adb_key) + ".pub"), runner_logging="logcat") as vd:
        dev = connect(vd.address, adb_key=adb_key)
        dev.shell(["rm", "-f", "/data/local/tmp/executor_runner"])
        plan = _plan(manifest, tiny_sample, f"android:{vd.address}")
        with ResultsStore(tmp_path / "r.db") as store, pytest.raises(TargetError, match="no executor_runner") as info:
            run_ablation(plan, store, _options(adb_key))
    assert "android.toolchain.cmake" in info.value.hint


def test_unreachable_target_fails_before_anything_runs(tmp_path, manifest, tiny_sample, adb_key):
    plan = build_plan(PlanConfig(manifest=manifest, seen=tiny_sample["rafdb"], unseen=None,
                                 targets=("host-cpu", "android:127.0.0.1:1"), experiments=2, batch_size=EXPORT_BATCH,
                                 warmup=0, repeats=1, models=PTE))
    with ResultsStore(tmp_path / "r.db") as store:
        with pytest.raises(TargetError, match="not reachable"):
            run_ablation(plan, store, _options(adb_key))
        run_id = store.list_runs()[0].run_id
        assert store.counts(run_id)["target_experiments"] == 0  # host-cpu did not start either


def test_runner_with_logging_off_stops_the_run(tmp_path, manifest, tiny_sample, adb_key):
    with VirtualDevice(tmp_path / "root", authorized_keys=Path(str(adb_key) + ".pub"), runner_logging="none") as vd:
        plan = _plan(manifest, tiny_sample, f"android:{vd.address}")
        with ResultsStore(tmp_path / "r.db") as store:
            with pytest.raises(NoTimingLinesError) as info:
                run_ablation(plan, store, _options(adb_key))
            assert "EXECUTORCH_ENABLE_LOGGING=ON" in info.value.hint
            run = store.list_runs()[0]
            assert run.status == "incomplete" and "logging off" in run.status_message
            assert store.counts(run.run_id)["latencies"] == 0  # never the process time instead


def test_logcat_runner_and_a_failing_model(tmp_path, manifest, tiny_sample, adb_key):
    with VirtualDevice(tmp_path / "root", authorized_keys=Path(str(adb_key) + ".pub"), runner_logging="logcat") as vd:
        target = f"android:{vd.address}"
        plan = _plan(manifest, tiny_sample, target, experiments=3)
        broken = {"done": False}

        def break_int8(event):  # after the first experiment, the INT8 program on the device is damaged
            if event.kind == "experiment" and not broken["done"]:
                for path in (vd.root).rglob("*executorch_int8*.pte"):
                    path.write_bytes(b"not a program")
                broken["done"] = True

        with ResultsStore(tmp_path / "r.db") as store:
            result = run_ablation(plan, store, _options(adb_key), progress=break_int8)
            assert result.status == "partial"
            cells = store.rows(result.run_id, "cells")
            failed = [c for c in cells if c["status"] == "failed"]
            assert {c["model_key"] for c in failed} == {"executorch-int8-dynamic"}
            assert {c["experiment_index"] for c in failed} == {1, 2}
            assert "executor_runner exited with status" in failed[0]["message"]
            assert "Failed to parse model file" in failed[0]["runner_output"]
            ok = [c for c in cells if c["status"] == "ok"]
            assert len(ok) == 3 + 1  # fp32 everywhere, int8 in experiment 0
            assert len(store.rows(result.run_id, "latencies")) == len(ok) * 2
            assert all("read from logcat" in c["how_obtained"] for c in ok)


def test_host_cuda_is_guarded(manifest, tiny_sample):
    import torch

    plan = _plan(manifest, tiny_sample, "host-cpu", models=None)
    if not torch.cuda.is_available():
        with pytest.raises(TargetError, match="cuda.is_available"):
            HostSession(TargetSpec.parse("host-cuda"), plan)
        return
    session = HostSession(TargetSpec.parse("host-cuda"), plan)  # pragma: no cover - needs a GPU
    reasons = {m.key: session.support(m) for m in plan.models}
    assert reasons["eager-fp32"] is None and reasons["torchscript-fp32"] is None
    assert "not supported on this target" in reasons["executorch-int8-dynamic"]
    assert "no CUDA kernels" in reasons["torchscript-int8-dynamic"]
