"""Report warnings and multi-run layout, on stores written through the store's own API.

A real host run cannot show a GPU, a phone heating up or a throttled CPU, so these runs are built
row by row with ``ResultsStore``: a host-cpu, a host-cuda, a (real-looking) phone and the virtual
device, with temperatures rising and frequencies falling on the phone.
"""

from __future__ import annotations

import csv
import math

import pytest

from device_results import stats
from device_results.report import ReportConfig, load_report_data, write_report
from device_results.store import (
    ArtifactRecord,
    CellResult,
    ExperimentResult,
    ExperimentRow,
    PredictionRow,
    ResultsStore,
    TargetRecord,
    Telemetry,
    utc_now,
)

CLASSES = ["anger", "happy", "sad"]
MODELS = {"eager-fp32": ("eager", "fp32", "none", 5000), "executorch-fp32": ("executorch", "fp32", "none", 4000),
          "executorch-int8-dynamic": ("executorch", "int8", "dynamic", 1200)}
# (target, kind, virtual, per-image ms by model)
TARGETS = [
    ("host-cpu", "host-cpu", False, {"eager-fp32": 8.0, "executorch-fp32": 2.0, "executorch-int8-dynamic": 1.5}),
    ("host-cuda", "host-cuda", False, {"eager-fp32": 0.5}),
    ("android:PHONE1", "android", False, {"executorch-fp32": 20.0, "executorch-int8-dynamic": 12.0}),
    ("android:127.0.0.1:5555", "android", True, {"executorch-fp32": 2.1, "executorch-int8-dynamic": 1.6}),
]
N_EXP, BATCH, REPEATS = 6, 4, 3


def make_synthetic_run(store: ResultsStore, *, label: str, seed: int) -> str:
    arts = [ArtifactRecord(k, f, p, q, f"{k}.bin", size, (k[:1] * 64), {"quantization": {
        "layers_quantized": 10, "layers_total": 12}} if p == "int8" else {}) for k, (f, p, q, size) in MODELS.items()]
    exps = [ExperimentRow(i, "seen" if i % 2 == 0 else "unseen", "rafdb" if i % 2 == 0 else "custom",
                          tuple(f"img{i}-{j}" for j in range(BATCH)), tuple((i + j) % 3 for j in range(BATCH)),
                          tuple(MODELS)) for i in range(N_EXP)]
    run_id = store.create_run(plan={"seed": seed, "batch_size": BATCH, "repeats": REPEATS, "warmup": 1,
                                    "class_names": CLASSES, "datasets": [{"role": "seen", "name": "rafdb"}]},
                              artifacts=arts, experiments=exps, label=label)
    for target, kind, virtual, speeds in TARGETS:
        info = {"model": "Pixel 7", "soc": "Google Tensor G2", "abis": ["arm64-v8a"], "android_release": "14"} \
            if kind == "android" else {"cpu_model": "Test CPU", "cpu_count": 2}
        support = {m: None if m in speeds else "not supported on this target" for m in MODELS}
        # the virtual device serves its profile's constants (this machine has no thermal zones): not measured
        source = "profile constant" if virtual else ("sensor" if kind == "android" else "host sensor")
        store.add_target(run_id, TargetRecord(target, kind, virtual, info, {"executorch": "1.5.1"}, 2, None,
                                              "python" if kind.startswith("host") else "executor_runner under adb",
                                              thermal_source=source, freq_source=source),
                         model_support=support)
        for exp in exps:
            cells = []
            for order, model in enumerate(m for m in MODELS if m in speeds):
                hot = 1 + 0.1 * exp.experiment_index if target == "android:PHONE1" else 1.0
                lat = tuple(speeds[model] * BATCH * hot * (1 + 0.01 * r) for r in range(REPEATS))
                preds = tuple(PredictionRow(j, exp.image_ids[j], exp.labels[j],
                                            exp.labels[j] if (j + exp.experiment_index + order) % 3 else 0, 0.7)
                              for j in range(BATCH))
                now = utc_now()
                cells.append(CellResult(model, "ok", order, BATCH, 1, REPEATS, 2, None, "python", now, now, lat, preds))
            # the phone heats up and throttles; the virtual device's made-up readings do the same, and
            # must raise no warning, since they are not measurements
            phone = target in ("android:PHONE1", "android:127.0.0.1:5555")
            temp0 = 30.0 + (2.0 * exp.experiment_index if phone else 0.0)
            freq = 2_400_000 - (300_000 * exp.experiment_index if phone else 0)
            before = Telemetry({"cpu": temp0}, {"0": freq, "1": freq}, utc_now())
            after = Telemetry({"cpu": temp0 + 1}, {"0": freq, "1": freq}, utc_now())
            store.record_experiment(run_id, target, ExperimentResult(exp.experiment_index, utc_now(), utc_now(),
                                                                     tuple(cells), before, after))
    store.finish_run(run_id, "complete")
    return run_id


@pytest.fixture()
def synthetic_db(tmp_path):
    db = tmp_path / "results.db"
    with ResultsStore(db) as store:
        run_a = make_synthetic_run(store, label="lab-a", seed=0)
        run_b = make_synthetic_run(store, label="lab-b", seed=1)
    return db, run_a, run_b


def test_warnings_name_every_hazard(synthetic_db):
    db, run_a, _ = synthetic_db
    with ResultsStore(db) as store:
        data = load_report_data(store, [run_a], ReportConfig(bootstrap_resamples=200))
    kinds = {w.kind for w in data.warnings}
    assert {"virtual", "cross-hardware", "thermal", "frequency", "unsupported"} <= kinds
    text = " ".join(w.message for w in data.warnings)
    assert "GPU against the CPU" in text and "not quantization" in text
    thermal = [w for w in data.warnings if w.kind == "thermal"]
    assert [w.target for w in thermal] == ["android:PHONE1"]  # 30 C -> 41 C; the virtual one is not measured
    assert "30.0 C to 41.0 C" in thermal[0].message
    assert [w.target for w in data.warnings if w.kind == "frequency"] == ["android:PHONE1"]
    assert [w.target for w in data.warnings if w.kind == "virtual"] == ["android:127.0.0.1:5555"]
    # the original study's case: FP32 on the GPU vs INT8 on the CPU, present and flagged
    cross = [p for p in data.pairs if p.cross_hardware]
    assert len(cross) == 1 and cross[0].fp32_key == "eager-fp32" and cross[0].int8_key == "executorch-int8-dynamic"
    assert cross[0].latency_ratio.value == pytest.approx(1.5 / 0.5, rel=0.02)  # CPU INT8 / GPU FP32 per batch
    # phone/host ratio on the same artifact, labelled as different hardware
    phone = next(r for r in data.ratios if r.target == "android:PHONE1" and r.model_key == "executorch-fp32")
    assert phone.cross_hardware and "different hardware" in phone.note
    assert phone.ratio.value == pytest.approx(20.0 * 1.25 / 2.0 * 1.01 / 1.01, rel=0.05)
    virtual = next(r for r in data.ratios if r.target.startswith("android:127"))
    assert not virtual.cross_hardware and "virtual" in virtual.note


def test_variability_warning_uses_threshold(synthetic_db):
    db, run_a, _ = synthetic_db
    with ResultsStore(db) as store:
        calm = load_report_data(store, [run_a], ReportConfig(bootstrap_resamples=50, cv_threshold=0.5))
        strict = load_report_data(store, [run_a], ReportConfig(bootstrap_resamples=50, cv_threshold=0.05))
    assert not [w for w in calm.warnings if w.kind == "variability"]
    # only the heating phone's latencies vary by more than 5% (its batches slow down 10% per experiment)
    assert {w.target for w in strict.warnings if w.kind == "variability"} == {"android:PHONE1"}


def test_two_runs_side_by_side(synthetic_db, tmp_path):
    db, run_a, run_b = synthetic_db
    files = write_report(db, [run_a, run_b], tmp_path / "report", ReportConfig(bootstrap_resamples=100))
    labels = [t.label for t in files.data.targets]
    assert "host-cpu [lab-a]" in labels and "android:PHONE1 [lab-b]" in labels and len(labels) == 8
    page = files.html.read_text()
    assert "host-cpu [lab-a]" in page and "android:PHONE1 [lab-b]" in page and "(VIRTUAL)" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    with (files.out_dir / "latency.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    phone_b = next(r for r in rows if r["target"] == "android:PHONE1 [lab-b]" and r["model_key"] == "executorch-fp32")
    # every per-image latency of that cell: 20 ms x (1 + 0.1 e) x (1 + 0.01 r), e < 6, r < 3
    values = sorted(20.0 * (1 + 0.1 * e) * (1 + 0.01 * r) for e in range(N_EXP) for r in range(REPEATS))
    assert float(phone_b["median_ms_per_image"]) == pytest.approx((values[8] + values[9]) / 2)
    assert {p.name for p in files.png} >= {"latency_distribution.png", "latency_across_experiments.png"}


def test_order_statistic_interval_matches_textbook():
    # n = 10, median: the classic distribution-free 95% interval is [x(2), x(9)] (coverage 97.9%)
    iv = stats.order_statistic_interval(list(range(1, 11)), 0.5)
    assert (iv.value, iv.low, iv.high) == (5.5, 2.0, 9.0)
    assert math.isnan(stats.order_statistic_interval([1.0, 2.0, 3.0], 0.5).low)  # too few values for 95%
