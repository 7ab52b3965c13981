"""CPU sets: which cores a virtual device (and everything it runs) may use.

A virtual device measures the host CPU, so two of them only run side by side without disturbing
each other when they sit on disjoint cores. ``emobench device serve --cpus 0`` pins the serving
process, each of its threads and every process it starts (children inherit the affinity on Linux)
to CPU 0, and the device reports the set in ``getprop ro.emobench.cpu_set`` so the harness can tell
which virtual devices may overlap in time.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from emobench_common.errors import EmobenchError

log = logging.getLogger(__name__)

CPU_SET_PROPERTY = "ro.emobench.cpu_set"


class CpuSetError(EmobenchError):
    """A CPU list that cannot be read, or names CPUs this process may not use."""


def available_cpus() -> frozenset[int]:
    """The CPUs this process may run on."""
    return frozenset(os.sched_getaffinity(0))


def parse_cpu_list(text: str, *, available: Iterable[int] | None = None) -> frozenset[int]:
    """CPUs from a Linux CPU list such as ``0``, ``2-3`` or ``0,2-3`` (as ``taskset -c`` and cgroups write them).

    Args:
        text: the list.
        available: the CPUs that may be named (default: this process's affinity).

    Raises:
        CpuSetError: the list is malformed, empty, or names a CPU outside ``available``.
    """
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            raise CpuSetError(f"CPU list {text!r} has an empty item", hint="write it like 0 or 0-1 or 0,2-3")
        low, sep, high = part.partition("-")
        if not (low.isdigit() and (not sep or high.isdigit())):
            raise CpuSetError(f"CPU list {text!r}: {part!r} is not a CPU number or a range like 2-3",
                              hint="write it like 0 or 0-1 or 0,2-3")
        first, last = int(low), int(high) if sep else int(low)
        if last < first:
            raise CpuSetError(f"CPU list {text!r}: range {part!r} runs backwards", hint=f"write {last}-{first}")
        cpus.update(range(first, last + 1))
    allowed = frozenset(available) if available is not None else available_cpus()
    outside = sorted(cpus - allowed)
    if outside:
        raise CpuSetError(f"CPU list {text!r} names CPU {format_cpu_list(outside)}, which this process may not use",
                          hint=f"choose among CPUs {format_cpu_list(allowed)}")
    return frozenset(cpus)


def format_cpu_list(cpus: Iterable[int]) -> str:
    """The canonical Linux CPU list: sorted, ranges collapsed (``0-2,5``)."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def cpu_mask_hex(cpus: Iterable[int]) -> str:
    """The set as a hex mask, as ``taskset`` prints it (``{0, 1}`` -> ``3``)."""
    return format(sum(1 << c for c in set(cpus)), "x")


def disjoint(a: Iterable[int] | None, b: Iterable[int] | None) -> bool:
    """Whether two CPU sets share no CPU; an unknown set (None) shares with everything."""
    if a is None or b is None:
        return False
    return not (set(a) & set(b))


def pin_process(cpus: Iterable[int], pid: int | None = None) -> frozenset[int]:
    """Pin every thread of a process (default: this one) to ``cpus``; processes it starts later inherit it.

    ``sched_setaffinity`` acts on one thread, so each thread listed in ``/proc/PID/task`` is pinned
    (threads started later inherit the affinity of the thread that starts them).

    Returns:
        The affinity the process has now.

    Raises:
        CpuSetError: the kernel refused the set.
    """
    wanted = frozenset(cpus)
    target = os.getpid() if pid is None else pid
    tasks = Path(f"/proc/{target}/task")
    tids = [int(p.name) for p in tasks.iterdir()] if tasks.is_dir() else [target]
    try:
        for tid in tids:
            try:
                os.sched_setaffinity(tid, wanted)
            except ProcessLookupError:  # a thread that ended meanwhile
                continue
    except OSError as exc:
        raise CpuSetError(f"cannot pin process {target} to CPUs {format_cpu_list(wanted)} ({exc})",
                          hint=f"choose among CPUs {format_cpu_list(available_cpus())}") from exc
    now = frozenset(os.sched_getaffinity(target))
    log.info("process %d pinned to CPUs %s", target, format_cpu_list(now))
    return now


@contextlib.contextmanager
def pinned_thread(cpus: Iterable[int]) -> Iterator[None]:
    """Pin the calling thread (only) to ``cpus`` for the block, then give it back its affinity."""
    before = os.sched_getaffinity(0)  # on Linux, pid 0 is the calling thread
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def thread_affinities(pid: int) -> dict[int, frozenset[int]]:
    """The affinity of each thread of a process, by thread id (read from the kernel)."""
    out: dict[int, frozenset[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = frozenset(os.sched_getaffinity(int(task.name)))
        except ProcessLookupError:
            continue
    return out
