"""CPU sets for virtual devices: parsing Linux CPU lists, and pinning a whole process tree for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from android_bench.cpusets import (
    CpuSetError,
    cpu_mask_hex,
    disjoint,
    format_cpu_list,
    parse_cpu_list,
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
