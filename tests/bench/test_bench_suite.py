"""`make bench` cannot rot silently: every benchmark runs in --quick mode and yields figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import bench.__main__ as suite
from bench.harness import Figure, Timing, ratio_figure

ROOT = Path(__file__).resolve().parents[2]


def test_harness_ratio_and_quantiles():
    f = ratio_figure("x", value=3.0, reference=4.0, unit="ms", reference_label="ref", target_max=0.8)
    assert f.ratio == pytest.approx(0.75) and f.met is True and f.target == "ratio <= 0.8"
    g = ratio_figure("y", value=3.0, reference=4.0, unit="MB/s", reference_label="adb", target_min=0.8)
    assert g.met is False
    t = Timing((0.004, 0.001, 0.003, 0.002))
    assert t.median_ms == pytest.approx(2.5)
    assert t.quantile_s(0.25) == pytest.approx(0.00175)
    nm = Figure.not_measured("gpu", reason="no CUDA here", command="make bench on a GPU host")
    assert nm.value is None and nm.met is None and "not measured here" in nm.note


def test_failed_benchmark_is_reported_not_hidden(tmp_path):
    code = suite.main(["--only", "bench_does_not_exist", "--out", str(tmp_path)])
    assert code == 1
    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["figures"][0]["name"] == "FAILED" and data["machine"]["cores"]


@pytest.mark.slow
def test_every_benchmark_runs_quick(tmp_path):
    names = suite.discover()
    assert names, "no benchmarks under bench/"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "latest-quick.json").read_text())
    produced = {row["benchmark"] for row in data["figures"]}
    assert produced == set(names)
    for row in data["figures"]:
        assert row["name"] != "FAILED", row
        assert row["value"] is not None or "not measured here" in row["note"], row


def test_a_ratio_that_cannot_be_formed_fails_loudly():
    from bench.harness import BenchmarkError

    for value, reference in ((1.0, 0.0), (float("nan"), 1.0), (1.0, float("inf"))):
        with pytest.raises(BenchmarkError, match="cannot form a ratio"):
            ratio_figure("x", value=value, reference=reference, unit="ms", reference_label="ref", target_max=1)
