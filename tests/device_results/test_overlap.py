"""Which targets of a run overlapped in time, what they shared, and the report's warning about it."""

from __future__ import annotations

import datetime as dt

from device_results.overlap import Hardware, hardware_of, parse_cpu_set, run_overlaps
from device_results.report import ReportConfig, load_report_data
from device_results.store import (
    ArtifactRecord,
    CellResult,
    ExperimentResult,
    ExperimentRow,
    PredictionRow,
    ResultsStore,
    TargetRecord,
)

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
MODEL = "executorch-fp32"


def _at(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def _run(store: ResultsStore, busy: dict[str, tuple[dict, list[tuple[float, float]]]]) -> str:
    """One run whose targets were busy during the given (start, end) second ranges, one experiment each."""
    n = max(len(spans) for _, spans in busy.values())
    run_id = store.create_run(plan={"seed": 0, "class_names": ["a", "b"]},
                              artifacts=[ArtifactRecord(MODEL, "executorch", "fp32", "none", "m.pte", 10, "a" * 64)],
                              experiments=[ExperimentRow(i, "seen", "d", ("x",), (0,), (MODEL,)) for i in range(n)])
    for target, (info, spans) in busy.items():
        kind = target if target.startswith("host") else "android"
        store.add_target(run_id, TargetRecord(target, kind, bool(info.get("virtual")), info, {}, 1, None, "test"),
                         model_support={MODEL: None})
        for i, (start, end) in enumerate(spans):
            cell = CellResult(MODEL, "ok", 0, 1, 0, 1, 1, None, "test", _at(start), _at(end), (5.0,),
                              (PredictionRow(0, "x", 0, 0, 0.9),))
            store.record_experiment(run_id, target, ExperimentResult(i, _at(start), _at(end), (cell,)))
    store.finish_run(run_id, "complete")
    return run_id


def test_hardware_and_cpu_sets():
    assert parse_cpu_set("0,2-3") == {0, 2, 3} and parse_cpu_set("") is None and parse_cpu_set("x") is None
    pinned0 = hardware_of("android", "android:a", True, {"cpu_set": "0", "cpu_pinned": "1"})
    pinned1 = hardware_of("android", "android:b", True, {"cpu_set": "1", "cpu_pinned": "1"})
    unpinned = hardware_of("android", "android:c", True, {"cpu_set": "0-1", "cpu_pinned": "0"})
    host = hardware_of("host-cpu", "host-cpu", False, {})
    phone = hardware_of("android", "android:R58", False, {"serial": "R58"})
    assert pinned0 == Hardware("host CPU", frozenset({0})) and unpinned == Hardware("host CPU", None)
    assert pinned0.shared_with(pinned1) is None
    assert pinned0.shared_with(unpinned) == "host CPU CPUs 0" and host.shared_with(pinned1) == "host CPU CPUs 1"
    assert phone.shared_with(host) is None and phone.shared_with(phone) == "phone R58"


def test_overlaps_and_the_report_warning(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        run_id = _run(store, {
            "android:a": ({"virtual": True, "cpu_set": "0", "cpu_pinned": "1"}, [(0, 10), (10, 20)]),
            "android:b": ({"virtual": True, "cpu_set": "1", "cpu_pinned": "1"}, [(5, 15), (15, 25)]),
            "android:c": ({"virtual": True, "cpu_set": "0-1", "cpu_pinned": "0"}, [(18, 19)]),
            "host-cpu": ({}, [(30, 40)]),
            "android:R58": ({"serial": "R58"}, [(0, 40)]),
        })
        overlaps = {(o.target_a, o.target_b): (o.seconds, o.shared_hardware) for o in run_overlaps(store, run_id)}
        assert overlaps[("android:a", "android:b")] == (15.0, None)  # disjoint CPUs: side by side is fine
        assert overlaps[("android:a", "android:c")] == (1.0, "host CPU CPUs 0")
        assert overlaps[("android:b", "android:c")] == (1.0, "host CPU CPUs 1")
        assert overlaps[("android:R58", "host-cpu")] == (10.0, None)  # a phone shares nothing with the host
        assert not any("host-cpu" in pair and "android:R58" not in pair for pair in overlaps)  # host-cpu alone
        data = load_report_data(store, [run_id], ReportConfig(bootstrap_resamples=50))
    warned = [w for w in data.warnings if w.kind == "overlap"]
    assert len(warned) == 2
    assert warned[0].message.startswith("android:a and android:c ran at the same time for 1.0 s on shared hardware "
                                        "(host CPU CPUs 0)")
    assert "--cpus" in warned[0].message
