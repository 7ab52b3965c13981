"""One export job, the same in this process or in a worker: the format's module, export-and-verify, its failure text.

``export.pipeline`` (the in-process loop) and ``export.parallel`` (the worker processes) both run jobs
through ``export_verified`` and record failures with ``failure_reason``, so a manifest is the same
whichever ran it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from export.verify import verify_artifact

if TYPE_CHECKING:
    import numpy as np

    from export.artifact import Artifact
    from export.context import ExportContext
    from export.data import ImageSet


_FORMAT_MODULES = {"torchscript": "export.torchscript", "executorch": "export.executorch_export",
                   "onnx": "export.onnx_export"}


def format_module(fmt: str) -> ModuleType:
    """The module that exports ``fmt`` (each has ``FORMAT``, ``MODES`` and ``export(ctx, precision, mode)``)."""
    return importlib.import_module(_FORMAT_MODULES[fmt])


def export_verified(ctx: ExportContext, fmt: str, precision: str, mode: str | None, verification: ImageSet,
                    eager_logits: np.ndarray) -> list[Artifact]:
    """Export one job into ``ctx.staging_dir`` and verify each of its files in its runtime (in this process).

    Raises:
        Exception: what the exporter raises; ``ParityError`` for an FP32 file beyond the tolerance.
    """
    staged = format_module(fmt).export(ctx, precision, mode)
    return [a.with_(parity=verify_artifact(a, verification, eager_logits, ctx.config)) for a in staged]


def failure_reason(exc: BaseException) -> str:
    """How a failed job appears in ``manifest.failures``: the exception's type and first line."""
    return f"{type(exc).__name__}: {one_line(exc)}"


def one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or repr(exc)
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:500]
