"""The demo end to end at its smallest settings (``--quick``): every real stage, then reuse."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from emobench import cli
from emobench_app.demo import STAGES, DemoConfig, run_demo


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    # relative, like `make demo`'s demo_out/: the virtual device then serves a relative sandbox folder
    out = Path(os.path.relpath(tmp_path_factory.mktemp("demo") / "out"))
    events = []
    cfg = DemoConfig.quick_config(out)
    result = run_demo(cfg, on_event=events.append)
    return cfg, result, events


def test_quick_demo_runs_every_stage(quick_demo):
    cfg, result, events = quick_demo
    started = [e.stage for e in events if e.kind == "stage-start"]
    assert started == list(STAGES) and not result.reused
    notes = [e.message for e in events if e.kind == "note" and e.stage == "train"]
    assert len(notes) == 1 and ("training from scratch" in notes[0] or "found locally" in notes[0])
    assert result.checkpoint.is_file() and result.manifest.is_file() and result.report_html.is_file()
    assert (cfg.out_dir / "evaluate" / "seen-test" / "confusion_matrix.png").is_file()
    assert (cfg.out_dir / "evaluate" / "unseen-custom" / "per_class.png").is_file()
    # the accuracy reported is the one the evaluation stored, and it is what its confusion matrix says
    metrics = json.loads((cfg.out_dir / "evaluate" / "seen-test" / "metrics.json").read_text())
    cm = np.array(metrics["confusion_matrix"])
    assert cm.sum() == metrics["num_samples"] > 0
    assert result.test_accuracy == pytest.approx(metrics["accuracy"]) == pytest.approx(np.trace(cm) / cm.sum())
    # the virtual device was a target, is marked virtual, and ran every ExecuTorch model
    virtual = [t for t in result.targets if t.startswith("android:127.0.0.1:")]
    assert result.targets[0] == "host-cpu" and len(virtual) == 1
    conn = sqlite3.connect(result.db_path)
    try:
        flags = dict(conn.execute("SELECT target_id, is_virtual FROM targets WHERE run_id = ?", (result.run_id,)))
        cells = conn.execute("SELECT target_id, status, count(*) FROM cells WHERE run_id = ? GROUP BY target_id, status",
                             (result.run_id,)).fetchall()
        status = conn.execute("SELECT status FROM runs WHERE run_id = ?", (result.run_id,)).fetchone()[0]
        versions = json.loads(conn.execute("SELECT library_versions_json FROM targets WHERE run_id = ? AND "
                                           "target_id = ?", (result.run_id, virtual[0])).fetchone()[0])
    finally:
        conn.close()
    assert flags == {"host-cpu": 0, virtual[0]: 1}
    assert versions["runner"] == "native" and len(versions["runner_sha256"]) == 64  # emobench's native runner ran
    assert result.run_status == "complete" and not result.run_message
    # eager + ExecuTorch FP32, INT8 dynamic and INT8 QAT on the host; the three .pte files on the device
    assert {(t, s): n for t, s, n in cells} == {("host-cpu", "ok"): cfg.experiments * 4,
                                                (virtual[0], "ok"): cfg.experiments * 3}
    assert status == "complete"
    page = result.report_html.read_text()
    assert "(VIRTUAL)" in page and "is a VIRTUAL device" in page
    # the printed summary: one row per (target, model) that ran
    assert {(row[0], row[1]) for row in result.summary} >= {("host-cpu", "eager-fp32"),
                                                            (f"{virtual[0]} (VIRTUAL)", "executorch-int8-dynamic"),
                                                            (f"{virtual[0]} (VIRTUAL)", "executorch-int8-qat")}
    # the QAT stage ran from the trained model, and the export read its checkpoint
    qat_marker = json.loads((cfg.out_dir / "qat" / ".stage.json").read_text())["result"]
    assert 0.0 <= qat_marker["agreement"] <= 1.0 and qat_marker["epochs"] == 1
    manifest = json.loads(result.manifest.read_text())
    qat_artifact = next(a for a in manifest["artifacts"] if a.get("mode") == "qat")
    assert qat_artifact["details"]["qat"]["init_from"] == str(result.checkpoint.resolve())


def test_demo_cli_prints_summary_and_report_path(quick_demo):
    cfg, result, _ = quick_demo
    out = CliRunner().invoke(cli, ["demo", "--quick", "--out", str(cfg.out_dir)])
    assert out.exit_code == 0, out.output
    assert "Report: " in out.output and "report.html" in out.output
    assert "median ms/image" in out.output and "Seen test accuracy" in out.output


def test_demo_below_the_accuracy_bar_exits_1_after_the_report(quick_demo):
    cfg, result, _ = quick_demo
    args = ["demo", "--quick", "--out", str(cfg.out_dir)]
    out = CliRunner().invoke(cli, [*args, "--min-accuracy", "1.01"])  # no model can reach it
    assert out.exit_code == 1, out.output
    assert "Report: " in out.output and "report.html" in out.output  # the user still gets the report
    assert f"Error: seen test accuracy {result.test_accuracy:.1%} is below the demo's bar 101.0%" in out.output
    assert out.output.index("Report: ") < out.output.index("Error: ")
    # the bar is judged anew on a reused evaluation: with bar 0 the same stages pass
    ok = CliRunner().invoke(cli, [*args, "--min-accuracy", "0"])
    assert ok.exit_code == 0, ok.output
    assert "Error:" not in ok.output
    low = run_demo(replace(cfg, min_test_accuracy=1.01))
    assert not low.accuracy_ok and low.reused == STAGES


def test_rerun_reuses_finished_stages(quick_demo):
    cfg, first, _ = quick_demo
    events = []
    again = run_demo(cfg, on_event=events.append)
    assert again.reused == STAGES and again.run_id == first.run_id
    assert not [e for e in events if e.kind == "stage-start"]
    # a change to the ablation settings redoes the ablation and the report only
    changed = replace(cfg, repeats=cfg.repeats + 1)
    events = []
    third = run_demo(changed, on_event=events.append)
    assert [e.stage for e in events if e.kind == "stage-start"] == ["ablation", "report"]
    assert third.reused == ("data", "train", "evaluate", "qat", "export") and third.run_id != first.run_id


def test_demo_whose_ablation_ended_partial_exits_1_after_the_report(quick_demo, monkeypatch):
    """Failed device cells are not a success: the report is printed, then one error with the resume command."""
    import emobench_app.demo as demo_module

    cfg, result, _ = quick_demo
    partial = replace(result, run_status="partial", run_message="60 cell(s) failed (executorch-fp32 on android:x)")
    monkeypatch.setattr(demo_module, "run_demo", lambda *a, **k: partial)
    out = CliRunner().invoke(cli, ["demo", "--quick", "--out", str(cfg.out_dir)])
    assert out.exit_code == 1, out.output
    assert out.output.index("Report: ") < out.output.index(f"Error: the ablation run {result.run_id} ended partial")
    assert f"emobench ablation --resume {result.run_id}" in out.output
