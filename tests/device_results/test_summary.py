"""Summaries over a real (small) stored run, checked against the rows, and the `results` commands."""

from __future__ import annotations

import csv
import json
import statistics

import pytest
from click.testing import CliRunner

from android_bench.ablation import run_ablation
from android_bench.plan import PlanConfig, build_plan
from device_results import stats
from device_results.store import ResultsStore
from device_results.summary import format_summary, summarize_run
from emobench import cli
from tests.device_results.tiny_export import EXPORT_BATCH


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny_manifest, tiny_sample):
    db = tmp_path_factory.mktemp("summary") / "results.db"
    plan = build_plan(PlanConfig(manifest=tiny_manifest, seen=tiny_sample["rafdb"], unseen=tiny_sample["custom"],
                                 experiments=6, batch_size=EXPORT_BATCH, warmup=0, repeats=3, threads=1,
                                 models=("executorch-fp32", "executorch-int8-dynamic", "onnx-fp32")))
    with ResultsStore(db) as store:
        result = run_ablation(plan, store)
    assert result.status == "complete"
    return db, result.run_id


def test_summary_numbers_match_the_rows(small_run):
    db, run_id = small_run
    with ResultsStore(db) as store:
        summary = summarize_run(store, run_id)
        preds = store.rows(run_id, "predictions", model_key="executorch-int8-dynamic")
        lat = [r["latency_ms"] for r in store.rows(run_id, "latencies", model_key="executorch-fp32")]
        role = {e["experiment_index"]: e["dataset_role"] for e in store.rows(run_id, "experiments")}
    acc = {(r.model_key, r.dataset): r.accuracy for r in summary.accuracy}
    correct = [p["correct"] for p in preds]
    assert acc[("executorch-int8-dynamic", "all")].successes == sum(correct)
    assert acc[("executorch-int8-dynamic", "all")].n == 6 * EXPORT_BATCH
    seen = [p["correct"] for p in preds if role[p["experiment_index"]] == "seen"]
    assert acc[("executorch-int8-dynamic", "seen")].n == len(seen) == 3 * EXPORT_BATCH
    low, high = stats.wilson_interval(sum(correct), len(correct))
    assert (acc[("executorch-int8-dynamic", "all")].low, acc[("executorch-int8-dynamic", "all")].high) == (low, high)
    row = next(r for r in summary.latency if r.model_key == "executorch-fp32")
    assert row.per_batch.n == 6 * 3 and row.per_batch.median_ms == pytest.approx(statistics.median(lat))
    assert row.per_image.median_ms == pytest.approx(statistics.median(lat) / EXPORT_BATCH)
    pair = next(p for p in summary.int8_vs_fp32 if p.int8_key == "executorch-int8-dynamic")
    assert pair.fp32_key == "executorch-fp32" and pair.images == 6 * EXPORT_BATCH
    assert pair.mcnemar.n == pair.images and 0 <= pair.mcnemar.p_value <= 1
    assert pair.latency_ratio is not None and pair.latency_ratio.low <= pair.latency_ratio.ratio <= pair.latency_ratio.high
    assert pair.size_ratio < 1  # INT8 is smaller
    assert summary.across_targets == []  # one target
    text = format_summary(summary)
    assert "INT8 vs FP32" in text and "executorch-int8-dynamic vs executorch-fp32" in text
    json.dumps(summary.to_dict())  # JSON-ready


def test_results_cli(small_run, tmp_path):
    db, run_id = small_run
    runner = CliRunner()
    out = runner.invoke(cli, ["results", "list", "--db", str(db)])
    assert out.exit_code == 0 and run_id in out.output and "complete" in out.output
    out = runner.invoke(cli, ["results", "show", run_id[:10], "--db", str(db), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["run_id"] == run_id
    out = runner.invoke(cli, ["results", "export", "latest", "--db", str(db), "--format", "csv", "--out",
                              str(tmp_path / "csv")])
    assert out.exit_code == 0, out.output
    with open(tmp_path / "csv" / "predictions.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3 * 6 * EXPORT_BATCH
    out = runner.invoke(cli, ["results", "export", run_id, "--db", str(db), "--format", "json", "--out",
                              str(tmp_path / "json")])
    dump = json.loads((tmp_path / "json" / f"{run_id}.json").read_text())
    assert dump["run"]["status"] == "complete" and len(dump["latencies"]) == 3 * 6 * 3
    out = runner.invoke(cli, ["results", "show", "nope", "--db", str(db)])
    assert out.exit_code == 1 and "no run 'nope'" in out.output
    out = runner.invoke(cli, ["results", "list", "--db", str(tmp_path / "absent.db")])
    assert out.exit_code == 1 and "does not exist" in out.output
