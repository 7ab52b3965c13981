"""The report of a small REAL run (tiny timm model, real ExecuTorch export, the real ablation on
host-cpu), its numbers checked against the database with SQL written here independently."""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from device_results.report import ReportConfig, write_report
from emobench import cli
from tests.device_results.test_report_html import ARTIFACT_DIR, check_page_in_chromium
from tests.export.conftest import make_tiny_checkpoint

N_EXPERIMENTS, BATCH, REPEATS = 6, 4, 3


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, tiny_sample):
    """A real run: checkpoint -> ExecuTorch FP32 + dynamic INT8 -> 6 experiments on host-cpu."""
    from android_bench.ablation import RunOptions, run_ablation
    from android_bench.plan import PlanConfig, build_plan
    from device_results.store import ResultsStore
    from export.config import ExportConfig
    from export.pipeline import export_all

    root = tmp_path_factory.mktemp("real-run")
    ckpt = make_tiny_checkpoint(root / "checkpoint.pt", image_size=48)
    export_all(ckpt, root / "export", ExportConfig(formats=("executorch",), precisions=("fp32", "int8"),
                                                    int8_modes=("dynamic",), eval_data=tiny_sample["rafdb"],
                                                    eval_images=8))
    plan = build_plan(PlanConfig(manifest=root / "export" / "manifest.json", seen=tiny_sample["rafdb"],
                                 unseen=tiny_sample["custom"], targets=("host-cpu",), experiments=N_EXPERIMENTS,
                                 batch_size=BATCH, warmup=1, repeats=REPEATS, threads=1))
    db = root / "results.db"
    with ResultsStore(db) as store:
        result = run_ablation(plan, store, RunOptions(log_root=root / "logs"))
    assert result.status == "complete", result.message
    files = write_report(db, [result.run_id], root / "report", ReportConfig(bootstrap_resamples=300))
    return db, result.run_id, files


def _sql(db: Path, query: str, *args):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(query, args).fetchall()
    finally:
        conn.close()


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _manifest_path(real_run) -> str:
    db, run_id, _ = real_run
    return json.loads(_sql(db, "SELECT plan_json FROM runs WHERE run_id = ?", run_id)[0][0])["manifest_path"]


def _csv(files, name):
    with (files.out_dir / f"{name}.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_accuracy_matches_sql(real_run):
    db, run_id, files = real_run
    rows = _sql(db, "SELECT p.model_key, e.dataset_role, sum(p.correct), count(*) FROM predictions p JOIN experiments e"
                    " ON e.run_id = p.run_id AND e.experiment_index = p.experiment_index WHERE p.run_id = ?"
                    " GROUP BY p.model_key, e.dataset_role", run_id)
    assert {r[0] for r in rows} == {"eager-fp32", "executorch-fp32", "executorch-int8-dynamic"}
    table = {(r["model_key"], r["role"]): r for r in _csv(files, "accuracy")}
    for model, role, correct, n in rows:
        got = table[(model, role)]
        assert (int(got["correct"]), int(got["n"])) == (correct, n) and n == N_EXPERIMENTS // 2 * BATCH
        assert float(got["accuracy"]) == pytest.approx(correct / n)
        assert float(got["low"]) <= correct / n <= float(got["high"])
    total = {(r["model_key"]): r for r in _csv(files, "accuracy") if r["role"] == "all"}
    for model in total:
        correct, n = _sql(db, "SELECT sum(correct), count(*) FROM predictions WHERE run_id = ? AND model_key = ?",
                          run_id, model)[0]
        assert (int(total[model]["correct"]), int(total[model]["n"])) == (correct, n) == (correct, N_EXPERIMENTS * BATCH)


def test_latency_matches_sql(real_run):
    db, run_id, files = real_run
    rows = _sql(db, "SELECT l.model_key, l.latency_ms / c.batch_size FROM latencies l JOIN cells c USING"
                    " (run_id, target_id, experiment_index, model_key) WHERE l.run_id = ?", run_id)
    per_image = defaultdict(list)
    for model, ms in rows:
        per_image[model].append(ms)
    table = {r["model_key"]: r for r in _csv(files, "latency")}
    assert set(table) == set(per_image)
    for model, values in per_image.items():
        assert len(values) == N_EXPERIMENTS * REPEATS
        got = table[model]
        assert float(got["median_ms_per_image"]) == pytest.approx(_median(values), rel=1e-12)
        assert float(got["median_low"]) <= _median(values) <= float(got["median_high"])
        assert int(got["n_repeats"]) == len(values) and int(got["n_experiments"]) == N_EXPERIMENTS
        # the page shows the same median, rounded as the table prints it
        view = files.data.latency("host-cpu", model)
        assert view.per_image_median_ms.value == pytest.approx(_median(values))


def test_fp32_vs_int8_matches_sql(real_run):
    db, run_id, files = real_run
    pair = next(r for r in _csv(files, "fp32_vs_int8") if r["int8_key"] == "executorch-int8-dynamic")
    assert pair["fp32_key"] == "executorch-fp32" and pair["cross_hardware"] == "0"
    joined = _sql(db, "SELECT a.correct, b.correct, a.prediction = b.prediction FROM predictions a JOIN predictions b"
                      " ON a.run_id = b.run_id AND a.target_id = b.target_id AND a.experiment_index ="
                      " b.experiment_index AND a.position = b.position WHERE a.run_id = ? AND a.model_key ="
                      " 'executorch-fp32' AND b.model_key = 'executorch-int8-dynamic'", run_id)
    assert len(joined) == N_EXPERIMENTS * BATCH == int(pair["n_images"])
    only_fp32 = sum(1 for a, b, _ in joined if a and not b)
    only_int8 = sum(1 for a, b, _ in joined if b and not a)
    assert (int(pair["only_fp32_correct"]), int(pair["only_int8_correct"])) == (only_fp32, only_int8)
    assert float(pair["agreement"]) == pytest.approx(sum(s for *_, s in joined) / len(joined))
    # exact McNemar by hand: two-sided binomial tail on the discordant pairs
    n, k = only_fp32 + only_int8, min(only_fp32, only_int8)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    assert float(pair["mcnemar_p"]) == pytest.approx(p)
    sizes = dict(_sql(db, "SELECT model_key, size_bytes FROM artifacts WHERE run_id = ?", run_id))
    assert float(pair["size_ratio"]) == pytest.approx(sizes["executorch-int8-dynamic"] / sizes["executorch-fp32"])
    # latency ratio: medians of the per-experiment median batch latencies, paired by experiment
    lat = defaultdict(lambda: defaultdict(list))
    for model, exp, ms in _sql(db, "SELECT model_key, experiment_index, latency_ms FROM latencies WHERE run_id = ?",
                               run_id):
        lat[model][exp].append(ms)
    int8 = _median([_median(v) for v in lat["executorch-int8-dynamic"].values()])
    fp32 = _median([_median(v) for v in lat["executorch-fp32"].values()])
    assert float(pair["latency_ratio"]) == pytest.approx(int8 / fp32)
    assert float(pair["latency_ratio_low"]) <= float(pair["latency_ratio"]) <= float(pair["latency_ratio_high"])


def test_per_experiment_and_per_class_match_sql(real_run):
    db, run_id, files = real_run
    rows = _csv(files, "experiments")
    assert [int(r["experiment_index"]) for r in rows] == list(range(N_EXPERIMENTS))
    assert [r["role"] for r in rows] == ["seen", "unseen"] * (N_EXPERIMENTS // 2)  # alternating, seen first
    by_exp = dict(_sql(db, "SELECT experiment_index, sum(correct) FROM predictions WHERE run_id = ? AND model_key ="
                           " 'executorch-fp32' GROUP BY experiment_index", run_id))
    assert {int(r["experiment_index"]): int(r["fp32_correct"]) for r in rows} == by_exp
    cm = Counter({(label, pred): n for label, pred, n in _sql(
        db, "SELECT label, prediction, count(*) FROM predictions WHERE run_id = ? AND model_key = 'eager-fp32'"
            " GROUP BY label, prediction", run_id)})
    view = next(c for c in files.data.per_class if c.model_key == "eager-fp32")
    matrix = view.metrics["confusion_matrix"]
    assert {(i, j): v for i, row in enumerate(matrix) for j, v in enumerate(row) if v} == dict(cm)
    per_class = [r for r in _csv(files, "per_class") if r["model_key"] == "eager-fp32"]
    assert sum(int(r["support"]) for r in per_class) == N_EXPERIMENTS * BATCH


def test_report_files_and_page(real_run):
    _, run_id, files = real_run
    assert {p.name for p in files.csv} >= {"targets.csv", "artifacts.csv", "latency.csv", "accuracy.csv",
                                           "fp32_vs_int8.csv", "experiments.csv", "per_class.csv"}
    for png in files.png:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    page = files.html.read_text()
    assert page.count("data:image/png;base64,") == len(files.png)
    assert run_id in page and "executorch-int8-dynamic" in page
    assert "src=\"http" not in page and "<link" not in page and "<script" not in page
    md = files.markdown.read_text()
    assert "| model | format | precision |" in md and "latency_distribution.png" in md
    # layers quantized come from the run's manifest (the artifact rows do not carry them)
    plan_manifest = json.loads(Path(_manifest_path(real_run)).read_text())
    int8 = next(a for a in plan_manifest["artifacts"] if a["precision"] == "int8")
    arts = {a["model_key"]: a for a in _csv(files, "artifacts")}
    assert int(arts["executorch-int8-dynamic"]["layers_quantized"]) == int8["quantization"]["layers_quantized"] > 0
    assert arts["executorch-fp32"]["layers_quantized"] == ""
    targets = _csv(files, "targets")
    assert [t["target_id"] for t in targets] == ["host-cpu"] and "executorch" in targets[0]["library_versions"]


def test_cli_report_and_errors(real_run, tmp_path):
    db, run_id, _ = real_run
    runner = CliRunner()
    out = tmp_path / "cli-report"
    result = runner.invoke(cli, ["report", run_id[:12], "--db", str(db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Report: {out / 'report.html'}" in result.output and "eager-fp32" in result.output
    assert (out / "report.html").is_file()
    # a second report into the same folder replaces the first
    assert runner.invoke(cli, ["report", "latest", "--db", str(db), "--out", str(out)]).exit_code == 0
    missing = runner.invoke(cli, ["report", "x", "--db", str(tmp_path / "none.db"), "--out", str(out)])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    unknown = runner.invoke(cli, ["report", "nosuchrun", "--db", str(db), "--out", str(tmp_path / "o2")])
    assert unknown.exit_code == 1 and "holds no run 'nosuchrun'" in unknown.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    clash = runner.invoke(cli, ["report", run_id, "--db", str(db), "--out", str(foreign)])
    assert clash.exit_code == 1 and "holds no emobench report" in clash.output
    assert (foreign / "notes.txt").read_text() == "mine"


def test_real_report_loads_cleanly_in_chromium(real_run):
    _, _, files = real_run
    seen = check_page_in_chromium(files.html, ARTIFACT_DIR / "report.png")
    assert len(seen["images"]) == len(files.png)
