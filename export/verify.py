"""Verification: run an artifact in its own runtime on real images and compare with eager FP32."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from export.artifact import Artifact, Parity
from export.config import ExportConfig
from export.data import ImageSet
from export.errors import ParityError
from export.runtimes import load_runtime

log = logging.getLogger(__name__)


def compare_logits(eager: np.ndarray, other: np.ndarray, labels: Sequence[int] | None = None) -> Parity:
    """Top-1 agreement and max/mean |difference| of two logit arrays of the same images (pure)."""
    if eager.shape != other.shape:
        raise ValueError(f"logit shapes differ: eager {eager.shape} vs artifact {other.shape}")
    diff = np.abs(eager.astype(np.float64) - other.astype(np.float64))
    eager_top1, other_top1 = eager.argmax(axis=1), other.argmax(axis=1)
    eager_acc = artifact_acc = None
    if labels is not None:
        y = np.asarray(labels)
        eager_acc, artifact_acc = float((eager_top1 == y).mean()), float((other_top1 == y).mean())
    return Parity(
        images=int(eager.shape[0]),
        top1_agreement=float((eager_top1 == other_top1).mean()),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        eager_accuracy=eager_acc,
        artifact_accuracy=artifact_acc,
    )


def verify_artifact(artifact: Artifact, images: ImageSet, eager_logits: np.ndarray, config: ExportConfig) -> Parity:
    """Load ``artifact`` in its runtime, run ``images`` and judge it.

    FP32 must stay under ``config.fp32_max_abs_diff`` on every image; INT8 is recorded, with a warning
    when top-1 agreement falls below ``config.int8_min_agreement``.

    Raises:
        ParityError: an FP32 artifact beyond the tolerance.
    """
    runtime = load_runtime(artifact.path, artifact.format, batch_size=artifact.batch_size)
    logits = runtime.run(images.images)
    parity = compare_logits(eager_logits, logits, images.labels)
    if not np.isfinite(logits).all():
        raise ParityError(f"{artifact.path.name}: the {artifact.runtime} outputs hold NaN/inf")
    if artifact.precision == "fp32":
        threshold = f"max_abs_diff < {config.fp32_max_abs_diff:g}"
        passed = parity.max_abs_diff < config.fp32_max_abs_diff
        parity = Parity(**{**parity.to_dict(), "passed": passed, "threshold": threshold})
        if not passed:
            raise ParityError(
                f"{artifact.path.name}: FP32 output differs from the eager model by up to {parity.max_abs_diff:.3g} "
                f"on {parity.images} images ({threshold} required); the artifact was not kept",
                hint="this is an exporter/runtime bug for this architecture; try another format",
            )
        return parity
    threshold = f"top1_agreement >= {config.int8_min_agreement:g} (warning only)"
    passed = parity.top1_agreement >= config.int8_min_agreement
    if not passed:
        log.warning("%s: INT8 top-1 agreement with eager is %.1f%% on %d images (below %.0f%%)",
                    artifact.path.name, 100 * parity.top1_agreement, parity.images, 100 * config.int8_min_agreement)
    return Parity(**{**parity.to_dict(), "passed": passed, "threshold": threshold})
