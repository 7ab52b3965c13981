"""CPU sets for virtual devices: parsing Linux CPU lists, and pinning a whole process tree for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from android_bench.cpusets import (
    CpuSetError,
    cpu_mask_hex,
    disjoint,
    format_cpu_list,
    parse_cpu_list,
    thread_affinities,
)

ALL = range(8)


@pytest.mark.parametrize(("text", "cpus"), [("0", {0}), ("2-3", {2, 3}), ("0,2-3", {0, 2, 3}),
                                            (" 1 , 5-7 ", {1, 5, 6, 7}), ("3,3,2-3", {2, 3})])
def test_parse_cpu_list(text, cpus):
    assert parse_cpu_list(text, available=ALL) == cpus


@pytest.mark.parametrize(("text", "message"), [("", "empty item"), ("0,,1", "empty item"), ("a", "'a' is not"),
                                               ("1-", "'1-' is not"), ("3-1", "runs backwards"),
                                               ("0-9", "names CPU 8-9, which this process may not use")])
def test_bad_cpu_lists_are_refused(text, message):
    with pytest.raises(CpuSetError, match=message):
        parse_cpu_list(text, available=ALL)


def test_default_available_set_is_this_process_affinity():
    mine = os.sched_getaffinity(0)
    assert parse_cpu_list(format_cpu_list(mine)) == mine
    with pytest.raises(CpuSetError, match=f"choose among CPUs {format_cpu_list(mine)}"):
        parse_cpu_list(str(max(mine) + 64))


def test_format_mask_disjoint():
    assert format_cpu_list([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert format_cpu_list([]) == ""
    assert cpu_mask_hex({0, 1}) == "3" and cpu_mask_hex({4, 5, 6, 7}) == "f0"
    assert disjoint({0}, {1}) and not disjoint({0, 1}, {1}) and not disjoint(None, {1})


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to see a pin take effect")
def test_pin_process_pins_running_threads_and_children():
    """In a separate process (never pin pytest itself): a thread started before the pin, one after, a child."""
    cpu = min(os.sched_getaffinity(0))
    code = textwrap.dedent(f"""
        import json, os, subprocess, sys, threading
        from android_bench.cpusets import pin_process, thread_affinities
        stop = threading.Event()
        early = threading.Thread(target=stop.wait); early.start()
        pinned = pin_process({{{cpu}}})
        late = threading.Thread(target=stop.wait); late.start()
        child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                               capture_output=True, text=True).stdout
        threads = {{str(t): sorted(s) for t, s in thread_affinities(os.getpid()).items()}}
        stop.set()
        print(json.dumps({{"pinned": sorted(pinned), "threads": threads, "child": json.loads(child)}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["pinned"] == [cpu] and seen["child"] == [cpu]
    assert len(seen["threads"]) >= 3 and all(s == [cpu] for s in seen["threads"].values()), seen


# --- virtual devices pinned with --cpus ------------------------------------------------------------

NPROC = "/usr/bin/nproc"  # a real host executable: prints how many CPUs its affinity allows
TWO_CPUS = len(os.sched_getaffinity(0)) >= 2
needs_two = pytest.mark.skipif(not TWO_CPUS, reason="needs two CPUs to see a pin take effect")


def _run_nproc(device, *prefix: str):
    device.push(Path(NPROC), "/data/local/tmp/nproc", mode=0o755)
    return device.shell([*prefix, "/data/local/tmp/nproc"], check=False)


@needs_two
def test_virtual_device_pins_what_it_runs_and_reports_its_cpu_set(tmp_path, adb_key):
    from android_bench.device import connect
    from android_bench.virtual import VirtualDevice

    keys = Path(str(adb_key) + ".pub")
    first = min(os.sched_getaffinity(0))
    with VirtualDevice(tmp_path / "pinned", authorized_keys=keys, cpus={first}) as pinned, \
            VirtualDevice(tmp_path / "free", authorized_keys=keys) as free:
        with connect(pinned.address, adb_key=adb_key) as dev:
            assert dev.getprop("ro.emobench.cpu_set") == str(first)
            assert dev.getprop("ro.emobench.cpu_pinned") == "1"
            result = _run_nproc(dev)
            assert (result.exit_status, result.stdout.strip()) == (0, "1"), result
            other = max(os.sched_getaffinity(0))
            refused = _run_nproc(dev, "taskset", cpu_mask_hex({other}))
            assert refused.exit_status == 1 and f"none of this device's CPUs ({first})" in refused.stderr
        with connect(free.address, adb_key=adb_key) as dev:
            assert dev.getprop("ro.emobench.cpu_set") == format_cpu_list(os.sched_getaffinity(0))
            assert dev.getprop("ro.emobench.cpu_pinned") == "0"
            assert _run_nproc(dev).stdout.strip() == str(len(os.sched_getaffinity(0)))
    assert os.sched_getaffinity(0) != {first}  # the test process itself was never pinned


@needs_two
def test_device_serve_cpus_pins_the_whole_process(tmp_path, adb_key):
    from android_bench.device import connect

    cpu = max(os.sched_getaffinity(0))
    proc = subprocess.Popen([sys.executable, "-m", "emobench", "device", "serve", "--cpus", str(cpu), "--root",
                             str(tmp_path / "root"), "--authorized-keys", str(adb_key) + ".pub"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else address
        with connect(address, adb_key=adb_key) as dev:
            assert dev.getprop("ro.emobench.cpu_set") == str(cpu)
            assert _run_nproc(dev).stdout.strip() == "1"
            threads = thread_affinities(proc.pid)
        assert len(threads) >= 2 and set(threads.values()) == {frozenset({cpu})}, threads
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_device_serve_refuses_cpus_it_may_not_use():
    bad = max(os.sched_getaffinity(0)) + 64
    proc = subprocess.run([sys.executable, "-m", "emobench", "device", "serve", "--cpus", str(bad), "--no-auth"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and f"names CPU {bad}, which this process may not use" in proc.stderr
