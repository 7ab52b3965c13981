"""Small helpers the format modules share (staging paths, artifact metadata, the Artifact itself)."""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from emobench_common.fileio import sha256_file
from export.artifact import Artifact, QuantReport, artifact_filename
from export.context import ExportContext


def staged_path(ctx: ExportContext, fmt: str, precision: str, mode: str | None) -> Path:
    """Where a format writes its file before verification moves it (atomically) into the output folder."""
    return ctx.staging_dir / artifact_filename(ctx.arch, fmt, precision, mode)


def metadata(ctx: ExportContext, fmt: str, precision: str, mode: str | None) -> dict[str, Any]:
    """What a phone app needs beside the model: classes, input spec, precision (embedded where a format allows)."""
    spec = ctx.checkpoint.input_spec
    return {
        "producer": "emobench",
        "arch": ctx.checkpoint.arch,
        "format": fmt,
        "precision": precision,
        "mode": mode,
        "class_names": list(spec.class_names),
        "input_shape": list(ctx.input_shape),
        "input_layout": spec.layout,
        "input_dtype": "float32",
        "mean": list(spec.mean),
        "std": list(spec.std),
        "crop_pct": spec.crop_pct,
        "interpolation": spec.interpolation,
        "color": spec.color,
        "value_range": list(spec.value_range),
    }


def metadata_json(ctx: ExportContext, fmt: str, precision: str, mode: str | None) -> str:
    return json.dumps(metadata(ctx, fmt, precision, mode), sort_keys=True)


def make_artifact(ctx: ExportContext, *, fmt: str, precision: str, mode: str | None, path: Path,
                  runtime: str, started: float, quantization: QuantReport | None = None,
                  details: Mapping[str, Any] | None = None, batch_size: int | None = None) -> Artifact:
    """The ``Artifact`` for a file that has been completely written."""
    return Artifact(
        format=fmt, precision=precision, mode=mode, path=path, size_bytes=path.stat().st_size,
        sha256=sha256_file(path), batch_size=batch_size or ctx.config.batch_size, runtime=runtime,
        export_seconds=round(time.perf_counter() - started, 3), quantization=quantization, details=dict(details or {}),
    )


@contextlib.contextmanager
def quiet_deprecations() -> Iterator[None]:
    """Hide torch's deprecation chatter for TorchScript/torch.ao (the formats are still what apps ship)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", message=".*Lite Interpreter.*")
        yield
