"""Several targets in one run: which may run at the same time, one worker each, and isolation.

The rules (a measurement must not be disturbed by another one on the same hardware):

- Every phone gets its own worker; phones run at the same time (each is its own hardware).
- Virtual devices run on the host CPU: two of them run at the same time only when they were started
  on disjoint CPU sets (``emobench device serve --cpus``, reported as ``ro.emobench.cpu_set``);
  devices whose sets overlap (or are unknown) share one worker and run one after the other.
- Host targets (``host-cpu``, ``host-cuda``) run alone: nothing else runs while they do.

The schedule is a list of phases run one after another; a phase is a list of lanes run at the
same time; a lane is a list of targets run one after the other. A target that fails (a phone that
drops and does not come back, a runner that cannot time) stops only its own lane's target: the
other lanes go on, and the run ends ``partial`` with the reason per target.

``android:all`` in a target list stands for every authorised device the adb server lists.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from device_results.overlap import Hardware, parse_cpu_set
from device_results.store import TargetRecord
from emobench_common.errors import EmobenchError

log = logging.getLogger(__name__)

ALL_ANDROID = "android:all"


@dataclass(frozen=True)
class Lane:
    """Targets one worker runs one after the other."""

    targets: tuple[str, ...]


@dataclass(frozen=True)
class Schedule:
    """Phases run one after another; the lanes of a phase run at the same time."""

    phases: tuple[tuple[Lane, ...], ...]

    def describe(self) -> str:
        return " then ".join(
            " | ".join(" -> ".join(lane.targets) for lane in phase) + (" (alone)" if len(phase) == 1 and
                                                                      len(phase[0].targets) == 1 else "")
            for phase in self.phases)


@dataclass
class FleetOutcome:
    """What each target's worker returned, or why it stopped."""

    results: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, BaseException] = field(default_factory=dict)
    interrupted: BaseException | None = None


def session_hardware(session: Any) -> Hardware:
    """The hardware a session's measurements run on (asks a virtual device for its CPU set)."""
    kind = session.target.kind
    if kind in ("host-cpu", "host-cuda"):
        return Hardware("host CPU", None)
    info = session.info
    if info.is_virtual:
        cpus = None
        try:
            if session.device.getprop("ro.emobench.cpu_pinned").strip() == "1":
                cpus = parse_cpu_set(session.device.getprop("ro.emobench.cpu_set"))
        except Exception as exc:  # an old virtual device without the properties: treat it as unpinned
            log.debug("%s: no CPU set (%s)", session.target.spec, exc)
        return Hardware("host CPU", cpus)
    return Hardware(f"phone {info.serial or session.target.address}", None)


def with_cpu_set(record: TargetRecord, hardware: Hardware, is_virtual: bool) -> TargetRecord:
    """The target record with a virtual device's CPU set in its info (what the report reads)."""
    if not is_virtual:
        return record
    cpu_set = ",".join(str(c) for c in sorted(hardware.cpus)) if hardware.cpus is not None else ""
    return replace(record, info={**dict(record.info), "cpu_set": cpu_set,
                                 "cpu_pinned": "1" if hardware.cpus is not None else "0"})


def plan_schedule(specs: Sequence[str], hardware: dict[str, Hardware]) -> Schedule:
    """The phases for ``specs`` (in plan order) given each target's hardware.

    Host targets each get a phase of their own, in plan order; all device targets share one phase,
    placed where the first of them appears in the plan. In it, every phone has its own lane and
    virtual devices are grouped into lanes by shared CPUs (connected groups of overlapping sets).
    """
    devices = [s for s in specs if not _is_host(s)]
    groups: list[list[str]] = []
    for spec in devices:
        hw = hardware[spec]
        joined = [g for g in groups if any(_conflict(hw, hardware[o]) for o in g)]
        merged = [spec] if not joined else [t for g in joined for t in g] + [spec]
        groups = [g for g in groups if g not in joined] + [sorted(merged, key=devices.index)]
    groups.sort(key=lambda g: devices.index(g[0]))
    device_phase = tuple(Lane(tuple(g)) for g in groups)
    phases: list[tuple[Lane, ...]] = []
    placed = False
    for spec in specs:
        if _is_host(spec):
            phases.append((Lane((spec,)),))
        elif not placed and device_phase:
            phases.append(device_phase)
            placed = True
    return Schedule(tuple(phases))


def _is_host(spec: str) -> bool:
    return spec in ("host-cpu", "host-cuda")


def _conflict(a: Hardware, b: Hardware) -> bool:
    return a.shared_with(b) is not None


def run_schedule(schedule: Schedule, work: Callable[[str, threading.Event], Any]) -> FleetOutcome:
    """Run ``work(target, stop)`` for every target as the schedule says; collect results and failures.

    ``work`` should check ``stop`` between experiments and end early when it is set. A failure
    (an ``EmobenchError``) ends only that target; the lane goes on with its next target. Ctrl-C (or
    ``KeyboardInterrupt`` raised in a worker) sets ``stop``, waits for the workers, and is re-raised
    by the caller through ``FleetOutcome.interrupted``.
    """
    outcome = FleetOutcome()
    stop = threading.Event()
    lock = threading.Lock()

    def run_lane(lane: Lane) -> None:
        for target in lane.targets:
            if stop.is_set():
                return
            try:
                result = work(target, stop)
            except EmobenchError as exc:
                log.error("%s stopped: %s", target, exc)
                with lock:
                    outcome.failures[target] = exc
                continue
            except BaseException as exc:  # Ctrl-C from a progress callback, or a bug: stop everything
                with lock:
                    if outcome.interrupted is None:
                        outcome.interrupted = exc
                stop.set()
                return
            with lock:
                outcome.results[target] = result

    for phase in schedule.phases:
        if stop.is_set():
            break
        if len(phase) == 1:  # one lane: run it here, in the caller's thread (signals reach it directly)
            try:
                run_lane(phase[0])
            except BaseException:
                stop.set()
                raise
            continue
        workers = [threading.Thread(target=run_lane, args=(lane,), name=f"fleet-{lane.targets[0]}", daemon=True)
                   for lane in phase]
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(timeout=0.2)
        except BaseException as exc:  # Ctrl-C / SIGTERM in the main thread: let each worker end its experiment
            stop.set()
            for worker in workers:
                worker.join()
            if outcome.interrupted is None:
                outcome.interrupted = exc
            break
    return outcome


def expand_all_android(targets: Sequence[str], *,
                       list_devices: Callable[[], Sequence[tuple[str, str]]] | None = None) -> tuple[str, ...]:
    """Replace ``android:all`` by every authorised device the adb server lists (others are named and skipped).

    Raises:
        EmobenchError: ``android:all`` was given and no authorised device is listed.
    """
    if ALL_ANDROID not in targets:
        return tuple(targets)
    if list_devices is None:
        from android_bench.device import list_server_devices

        list_devices = list_server_devices
    found = list(list_devices())  # (serial, state) as `adb devices` shows them
    usable = [serial for serial, state in found if state == "device"]
    for serial, state in found:
        if state != "device":
            log.warning("android:all skips %s: it is %s%s", serial, state,
                        " (accept the 'Allow USB debugging?' prompt on the phone)" if state == "unauthorized" else "")
    if not usable:
        skipped = ", ".join(f"{serial} ({state})" for serial, state in found) or "none listed"
        raise EmobenchError(f"android:all: the adb server lists no authorised device (seen: {skipped})",
                            hint="connect a phone and accept 'Allow USB debugging?', or `adb connect HOST:PORT`")
    # through the server that listed them: a HOST:PORT serial (after `adb connect`) needs the adb: prefix
    listed = [f"android:adb:{serial}" if ":" in serial else f"android:{serial}" for serial in usable]
    out: list[str] = []
    for t in targets:
        if t == ALL_ANDROID:
            out.extend(spec for spec in listed if spec not in targets)
        elif t not in out:
            out.append(t)
    return tuple(out)
