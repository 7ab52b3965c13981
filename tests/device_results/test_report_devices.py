"""The report's device view: two hosts' databases merged, every device side by side.

The runs are written row by row with the store's API (a host CPU, a GPU, a phone that heats up and
the virtual device, on each of two hosts), merged with ``results merge``, then reported.
"""

from __future__ import annotations

import csv
import math

import pytest

from device_results.merge import merge_databases
from device_results.report import ReportConfig, load_report_data
from device_results.report.devices import CROSS_HARDWARE, device_tables, rank_devices
from device_results.report.views import Interval, LatencyView
from device_results.store import ResultsStore
from tests.device_results.test_report_warnings import make_synthetic_run


@pytest.fixture()
def merged(tmp_path):
    """Two hosts' databases, each with one run of four targets, merged into one."""
    host_a, host_b = tmp_path / "lab-a.db", tmp_path / "lab-b.db"
    with ResultsStore(host_a) as store:
        run_a = make_synthetic_run(store, label="lab-a", seed=0)
    with ResultsStore(host_b) as store:
        run_b = make_synthetic_run(store, label="lab-b", seed=1)
    into = tmp_path / "merged.db"
    merge_databases([host_a, host_b], into, source_hosts=["lab-a", "lab-b"])
    return into, run_a, run_b


def _lat(target: str, value: float, low: float, high: float) -> LatencyView:
    return LatencyView(target=target, model_key="m", n_repeats=3, n_experiments=1,
                       per_image_median_ms=Interval(value, low, high), per_image_p90_ms=Interval(value, low, high),
                       per_image_mean_ms=value, batch_median_ms=value, batch_cv=0.0)


def test_ranking_calls_overlapping_intervals_a_tie():
    ranked = rank_devices([_lat("c", 9.0, 8.5, 9.5), _lat("a", 2.0, 1.9, 2.1), _lat("b", 2.05, 2.0, 2.2),
                           _lat("d", 9.2, 9.1, 9.6), _lat("e", 30.0, math.nan, math.nan)])
    assert [(rank, lat.target, tie) for rank, lat, tie in ranked] == [
        (1, "a", None), (2, "b", 1), (3, "c", None), (4, "d", 3), (5, "e", 3)]


def test_device_view_of_two_merged_hosts(merged):
    db, run_a, run_b = merged
    with ResultsStore(db) as store:
        data = load_report_data(store, [run_a, run_b], ReportConfig(bootstrap_resamples=200))
    tables = {t.key: t for t in device_tables(data)}
    assert list(tables) == ["devices", "device_ranking", "device_int8"]

    devices = tables["devices"]
    assert len(devices.rows) == 8  # 4 targets on each host, each its own row
    phones = [r for r in devices.rows if r[0].startswith("android:PHONE1")]
    assert [r[0] for r in phones] == ["android:PHONE1 [lab-a]", "android:PHONE1 [lab-b]"]
    assert phones[0][2:6] == ("Pixel 7", "Google Tensor G2", "14", "executor_runner under adb")
    assert phones[0][6:8] == ("2", "none")
    virtual = [i for i, r in enumerate(devices.rows) if "(virtual)" in r[1]]
    assert len(virtual) == 2 and set(virtual) <= set(devices.flagged_rows)

    ranking = tables["device_ranking"]
    fp32 = [r for r in ranking.rows if r[0] == "executorch-fp32"]
    # host CPU 2.0 ms/image, virtual device 2.1, phone 20.0: on both hosts
    assert [r[2].split(" [")[0] for r in fp32] == ["host-cpu", "host-cpu", "android:127.0.0.1:5555",
                                                   "android:127.0.0.1:5555", "android:PHONE1", "android:PHONE1"]
    assert fp32[0][1] == "1" and fp32[0][5] == "fastest"
    assert fp32[1][1] == "2 (tie with 1)"  # the same speeds on both hosts: intervals overlap
    for row in fp32[1:]:
        assert row[5].startswith(CROSS_HARDWARE)
    assert float(fp32[-1][4].rstrip("x")) == pytest.approx(12.5, rel=0.1)  # the phone heats up: x1.0 .. x1.5
    assert fp32[-1][1] in ("5", "6 (tie with 5)")
    # eager-fp32 ran on host-cpu (8 ms) and the GPU (0.5 ms): ranked, the CPU labelled cross-hardware
    eager = [r for r in ranking.rows if r[0] == "eager-fp32"]
    assert [r[2].split(" [")[0] for r in eager] == ["host-cuda", "host-cuda", "host-cpu", "host-cpu"]
    assert all(CROSS_HARDWARE in r[5] for r in eager[1:])
    assert len(ranking.flagged_rows) >= len(ranking.rows) - 3  # every non-fastest row is flagged

    int8 = {r[0]: r for r in tables["device_int8"].rows}
    phone = int8["android:PHONE1 [lab-a]"]
    assert phone[1:3] == ("executorch-fp32", "executorch-int8-dynamic")
    assert float(phone[3].split("x")[0]) == pytest.approx(20.0 / 12.0, rel=0.02) and phone[4] == "INT8 faster"
    assert float(int8["host-cpu [lab-b]"][3].split("x")[0]) == pytest.approx(2.0 / 1.5, rel=0.02)
    assert all(r[5] == "same device, same images" for r in int8.values())
    assert not any(CROSS_HARDWARE in r[0] for r in int8.values())  # the GPU-vs-CPU pair is not a device ratio


def test_a_single_device_has_no_device_view(tmp_path):
    with ResultsStore(tmp_path / "one.db") as store:
        run = make_synthetic_run(store, label="x", seed=0)
        data = load_report_data(store, [run], ReportConfig(bootstrap_resamples=50))
    single = type(data)(**{**data.__dict__, "targets": data.targets[:1]})
    assert device_tables(single) == []


def test_device_tables_raw_csv_values(merged, tmp_path):
    from device_results.report.tables import to_csv

    db, run_a, run_b = merged
    with ResultsStore(db) as store:
        data = load_report_data(store, [run_a, run_b], ReportConfig(bootstrap_resamples=100))
    ranking = next(t for t in device_tables(data) if t.key == "device_ranking")
    rows = list(csv.DictReader(to_csv(ranking).splitlines()))
    assert {r["cross_hardware"] for r in rows if r["rank"] == "1"} == {"0"}
    assert {r["cross_hardware"] for r in rows if r["rank"] != "1"} == {"1"}
    phone = [r for r in rows if r["target"].startswith("android:PHONE1") and r["model_key"] == "executorch-fp32"]
    assert float(phone[0]["median_ms_per_image"]) > float(phone[0]["median_low"]) > 0


def test_merged_report_shows_both_hosts_devices_in_chromium(merged, tmp_path):
    """`results merge` then `report`: the page loads cleanly in headless Chromium with the device view."""
    import re

    from device_results.report import write_report
    from tests.conftest import require_tool
    from tests.device_results.test_report_html import ARTIFACT_DIR, check_page_in_chromium

    require_tool("chromium", "chromium-browser", "google-chrome")
    db, run_a, run_b = merged
    files = write_report(db, [run_a, run_b], tmp_path / "report", ReportConfig(bootstrap_resamples=100))
    seen = check_page_in_chromium(files.html, ARTIFACT_DIR / "report-fleet.png")
    assert "Devices side by side" in seen["headings"]
    page = files.html.read_text()
    section = page[page.index('id="devices"'):page.index('id="fp32-int8"')]
    for table in ("t-devices", "t-device_ranking", "t-device_int8"):
        assert f'id="{table}"' in section
    for label in ("android:PHONE1 [lab-a]", "android:PHONE1 [lab-b]", "android:127.0.0.1:5555 [lab-a]"):
        assert label in section
    ranking = section[section.index('id="t-device_ranking"'):section.index('id="t-device_int8"')]
    rows = re.findall(r"<tr( class=\"flag\")?><td>([^<]*)</td><td>([^<]*)</td>", ranking)
    non_fastest = [r for r in rows if not r[2].startswith("1")]
    assert non_fastest and all(r[0] for r in non_fastest)  # highlighted
    assert ranking.count("<td>CROSS-HARDWARE: ") == len(non_fastest)
    assert {p.name for p in files.csv} >= {"devices.csv", "device_ranking.csv", "device_int8.csv"}
    assert "Devices side by side" in files.markdown.read_text()
