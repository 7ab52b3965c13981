"""TorchScript: FP32 ``.pt`` plus a lite-interpreter ``.ptl`` for PyTorch Mobile; INT8 as the study did it.

INT8 here is eager PyTorch's ``quantize_dynamic`` asked for {Linear, Conv2d}, the original study's
method. Its dynamic mapping has no Conv2d, so only Linear layers (the classifier head of a CNN) get
INT8 weights; the quantization report counts that from the saved file and says so.

``torch.utils.mobile_optimizer.optimize_for_mobile`` is tried for the ``.ptl``; it needs a torch built
with XNNPACK, and where it is missing the traced module is saved as is (``details.mobile_optimized``).
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

from export._common import make_artifact, metadata_json, quiet_deprecations, staged_path
from export.artifact import Artifact
from export.context import ExportContext
from export.quant_report import count_torchscript

log = logging.getLogger(__name__)

FORMAT = "torchscript"
MODES: dict[str, tuple[str | None, ...]] = {"fp32": (None,), "int8": ("dynamic",)}
EXTRA_FILE = "emobench.json"
INT8_METHOD = ("torch.ao.quantization.quantize_dynamic(model, {Linear, Conv2d}, qint8) - the original "
               "study's method; eager PyTorch quantizes only Linear layers dynamically")


def export(ctx: ExportContext, precision: str, mode: str | None) -> list[Artifact]:
    """Write ``<arch>_torchscript_<precision>[-mode].pt`` and its ``.ptl`` twin into the staging folder.

    Returns:
        Two artifacts: format ``torchscript`` (.pt, torch.jit) and ``torchscript-lite`` (.ptl).
    """
    started = time.perf_counter()
    with quiet_deprecations():
        model = _prepare(ctx.model, precision, mode)
        traced = _trace(model, ctx.example_input())
        pt_path = _save_full(traced, staged_path(ctx, FORMAT, precision, mode),
                             metadata_json(ctx, FORMAT, precision, mode))
        pt = make_artifact(ctx, fmt=FORMAT, precision=precision, mode=mode, path=pt_path, runtime="torch.jit",
                           started=started, quantization=_report(pt_path, precision))
        started = time.perf_counter()
        ptl_path, optimized = _save_lite(traced, staged_path(ctx, "torchscript-lite", precision, mode),
                                         metadata_json(ctx, "torchscript-lite", precision, mode))
        ptl = make_artifact(ctx, fmt="torchscript-lite", precision=precision, mode=mode, path=ptl_path,
                            runtime="torch.jit.mobile (lite interpreter)", started=started,
                            quantization=_report(ptl_path, precision),
                            details={"mobile_optimized": optimized})
    return [pt, ptl]


def _prepare(model, precision: str, mode: str | None):
    import torch
    from torch import nn

    if precision == "fp32":
        return model
    if mode != "dynamic":
        raise ValueError(f"TorchScript has no INT8 mode {mode!r}")
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear, nn.Conv2d}, dtype=torch.qint8)


def _trace(model, example):
    import torch

    with torch.no_grad():
        return torch.jit.trace(model, example, check_trace=False)


def _save_full(traced, path: Path, meta: str) -> Path:
    import torch

    torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: meta})
    return path


def _save_lite(traced, path: Path, meta: str) -> tuple[Path, bool]:
    from torch.utils.mobile_optimizer import optimize_for_mobile

    try:
        module, optimized = optimize_for_mobile(traced), True
    except RuntimeError as exc:  # torch built without XNNPACK: keep the traced graph
        log.info("optimize_for_mobile unavailable (%s); saving the traced module as is", str(exc).splitlines()[0])
        module, optimized = traced, False
    module._save_for_lite_interpreter(str(path), _extra_files={EXTRA_FILE: meta})
    return path, optimized


def _report(path: Path, precision: str):
    import torch

    if precision == "fp32":
        return None
    return count_torchscript(torch.jit.load(str(path)), method=INT8_METHOD)
