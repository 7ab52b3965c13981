"""Terminal rendering of the sensitivity ranking and the mixed-precision choice recorded in a manifest."""

from __future__ import annotations

from typing import Any


def sensitivity_rows(manifest: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """(artifact label, ranked groups) for every artifact whose details hold a sensitivity ranking."""
    out = []
    for artifact in manifest.artifacts:
        ranked = (artifact.details or {}).get("sensitivity", {}).get("ranked")
        if ranked:
            out.append((artifact.label, list(ranked)))
    return out


def rounding_floor_line(manifest: Any) -> str | None:
    """One sentence on what rounding the weights alone to INT8 costs (``sensitivity.RoundingFloor``), if measured."""
    for artifact in manifest.artifacts:
        floor = (artifact.details or {}).get("weight_rounding")
        if floor:
            return (f"INT8 weight rounding alone (activations FP32): top-1 agreement "
                    f"{100 * floor['top1_agreement']:.1f}% with FP32 on {floor['images']} calibration images, mean "
                    f"|logit change| {floor['mean_abs_diff']:.4f}; {100 * floor['near_tie_share']:.1f}% of the "
                    "images are closer calls than that (round-to-nearest INT8 seldom agrees better)")
    return None


def render_sensitivity(manifest: Any, *, top: int = 10) -> None:
    """Print the ranking (once: every artifact of an export shares it), what weight rounding alone costs, and
    each mixed artifact's FP32 groups."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = sensitivity_rows(manifest)
    if rows:
        label, ranked = rows[0]
        table = Table(title=f"quantization sensitivity (one layer group INT8 at a time, calibration images; {label})")
        for col in ("rank", "group", "layers", "top-1 agree", "KL(FP32||INT8)", "mean |diff|"):
            table.add_column(col, justify="left" if col == "group" else "right")
        for i, r in enumerate(ranked[:top], 1):
            table.add_row(str(i), r["group"], str(r["layers"]), f"{100 * r['top1_agreement']:.1f}%",
                          f"{r['kl_divergence']:.2e}", f"{r['mean_abs_diff']:.3f}")
        console.print(table)
    floor = rounding_floor_line(manifest)
    if floor:
        console.print(floor)
    for artifact in manifest.artifacts:
        mixed = (artifact.details or {}).get("mixed")
        if mixed:
            groups = ", ".join(mixed["fp32_groups"]) or "none"
            console.print(f"{artifact.label}: FP32 groups {groups} ({len(mixed['fp32_layers'])} layers, "
                          f"~{mixed['size_cost_bytes_estimate'] / 1e6:.2f} MB more than INT8); agreement on the "
                          f"calibration images {100 * mixed['reached_agreement']:.1f}% (target "
                          f"{100 * mixed['target_agreement']:.1f}%: {mixed['stopped_because']})")
