"""Computations over one stored run: what reports and the CLI show.

- accuracy per target and model, overall and per dataset role (seen / unseen), with Wilson 95%;
- latency per batch (each timed repeat of a whole batch) and per image (batch latency / batch size),
  median, p90, p99, mean, std, CV;
- INT8 vs FP32 on the same target and format: top-1 agreement, McNemar's exact test on the paired
  correctness, accuracy difference, latency ratio (INT8 / FP32 of the per-experiment median batch
  latency, paired by experiment) with a seeded bootstrap interval, and the file size ratio;
- the same artifact across targets: latency ratio (other / first target) with its bootstrap
  interval, top-1 agreement and the largest logit difference.

Only successful cells enter the statistics; failed cells are counted and listed. Pure reading: the
store is never written.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from device_results import stats
from device_results.store import ResultsStore

BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class AccuracyRow:
    target_id: str
    model_key: str
    dataset: str  # 'all', 'seen' or 'unseen'
    accuracy: stats.Proportion


@dataclass(frozen=True)
class LatencyRow:
    target_id: str
    model_key: str
    batch_size: int
    per_batch: stats.LatencySummary
    per_image: stats.LatencySummary


@dataclass(frozen=True)
class PairRow:
    """INT8 vs FP32 (same target, same format)."""

    target_id: str
    fp32_key: str
    int8_key: str
    images: int
    agreement: stats.Proportion
    mcnemar: stats.McNemarResult
    fp32_accuracy: stats.Proportion
    int8_accuracy: stats.Proportion
    latency_ratio: stats.RatioInterval | None
    size_ratio: float | None


@dataclass(frozen=True)
class CrossTargetRow:
    """One artifact on two targets."""

    model_key: str
    reference_target: str
    other_target: str
    images: int
    agreement: stats.Proportion
    max_abs_logit_diff: float | None
    latency_ratio: stats.RatioInterval | None


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    status: str
    targets: list[dict[str, Any]]
    accuracy: list[AccuracyRow]
    latency: list[LatencyRow]
    int8_vs_fp32: list[PairRow]
    across_targets: list[CrossTargetRow]
    failed_cells: list[dict[str, Any]]
    unsupported: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become None."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    return obj


def _by_cell(store: ResultsStore, run_id: str, table: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in store.rows(run_id, table):
        out[(row["target_id"], row["model_key"])].append(row)
    return out


def _role_of(store: ResultsStore, run_id: str) -> dict[int, str]:
    return {r["experiment_index"]: r["dataset_role"] for r in store.rows(run_id, "experiments")}


def accuracy_rows(store: ResultsStore, run_id: str) -> list[AccuracyRow]:
    """Accuracy per (target, model), overall and per dataset role, with Wilson intervals."""
    role = _role_of(store, run_id)
    rows: list[AccuracyRow] = []
    for (target, model), preds in sorted(_by_cell(store, run_id, "predictions").items()):
        rows.append(AccuracyRow(target, model, "all", stats.accuracy([p["correct"] for p in preds])))
        for r in ("seen", "unseen"):
            subset = [p["correct"] for p in preds if role.get(p["experiment_index"]) == r]
            if subset:
                rows.append(AccuracyRow(target, model, r, stats.accuracy(subset)))
    return rows


def latency_rows(store: ResultsStore, run_id: str) -> list[LatencyRow]:
    """Latency per batch and per image for every (target, model) with timings."""
    batch_of = {(c["target_id"], c["model_key"]): c["batch_size"] for c in store.rows(run_id, "cells", status="ok")}
    rows = []
    for (target, model), lat in sorted(_by_cell(store, run_id, "latencies").items()):
        values = [r["latency_ms"] for r in lat]
        batch = int(batch_of.get((target, model), 1))
        rows.append(LatencyRow(target, model, batch, stats.latency_summary(values),
                               stats.latency_summary([v / batch for v in values])))
    return rows


def _per_experiment_median(store: ResultsStore, run_id: str) -> dict[tuple[str, str], dict[int, float]]:
    grouped: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in store.rows(run_id, "latencies"):
        grouped[(r["target_id"], r["model_key"])][r["experiment_index"]].append(r["latency_ms"])
    return {k: {e: statistics.median(v) for e, v in d.items()} for k, d in grouped.items()}


def _paired_ratio(num: dict[int, float], den: dict[int, float]) -> stats.RatioInterval | None:
    common = sorted(set(num) & set(den))
    if not common:
        return None
    try:
        return stats.bootstrap_ratio_ci([num[e] for e in common], [den[e] for e in common], paired=True,
                                        n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
    except stats.StatsError:
        return None


def _paired_predictions(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    index_b = {(p["experiment_index"], p["position"]): p for p in b}
    return [(p, index_b[k]) for p in a if (k := (p["experiment_index"], p["position"])) in index_b]


def int8_vs_fp32_rows(store: ResultsStore, run_id: str) -> list[PairRow]:
    """Every INT8 artifact against the FP32 artifact of the same format on the same target."""
    artifacts = {a["model_key"]: a for a in store.rows(run_id, "artifacts")}
    preds = _by_cell(store, run_id, "predictions")
    medians = _per_experiment_median(store, run_id)
    rows: list[PairRow] = []
    for (target, key), int8_preds in sorted(preds.items()):
        art = artifacts.get(key)
        if art is None or art["precision"] != "int8":
            continue
        fp32_key = next((k for k, a in artifacts.items() if a["format"] == art["format"] and a["precision"] == "fp32"),
                        None)
        if fp32_key is None or (target, fp32_key) not in preds:
            continue
        pairs = _paired_predictions(preds[(target, fp32_key)], int8_preds)
        if not pairs:
            continue
        fp32_correct = [bool(p["correct"]) for p, _ in pairs]
        int8_correct = [bool(q["correct"]) for _, q in pairs]
        size_ratio = (art["size_bytes"] / artifacts[fp32_key]["size_bytes"]) if artifacts[fp32_key]["size_bytes"] \
            else None
        rows.append(PairRow(
            target_id=target, fp32_key=fp32_key, int8_key=key, images=len(pairs),
            agreement=stats.top1_agreement([p["prediction"] for p, _ in pairs], [q["prediction"] for _, q in pairs]),
            mcnemar=stats.mcnemar_exact(fp32_correct, int8_correct),
            fp32_accuracy=stats.accuracy(fp32_correct), int8_accuracy=stats.accuracy(int8_correct),
            latency_ratio=_paired_ratio(medians.get((target, key), {}), medians.get((target, fp32_key), {})),
            size_ratio=size_ratio,
        ))
    return rows


def across_target_rows(store: ResultsStore, run_id: str) -> list[CrossTargetRow]:
    """Each artifact on every target against the run's first target that ran it."""
    order = [t["target_id"] for t in store.rows(run_id, "targets")]
    preds = _by_cell(store, run_id, "predictions")
    medians = _per_experiment_median(store, run_id)
    models = sorted({m for _, m in preds})
    rows: list[CrossTargetRow] = []
    for model in models:
        targets = [t for t in order if (t, model) in preds]
        if len(targets) < 2:
            continue
        ref = targets[0]
        for other in targets[1:]:
            pairs = _paired_predictions(preds[(ref, model)], preds[(other, model)])
            if not pairs:
                continue
            diffs = []
            for p, q in pairs:
                if p["logits_json"] and q["logits_json"]:
                    a, b = json.loads(p["logits_json"]), json.loads(q["logits_json"])
                    diffs.append(max(abs(x - y) for x, y in zip(a, b, strict=True)))
            rows.append(CrossTargetRow(
                model_key=model, reference_target=ref, other_target=other, images=len(pairs),
                agreement=stats.top1_agreement([p["prediction"] for p, _ in pairs], [q["prediction"] for _, q in pairs]),
                max_abs_logit_diff=max(diffs) if diffs else None,
                latency_ratio=_paired_ratio(medians.get((other, model), {}), medians.get((ref, model), {})),
            ))
    return rows


def summarize_run(store: ResultsStore, run_id: str) -> RunSummary:
    """Every computation above for one run."""
    run = store.get_run(run_id)
    targets = []
    for t in store.rows(run_id, "targets"):
        info = json.loads(t["info_json"])
        targets.append({"target_id": t["target_id"], "kind": t["kind"], "is_virtual": bool(t["is_virtual"]),
                        "threads": t["threads"], "affinity_mask": t["affinity_mask"], "how_obtained": t["how_obtained"],
                        "description": info.get("model") or info.get("cpu_model") or info.get("platform", "")})
    failed = [{k: c[k] for k in ("target_id", "experiment_index", "model_key", "message")}
              for c in store.rows(run_id, "cells", status="failed")]
    unsupported = [{"target_id": m["target_id"], "model_key": m["model_key"], "reason": m["reason"]}
                   for m in store.rows(run_id, "target_models", supported=0)]
    return RunSummary(run_id=run_id, status=run.status, targets=targets, accuracy=accuracy_rows(store, run_id),
                      latency=latency_rows(store, run_id), int8_vs_fp32=int8_vs_fp32_rows(store, run_id),
                      across_targets=across_target_rows(store, run_id), failed_cells=failed, unsupported=unsupported)


def target_label(target: dict[str, Any]) -> str:
    """A target's name with '(virtual)' where it is one."""
    return target["target_id"] + (" (virtual)" if target["is_virtual"] else "")


def _fmt_ms(value: float) -> str:
    return "n/a" if value != value else (f"{value:.3f}" if value < 10 else f"{value:.1f}")


def _fmt_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def format_summary(summary: RunSummary) -> str:
    """The summary as plain-text tables (what the CLI prints at the end of a run)."""
    virtual = {t["target_id"] for t in summary.targets if t["is_virtual"]}

    def tname(t: str) -> str:
        return t + (" (virtual)" if t in virtual else "")

    acc = {(r.target_id, r.model_key, r.dataset): r.accuracy for r in summary.accuracy}
    rows = []
    for lat in summary.latency:
        a = acc.get((lat.target_id, lat.model_key, "all"))
        seen = acc.get((lat.target_id, lat.model_key, "seen"))
        unseen = acc.get((lat.target_id, lat.model_key, "unseen"))

        def pct(p: stats.Proportion | None) -> str:
            return "-" if p is None else f"{p.value:.1%} [{p.low:.0%}-{p.high:.0%}]"

        rows.append([tname(lat.target_id), lat.model_key, pct(a), pct(seen), pct(unseen),
                     _fmt_ms(lat.per_image.median_ms), _fmt_ms(lat.per_image.p90_ms), _fmt_ms(lat.per_batch.median_ms),
                     "n/a" if lat.per_batch.cv != lat.per_batch.cv else f"{lat.per_batch.cv:.2f}"])
    parts = [f"run {summary.run_id}: {summary.status}",
             _fmt_table(["target", "model", "accuracy (95% CI)", "seen", "unseen", "ms/image med", "p90",
                         "ms/batch med", "CV"], rows)]
    if summary.int8_vs_fp32:
        pair_rows = []
        for p in summary.int8_vs_fp32:
            ratio = "-" if p.latency_ratio is None else (
                f"{p.latency_ratio.ratio:.2f} [{p.latency_ratio.low:.2f}-{p.latency_ratio.high:.2f}]")
            pair_rows.append([tname(p.target_id), f"{p.int8_key} vs {p.fp32_key}", f"{p.agreement.value:.1%}",
                              f"{p.mcnemar.p_value:.3g}", ratio, "-" if p.size_ratio is None else f"{p.size_ratio:.2f}"])
        parts.append("INT8 vs FP32 (same target, same format)")
        parts.append(_fmt_table(["target", "models", "top-1 agreement", "McNemar p", "latency ratio [95% CI]",
                                 "size ratio"], pair_rows))
    if summary.across_targets:
        cross_rows = []
        for c in summary.across_targets:
            ratio = "-" if c.latency_ratio is None else (
                f"{c.latency_ratio.ratio:.2f} [{c.latency_ratio.low:.2f}-{c.latency_ratio.high:.2f}]")
            cross_rows.append([c.model_key, f"{tname(c.other_target)} / {tname(c.reference_target)}",
                               f"{c.agreement.value:.1%}",
                               "-" if c.max_abs_logit_diff is None else f"{c.max_abs_logit_diff:.2g}", ratio])
        parts.append("Same artifact across targets (different hardware: the latency ratio compares machines)")
        parts.append(_fmt_table(["model", "targets", "top-1 agreement", "max |logit diff|", "latency ratio [95% CI]"],
                                cross_rows))
    if summary.unsupported:
        parts.append("Not supported on a target (stated, not hidden): " + "; ".join(
            f"{u['model_key']} on {tname(u['target_id'])}: {u['reason']}" for u in summary.unsupported))
    if summary.failed_cells:
        first = summary.failed_cells[0]
        parts.append(f"{len(summary.failed_cells)} failed cell(s); first: {first['model_key']} on "
                     f"{tname(first['target_id'])} experiment {first['experiment_index']}: {first['message'][:300]}")
    if virtual:
        parts.append("Targets marked (virtual) are the emobench virtual device on the host CPU, not a phone.")
    return "\n\n".join(parts)
