"""Which targets of a run ran at the same time, and whether they shared hardware while they did.

Every (experiment, target) is stored with its start and end time (``target_experiments``), so the
store itself records when each target was busy. Two targets overlapped when one's experiment ran
while the other's did. That matters when they share hardware: the host's CPU (``host-cpu``,
``host-cuda``'s host side, and every virtual device, which runs on the host CPU; two virtual
devices pinned to disjoint CPU sets do not share), or the same phone.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from device_results.store import ResultsStore


@dataclass(frozen=True)
class Overlap:
    """Two targets of one run that were busy at the same time."""

    target_a: str
    target_b: str
    seconds: float
    shared_hardware: str | None  # what they shared ("host CPU 0-1", "phone R58M..."), None when nothing


@dataclass(frozen=True)
class Hardware:
    """What a target's measurements run on: a domain (``host`` or ``phone:<serial>``) and, on the host, CPUs."""

    domain: str
    cpus: frozenset[int] | None  # None: any CPU of the domain

    def shared_with(self, other: Hardware) -> str | None:
        if self.domain != other.domain:
            return None
        if self.cpus is None or other.cpus is None:
            both = self.cpus if other.cpus is None else other.cpus
            return self.domain + ("" if both is None else f" CPUs {_cpu_list(both)}")
        common = self.cpus & other.cpus
        return f"{self.domain} CPUs {_cpu_list(common)}" if common else None


def _cpu_list(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def parse_cpu_set(text: Any) -> frozenset[int] | None:
    """A CPU list as a virtual device reports it (``0``, ``0-1``, ``0,2-3``); None when absent or unreadable."""
    if not isinstance(text, str) or not text.strip():
        return None
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    except ValueError:
        return None
    return frozenset(cpus) or None


def hardware_of(kind: str, target_id: str, is_virtual: bool, info: Mapping[str, Any]) -> Hardware:
    """The hardware a target measures, from its stored record (``info`` is its DeviceInfo or host info)."""
    if kind in ("host-cpu", "host-cuda"):
        return Hardware("host CPU", None)
    if is_virtual:
        pinned = str(info.get("cpu_pinned", "")) in ("1", "true", "True")
        return Hardware("host CPU", parse_cpu_set(info.get("cpu_set")) if pinned else None)
    serial = str(info.get("serial") or target_id.removeprefix("android:"))
    return Hardware(f"phone {serial}", None)


def _parse_time(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text)


def busy_intervals(store: ResultsStore, run_id: str) -> dict[str, list[tuple[_dt.datetime, _dt.datetime]]]:
    """Each target's experiments of a run as (start, end) times, in order."""
    out: dict[str, list[tuple[_dt.datetime, _dt.datetime]]] = {}
    for row in store.rows(run_id, "target_experiments"):
        out.setdefault(row["target_id"], []).append((_parse_time(row["started_at"]), _parse_time(row["finished_at"])))
    for spans in out.values():
        spans.sort()
    return out


def _overlap_s(a: Sequence[tuple[_dt.datetime, _dt.datetime]], b: Sequence[tuple[_dt.datetime, _dt.datetime]]) -> float:
    total, j = 0.0, 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            total += max(0.0, (min(end, b[k][1]) - max(start, b[k][0])).total_seconds())
            k += 1
    return total


def run_overlaps(store: ResultsStore, run_id: str) -> list[Overlap]:
    """Every pair of targets of a run that were busy at the same time, with what they shared."""
    spans = busy_intervals(store, run_id)
    targets = {t["target_id"]: t for t in store.rows(run_id, "targets")}
    hardware = {tid: hardware_of(t["kind"], tid, bool(t["is_virtual"]), _info(t)) for tid, t in targets.items()}
    ids = sorted(spans)
    out = []
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            seconds = _overlap_s(spans[a], spans[b])
            if seconds > 0:
                shared = hardware[a].shared_with(hardware[b]) if a in hardware and b in hardware else None
                out.append(Overlap(a, b, seconds, shared))
    return out


def _info(row: Mapping[str, Any]) -> dict[str, Any]:
    try:
        info = json.loads(row.get("info_json") or "{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def overlap_warnings(store: ResultsStore, targets: Sequence[Any]) -> list[Any]:
    """A report warning for every two targets of one run that ran at the same time on shared hardware.

    Args:
        targets: the report's ``TargetView`` objects (their ``run_id``, ``target_id`` and ``label``).
    """
    from device_results.report.views import Warning_

    labels = {(t.run_id, t.target_id): t.label for t in targets}
    out = []
    for run_id in dict.fromkeys(t.run_id for t in targets):
        for o in run_overlaps(store, run_id):
            if o.shared_hardware is None or (run_id, o.target_a) not in labels or (run_id, o.target_b) not in labels:
                continue
            a, b = labels[(run_id, o.target_a)], labels[(run_id, o.target_b)]
            out.append(Warning_("overlap", a, f"{a} and {b} ran at the same time for {o.seconds:.1f} s on shared "
                                f"hardware ({o.shared_hardware}): each one's latencies include the other's load. "
                                "Pin virtual devices to disjoint CPUs (emobench device serve --cpus)."))
    return out
