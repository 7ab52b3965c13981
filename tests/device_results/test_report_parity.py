"""The report shows each artifact's export parity with the eager model, and warns on INT8 under its threshold."""

from __future__ import annotations

import json

from device_results.report import ReportConfig, load_report_data
from device_results.report.tables import build_tables
from device_results.store import (
    ArtifactRecord,
    CellResult,
    ExperimentResult,
    ExperimentRow,
    PredictionRow,
    ResultsStore,
    TargetRecord,
    utc_now,
)

INT8_THRESHOLD = "top1_agreement >= 0.9 (warning only)"


def _parity(agreement: float, max_diff: float, *, int8: bool) -> dict:
    threshold = INT8_THRESHOLD if int8 else "max_abs_diff < 0.001"
    passed = agreement >= 0.9 if int8 else max_diff < 1e-3
    return {"images": 40, "top1_agreement": agreement, "max_abs_diff": max_diff, "mean_abs_diff": max_diff / 10,
            "passed": passed, "threshold": threshold}


def _run(store: ResultsStore, artifacts: list[ArtifactRecord], plan: dict | None = None) -> str:
    keys = tuple(a.model_key for a in artifacts)
    run_id = store.create_run(plan={"class_names": ["anger", "happy"], "batch_size": 1, **(plan or {})},
                              artifacts=artifacts, experiments=[ExperimentRow(0, "seen", "rafdb", ("i0",), (0,), keys)])
    store.add_target(run_id, TargetRecord("host-cpu", "host-cpu", False, {}, {}, 1, None, "python"),
                     model_support=dict.fromkeys(keys))
    now = utc_now()
    cells = tuple(CellResult(k, "ok", i, 1, 1, 1, 1, None, "python", now, now, (3.0,), (PredictionRow(0, "i0", 0, 0, .9),))
                  for i, k in enumerate(keys))
    store.record_experiment(run_id, "host-cpu", ExperimentResult(0, now, now, cells, None, None))
    store.finish_run(run_id, "complete")
    return run_id


def _artifacts_table(data):
    table = next(t for t in build_tables(data) if t.key == "artifacts")
    column = table.columns.index("export parity vs eager")
    return {row[0]: row[column] for row in table.rows}, table


def test_parity_recorded_with_the_run_is_shown_and_int8_under_threshold_is_warned(tmp_path):
    arts = [ArtifactRecord("executorch-fp32", "executorch", "fp32", "none", "a.pte", 10, "a" * 64,
                           {"parity": _parity(1.0, 2.4e-6, int8=False)}),
            ArtifactRecord("executorch-int8-dynamic", "executorch", "int8", "dynamic", "b.pte", 5, "b" * 64,
                           {"parity": _parity(0.825, 0.71, int8=True)}),
            ArtifactRecord("onnx-int8-dynamic", "onnx", "int8", "dynamic", "c.onnx", 5, "c" * 64,
                           {"parity": _parity(0.95, 0.3, int8=True)})]
    with ResultsStore(tmp_path / "r.db") as store:
        data = load_report_data(store, [_run(store, arts)], ReportConfig(bootstrap_resamples=20))
    shown, table = _artifacts_table(data)
    assert shown == {"executorch-fp32": "top-1 100.0% of 40, max |diff| 2.4e-06",
                     "executorch-int8-dynamic": "top-1 82.5% of 40, max |diff| 0.71 UNDER THRESHOLD",
                     "onnx-int8-dynamic": "top-1 95.0% of 40, max |diff| 0.3"}
    assert table.flagged_rows == (1,) and "1 INT8 artifact(s) under" in table.note
    parity = [w for w in data.warnings if w.kind == "parity"]
    assert len(parity) == 1 and parity[0].message.startswith(
        "executorch-int8-dynamic: its top-1 agreement with the eager FP32 model at export was 82.5% on 40 images, "
        f"under the export's threshold ({INT8_THRESHOLD})")


def test_parity_from_the_manifest_only_when_it_describes_the_same_file(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"artifacts": [
        {"format": "executorch", "precision": "int8", "mode": "dynamic", "sha256": "b" * 64,
         "parity": _parity(0.5, 1.2, int8=True)},
        {"format": "onnx", "precision": "fp32", "mode": None, "sha256": "0" * 64,  # re-exported since the run
         "parity": _parity(1.0, 1e-6, int8=False)}]}))
    arts = [ArtifactRecord("executorch-int8-dynamic", "executorch", "int8", "dynamic", "b.pte", 5, "b" * 64),
            ArtifactRecord("onnx-fp32", "onnx", "fp32", "none", "c.onnx", 5, "c" * 64)]
    with ResultsStore(tmp_path / "r.db") as store:
        data = load_report_data(store, [_run(store, arts, {"manifest_path": str(manifest)})],
                                ReportConfig(bootstrap_resamples=20))
    shown, _ = _artifacts_table(data)
    assert shown == {"executorch-int8-dynamic": "top-1 50.0% of 40, max |diff| 1.2 UNDER THRESHOLD",
                     "onnx-fp32": "not recorded"}
    assert [w.kind for w in data.warnings if w.kind == "parity"] == ["parity"]
