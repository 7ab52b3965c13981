"""Loading a report: read runs from the results store into the views of ``device_results.report.views``.

``load_report_data(store, run_ids, config)`` does all the reading and all the arithmetic (through
``device_results.stats``); the table, plot and HTML modules only lay out what it returns. Nothing
here writes files or prints.

Definitions the report quotes:

- **Per-image latency** of a timed repeat = the repeat's batch latency / the batch size.
- **Intervals of a median or p90** are distribution-free order-statistic intervals (exact binomial
  coverage >= 95% when the timed repeats are independent); repeats of one batch are correlated, so
  read them as a lower bound on the true uncertainty.
- **Ratios of latency** (INT8/FP32 on one target, a target against the reference host) are ratios of
  medians with a seeded percentile-bootstrap 95% interval: paired by experiment when both sides ran
  the same experiments of one run, unpaired otherwise.
- **Accuracy** intervals are Wilson 95% intervals; **McNemar** is the exact two-sided test on the
  paired correctness of the same images.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from device_results import stats, summary
from device_results.overlap import overlap_warnings
from device_results.report.cautions import report_warnings
from device_results.report.cells import TargetCells, hottest, load_target_cells, mean_freq_mhz, median
from device_results.report.views import (
    AccuracyView,
    AgreementView,
    ArtifactView,
    ClassView,
    ExperimentRowView,
    Interval,
    LatencyView,
    PairView,
    RatioView,
    ReportConfig,
    ReportData,
    RunView,
    TargetView,
    ThermalPoint,
)
from device_results.store import ResultsStore, RunRow
from emobench_common.names import EAGER_KEY

log = logging.getLogger(__name__)

_KIND_ORDER = {"host-cpu": 0, "host-cuda": 1, "android": 2}


def _describe(kind: str, info: Mapping[str, Any], is_virtual: bool) -> tuple[tuple[str, str], ...]:
    """The lines a reader wants about a device or host (the CSV keeps everything it recorded)."""
    wanted = (
        ("model", ("model",)), ("manufacturer", ("manufacturer",)), ("SoC", ("soc",)), ("ABI", ("abi", "abis")),
        ("Android", ("android_release",)), ("SDK", ("sdk",)), ("CPU", ("cpu", "cpu_model", "processor")),
        ("CPU cores", ("cpu_cores", "cpu_count")), ("GPU", ("gpu", "cuda_device", "gpu_name")),
        ("RAM", ("ram_bytes", "memory_bytes")), ("OS", ("os", "platform")), ("kernel", ("kernel",)),
        ("serial", ("serial",)),
    )
    out: list[tuple[str, str]] = []
    used: set[str] = set()
    for label, keys in wanted:
        for key in keys:
            value = info.get(key)
            if value not in (None, "", [], {}):
                if label == "RAM" and isinstance(value, int | float):
                    text = f"{value / 2**30:.1f} GiB"
                else:
                    text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
                out.append((label, text))
                used.update(keys)
                break
    if is_virtual:
        out.insert(0, ("virtual", "yes: a virtual device running on the host CPU, not a phone"))
    return tuple(out)


def _target_labels(runs: Sequence[RunRow], target_rows: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[tuple[str, str], str]:
    several = len(runs) > 1
    labels: dict[tuple[str, str], str] = {}
    for run_id, row in target_rows:
        label = row["target_id"]
        if several:
            run = next(r for r in runs if r.run_id == run_id)
            label = f"{label} [{run.label or run.run_id}]"
        labels[(run_id, row["target_id"])] = label
    return labels


def _run_view(run: RunRow, n_experiments: int) -> RunView:
    plan = run.plan or {}
    datasets = tuple((str(d.get("role", "")), str(d.get("name", ""))) for d in plan.get("datasets", ()) if isinstance(d, Mapping))
    return RunView(run_id=run.run_id, label=run.label or run.run_id, status=run.status,
                   status_message=run.status_message, created_at=run.created_at, finished_at=run.finished_at,
                   experiments=n_experiments, batch_size=plan.get("batch_size"), repeats=plan.get("repeats"),
                   warmup=plan.get("warmup"), seed=plan.get("seed"), datasets=datasets)


def _manifest_artifacts(plan: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(model key, artifact entry) from the run's export manifest, when it is still on disk (else none)."""
    path = plan.get("manifest_path") if isinstance(plan, Mapping) else None
    try:
        manifest = json.loads(Path(str(path)).read_text()) if path else {}
    except (OSError, ValueError):
        return []
    artifacts = manifest.get("artifacts", []) if isinstance(manifest, Mapping) else []
    return [(f"{art.get('format')}-{art.get('precision')}" + (f"-{art['mode']}" if art.get("mode") else ""), art)
            for art in artifacts if isinstance(art, Mapping)]


def _manifest_layer_counts(plan: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """model key -> (layers quantized, layers total) from the run's export manifest, when it is still on disk."""
    out = {}
    for key, art in _manifest_artifacts(plan):
        quant = art.get("quantization")
        if isinstance(quant, Mapping) and "layers_quantized" in quant:
            out[key] = (int(quant["layers_quantized"]), int(quant.get("layers_total", 0)))
    return out


def _manifest_parity(plan: Mapping[str, Any]) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """model key -> (sha256, parity) from the run's export manifest, when it is still on disk."""
    return {key: (str(art.get("sha256", "")), art["parity"]) for key, art in _manifest_artifacts(plan)
            if isinstance(art.get("parity"), Mapping)}


def _artifact_view(run_id: str, row: Mapping[str, Any], layers: Mapping[str, tuple[int, int]],
                   parities: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None) -> ArtifactView:
    entry = json.loads(row["entry_json"] or "{}")
    quant = entry.get("quantization") if isinstance(entry, Mapping) else None
    quant = quant if isinstance(quant, Mapping) else {}
    if not quant and row["model_key"] in layers:
        quant = dict(zip(("layers_quantized", "layers_total"), layers[row["model_key"]], strict=True))
    # the parity the run recorded; else the manifest's, if it still describes this very file
    parity = entry.get("parity") if isinstance(entry, Mapping) else None
    if not isinstance(parity, Mapping):
        sha, found = (parities or {}).get(row["model_key"], ("", None))
        parity = found if sha == row["sha256"] else None
    return ArtifactView(run_id=run_id, model_key=row["model_key"], format=row["format"], precision=row["precision"],
                        quantization=row["quantization"], size_bytes=int(row["size_bytes"]), sha256=row["sha256"],
                        layers_quantized=quant.get("layers_quantized"), layers_total=quant.get("layers_total"),
                        parity=parity)


def _target_ratio(num: TargetCells, den: TargetCells, model_key: str, config: ReportConfig, paired: bool) -> Interval | None:
    """Median per-image latency of one model on ``num`` over ``den``, with a bootstrap interval.

    Targets of one run ran the same experiments: the per-experiment medians are resampled in pairs.
    Targets of different runs are resampled independently over every timed repeat.
    """
    def per_image(cells: TargetCells) -> dict[int, list[float]]:
        return {e: [ms / cells.batch_size.get((model_key, e), 1) for ms in reps]
                for e, reps in cells.batch_ms.get(model_key, {}).items() if reps}

    a, b = per_image(num), per_image(den)
    if paired:
        common = sorted(set(a) & set(b))
        xs, ys = [median(a[e]) for e in common], [median(b[e]) for e in common]
    else:
        xs, ys = [v for vs in a.values() for v in vs], [v for vs in b.values() for v in vs]
    if not xs or not ys:
        return None
    try:
        return _iv(stats.bootstrap_ratio_ci(xs, ys, n_resamples=config.bootstrap_resamples, seed=config.seed,
                                            paired=paired))
    except stats.StatsError:
        return None


def _iv(p: stats.Proportion | stats.RatioInterval) -> Interval:
    if isinstance(p, stats.RatioInterval):
        return Interval(p.ratio, p.low, p.high)
    return Interval(p.value, p.low, p.high)


def _latency_view(cells: TargetCells, row: summary.LatencyRow) -> LatencyView:
    """``summary``'s latency statistics plus order-statistic intervals over the raw per-image values."""
    per_exp = cells.batch_ms.get(row.model_key, {})
    per_image = [ms / cells.batch_size.get((row.model_key, exp), row.batch_size)
                 for exp, reps in sorted(per_exp.items()) for ms in reps]
    median = stats.order_statistic_interval(per_image, 0.5)
    p90 = stats.order_statistic_interval(per_image, 0.9)
    return LatencyView(
        target=cells.target.label, model_key=row.model_key, n_repeats=row.per_batch.n, n_experiments=len(per_exp),
        per_image_median_ms=Interval(row.per_image.median_ms, median.low, median.high),
        per_image_p90_ms=Interval(row.per_image.p90_ms, p90.low, p90.high),
        per_image_mean_ms=row.per_image.mean_ms, batch_median_ms=row.per_batch.median_ms, batch_cv=row.per_batch.cv,
        per_image_ms=tuple(per_image))


def _ratio_note(target: TargetView, reference: TargetView) -> tuple[bool, str]:
    cross = target.hardware != reference.hardware
    if target.is_virtual:
        return cross, "virtual device: runs on the host CPU, so this is not a phone measurement"
    if cross:
        return cross, f"different hardware ({target.hardware} vs {reference.target_id}'s {reference.hardware}), same artifact"
    return cross, "same hardware"


def _pair_view(row: summary.PairRow, label: str, acc: Mapping[tuple[str, str, str], Interval]) -> PairView:
    by_role = {role: acc[(row.target_id, row.fp32_key, role)] for role in ("seen", "unseen", "all")
               if (row.target_id, row.fp32_key, role) in acc}
    by_role_int8 = {role: acc[(row.target_id, row.int8_key, role)] for role in ("seen", "unseen", "all")
                    if (row.target_id, row.int8_key, role) in acc}
    return PairView(target=label, fp32_key=row.fp32_key, int8_key=row.int8_key, n_images=row.images,
                    fp32_accuracy=by_role, int8_accuracy=by_role_int8, agreement=_iv(row.agreement),
                    only_fp32_correct=row.mcnemar.only_a_correct, only_int8_correct=row.mcnemar.only_b_correct,
                    mcnemar_p=row.mcnemar.p_value,
                    latency_ratio=_iv(row.latency_ratio) if row.latency_ratio else None, size_ratio=row.size_ratio)


def _fp32_twin(int8_key: str, keys: Sequence[str], formats: Mapping[str, str],
               precisions: Mapping[str, str]) -> str | None:
    fmt = formats.get(int8_key)
    return next((k for k in keys if formats.get(k) == fmt and precisions.get(k) == "fp32"), None) or (
        EAGER_KEY if EAGER_KEY in keys else None)


def _thermal(cells: TargetCells, models: Sequence[str]) -> tuple[ThermalPoint, ...]:
    indices = sorted({e for m in models for e in cells.batch_ms.get(m, {})} | set(cells.telemetry))
    points = []
    for exp in indices:
        tel = cells.telemetry.get(exp, {})
        points.append(ThermalPoint(
            experiment_index=exp,
            batch_ms_by_model={m: median(cells.batch_ms[m][exp]) for m in models if cells.batch_ms.get(m, {}).get(exp)},
            temp_before_c=hottest(tel.get("before")), temp_after_c=hottest(tel.get("after")),
            freq_before_mhz=mean_freq_mhz(tel.get("before")), freq_after_mhz=mean_freq_mhz(tel.get("after"))))
    return tuple(points)


def load_report_data(store: ResultsStore, run_ids: Sequence[str], config: ReportConfig | None = None) -> ReportData:
    """Read runs from the store and compute every table the report shows.

    Args:
        store: an open results store.
        run_ids: run ids (or unique prefixes, or ``latest``), in the order they should appear.
        config: thresholds and bootstrap settings.

    Raises:
        RunNotFoundError: a run id that the store does not hold.
        StoreError: a run holds no targets at all (nothing ran).
    """
    from training.metrics import classification_metrics

    config = config or ReportConfig()
    resolved = list(dict.fromkeys(store.resolve_run_id(r) for r in run_ids))
    runs = [store.get_run(r) for r in resolved]
    target_rows = [(r.run_id, row) for r in runs for row in sorted(
        store.rows(r.run_id, "targets"), key=lambda row: (_KIND_ORDER.get(row["kind"], 9), bool(row["is_virtual"]),
                                                          row["target_id"]))]
    labels = _target_labels(runs, target_rows)

    run_views: list[RunView] = []
    targets: list[TargetView] = []
    artifacts: list[ArtifactView] = []
    all_cells: list[TargetCells] = []
    experiments_by_run: dict[str, dict[int, Mapping[str, Any]]] = {}
    class_names: tuple[str, ...] = ()
    for run in runs:
        exps = store.rows(run.run_id, "experiments")
        experiments_by_run[run.run_id] = {e["experiment_index"]: e for e in exps}
        run_views.append(_run_view(run, len(exps)))
        layers = _manifest_layer_counts(run.plan)
        parities = _manifest_parity(run.plan)
        artifacts.extend(_artifact_view(run.run_id, a, layers, parities) for a in store.rows(run.run_id, "artifacts"))
        if not class_names:
            class_names = tuple((run.plan.get("input_spec") or run.plan).get("class_names", ()))
        support = defaultdict(list)
        for tm in store.rows(run.run_id, "target_models"):
            if not tm["supported"]:
                support[tm["target_id"]].append((tm["model_key"], tm["reason"]))
        for _, row in (tr for tr in target_rows if tr[0] == run.run_id):
            info = json.loads(row["info_json"])
            versions = json.loads(row["library_versions_json"])
            tv = TargetView(
                run_id=run.run_id, target_id=row["target_id"], label=labels[(run.run_id, row["target_id"])],
                kind=row["kind"], is_virtual=bool(row["is_virtual"]),
                description=_describe(row["kind"], info, bool(row["is_virtual"])),
                library_versions=tuple(sorted((str(k), str(v)) for k, v in versions.items())),
                threads=row["threads"], affinity_mask=row["affinity_mask"], how_obtained=row["how_obtained"],
                unsupported=tuple(support.get(row["target_id"], ())), info_json=row["info_json"],
                thermal_source=row.get("thermal_source") or "not recorded",
                freq_source=row.get("freq_source") or "not recorded")
            targets.append(tv)
            all_cells.append(load_target_cells(store, run.run_id, tv))

    formats = {a.model_key: a.format for a in artifacts}
    precisions = {a.model_key: a.precision for a in artifacts}
    model_keys = tuple(dict.fromkeys(a.model_key for a in artifacts))
    if not class_names:
        top = max((p[0] for c in all_cells for m in c.predictions.values() for p in m.values()), default=-1)
        class_names = tuple(str(i) for i in range(top + 1))

    cells_of = {(c.target.run_id, c.target.target_id): c for c in all_cells}
    summaries = {run.run_id: summary.summarize_run(store, run.run_id) for run in runs}
    reference = next((c for c in all_cells if c.target.kind == "host-cpu"), None)

    accuracies: list[AccuracyView] = []
    latencies: list[LatencyView] = []
    pairs: list[PairView] = []
    ratios: list[RatioView] = []
    agreements: list[AgreementView] = []
    for run_id, s in summaries.items():
        acc: dict[tuple[str, str, str], Interval] = {}
        for acc_row in s.accuracy:
            acc[(acc_row.target_id, acc_row.model_key, acc_row.dataset)] = _iv(acc_row.accuracy)
            accuracies.append(AccuracyView(labels[(run_id, acc_row.target_id)], acc_row.model_key, acc_row.dataset,
                                           acc_row.accuracy.successes, acc_row.accuracy.n, _iv(acc_row.accuracy)))
        latencies.extend(_latency_view(cells_of[(run_id, lat.target_id)], lat) for lat in s.latency)
        pairs.extend(_pair_view(pair, labels[(run_id, pair.target_id)], acc) for pair in s.int8_vs_fp32)
        for across in s.across_targets:
            agreements.append(AgreementView(across.model_key, labels[(run_id, across.reference_target)],
                                            labels[(run_id, across.other_target)], _iv(across.agreement),
                                            across.images, across.max_abs_logit_diff))
    if reference is not None:  # every other target against host-cpu, on the same artifact (same sha256)
        ref_sha = {a.model_key: a.sha256 for a in artifacts if a.run_id == reference.target.run_id}
        for c in all_cells:
            if c is reference:
                continue
            sha = {a.model_key: a.sha256 for a in artifacts if a.run_id == c.target.run_id}
            same_run = c.target.run_id == reference.target.run_id
            for m in model_keys:
                if m in sha and sha[m] == ref_sha.get(m) and (got := _target_ratio(c, reference, m, config, same_run)):
                    cross, note = _ratio_note(c.target, reference.target)
                    ratios.append(RatioView(c.target.label, reference.target.label, m, got, same_run, cross, note))
    order = {t.label: i for i, t in enumerate(targets)}

    def by_target(item) -> tuple[int, int]:
        return order.get(item.target, len(order)), model_keys.index(item.model_key) if item.model_key in model_keys else 0

    for items in (ratios, accuracies, latencies):
        items.sort(key=by_target)
    pairs.sort(key=lambda p: order.get(p.target, len(order)))

    experiment_rows: list[ExperimentRowView] = []
    per_class: list[ClassView] = []
    thermal: dict[str, tuple[ThermalPoint, ...]] = {}
    for c in all_cells:
        ran = [m for m in model_keys if c.predictions.get(m) or c.batch_ms.get(m)]
        for m in ran:
            preds = c.predictions.get(m, {})
            if preds:
                ordered = [preds[k] for k in sorted(preds)]
                per_class.append(ClassView(c.target.label, m, classification_metrics(
                    [p[0] for p in ordered], [p[1] for p in ordered], class_names)))
        headline = _headline_pair(pairs, c.target.label, config.headline_format, formats)
        if headline is not None:
            experiment_rows.extend(_experiment_rows(c, headline, experiments_by_run[c.target.run_id]))
        thermal[c.target.label] = _thermal(c, ran)

    pairs.extend(_cross_hardware_pairs(all_cells, model_keys, formats, precisions, artifacts, config))
    warnings = report_warnings(all_cells, targets, latencies, pairs, runs, config, artifacts=artifacts)
    warnings += overlap_warnings(store, targets)  # targets that shared hardware while running at once (issue 16)
    return ReportData(
        config=config, db_path=str(store.path), runs=tuple(run_views), targets=tuple(targets),
        artifacts=tuple(artifacts), class_names=class_names, model_keys=model_keys, latencies=tuple(latencies),
        ratios=tuple(ratios), accuracies=tuple(accuracies), pairs=tuple(pairs),
        experiment_rows=tuple(experiment_rows), thermal=thermal, per_class=tuple(per_class),
        agreements=tuple(agreements), warnings=tuple(warnings),
        reference_target=reference.target.label if reference else None)


def _headline_pair(pairs: Sequence[PairView], target: str, fmt: str, formats: Mapping[str, str]) -> PairView | None:
    mine = [p for p in pairs if p.target == target and not p.cross_hardware]
    for p in mine:
        if formats.get(p.int8_key) == fmt and formats.get(p.fp32_key) == fmt:
            return p
    return mine[0] if mine else None


def _experiment_rows(cells: TargetCells, pair: PairView, experiments: Mapping[int, Mapping[str, Any]]) -> list[ExperimentRowView]:
    rows = []
    for index in sorted(experiments):
        exp = experiments[index]

        def correct(model: str, index: int = index) -> int | None:
            preds = [v for k, v in cells.predictions.get(model, {}).items() if k[0] == index]
            return sum(1 for label, pred in preds if label == pred) if preds else None

        def batch_ms(model: str, index: int = index) -> float | None:
            reps = cells.batch_ms.get(model, {}).get(index)
            return median(reps) if reps else None

        rows.append(ExperimentRowView(
            target=cells.target.label, fp32_key=pair.fp32_key, int8_key=pair.int8_key, experiment_index=index,
            role=exp["dataset_role"], dataset=exp["dataset_name"], n_images=len(json.loads(exp["image_ids_json"])),
            fp32_correct=correct(pair.fp32_key), int8_correct=correct(pair.int8_key),
            fp32_batch_ms=batch_ms(pair.fp32_key), int8_batch_ms=batch_ms(pair.int8_key)))
    return rows


def _cross_hardware_pairs(all_cells: Sequence[TargetCells], model_keys: Sequence[str], formats: Mapping[str, str],
                          precisions: Mapping[str, str], artifacts: Sequence[ArtifactView],
                          config: ReportConfig) -> list[PairView]:
    """The original study's comparison, FP32 on the GPU against INT8 on the CPU, labelled for what it is."""
    out = []
    for gpu in (c for c in all_cells if c.target.kind == "host-cuda"):
        cpu = next((c for c in all_cells if c.target.kind == "host-cpu" and c.target.run_id == gpu.target.run_id), None)
        if cpu is None:
            continue
        sizes = {a.model_key: a.size_bytes for a in artifacts if a.run_id == gpu.target.run_id}
        for int8 in (m for m in model_keys if precisions.get(m) == "int8" and cpu.batch_ms.get(m)):
            fp32 = _fp32_twin(int8, [m for m in model_keys if gpu.batch_ms.get(m)], formats, precisions)
            if fp32 is None:
                continue
            a = {e: median(r) for e, r in gpu.batch_ms[fp32].items() if r}
            b = {e: median(r) for e, r in cpu.batch_ms[int8].items() if r}
            common = sorted(set(a) & set(b))
            if not common:
                continue
            r = stats.bootstrap_ratio_ci([b[i] for i in common], [a[i] for i in common],
                                         n_resamples=config.bootstrap_resamples, seed=config.seed, paired=True)
            label = f"{fp32} on {gpu.target.label} vs {int8} on {cpu.target.label}"
            out.append(PairView(
                target=label, fp32_key=fp32, int8_key=int8, n_images=0, fp32_accuracy={}, int8_accuracy={},
                agreement=Interval(math.nan, math.nan, math.nan), only_fp32_correct=0, only_int8_correct=0,
                mcnemar_p=math.nan, latency_ratio=Interval(r.ratio, r.low, r.high),
                size_ratio=sizes[int8] / sizes[fp32] if sizes.get(fp32) and int8 in sizes else None,
                cross_hardware=True,
                note="DIFFERENT HARDWARE: FP32 on the GPU against INT8 on the CPU, as the original study did. "
                     "This ratio measures the GPU against the CPU, not quantization; use the same-target rows."))
    return out
