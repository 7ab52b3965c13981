"""ExecuTorch ``.pte`` with the XNNPACK delegate: FP32, INT8 dynamic, static, hybrid, mixed and qat.

The pipeline is a chain of small stages, as in ExecuTorch's own ``export_util``:
model -> ``torch.export`` ExportedProgram -> (pt2e quantization) -> ``to_edge_transform_and_lower``
with ``XnnpackPartitioner`` -> ``to_executorch()`` -> program bytes -> file.

INT8 uses ``XNNPACKQuantizer`` with per-channel symmetric weights: ``dynamic`` quantizes activations
at run time (no calibration; XNNPACK then quantizes Linear and non-depthwise Conv2d, depthwise stays
FP32), ``static`` observes activations on real calibration images (the mode ExecuTorch recommends for
CNNs), ``hybrid`` is dynamic with the depthwise convs static (every layer INT8, ``export.calibration``),
``mixed`` is static with the most quantization-sensitive layer groups kept FP32 (``export.mixed``),
``qat`` is the graph of a quantization-aware training run (``emobench train qat``), converted.
The quantization report counts layers in the converted graph that is lowered into the file.

Beside each ``.pte`` goes its ETRecord (``<name>.etrecord``, recorded in the artifact's
``details["etrecord"]``): the edge program with debug handles and the delegate map that ExecuTorch's
``Inspector`` needs to tie an ETDump's per-operator times back to the model's modules.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

from export._common import make_artifact, staged_path
from export.artifact import Artifact
from export.context import ExportContext
from export.quant_report import count_pt2e_graph

log = logging.getLogger(__name__)

FORMAT = "executorch"
MODES: dict[str, tuple[str | None, ...]] = {"fp32": (None,), "int8": ("dynamic", "static", "hybrid", "mixed", "qat")}


def export(ctx: ExportContext, precision: str, mode: str | None) -> list[Artifact]:
    """Write ``<arch>_executorch_<precision>[-mode].pte`` into the staging folder.

    Raises:
        ExportConfigError: static mode without calibration images.
        Exception: whatever torch.export / the lowering raises for an unsupported model.
    """
    started = time.perf_counter()
    example = ctx.example_input()
    program = _export_program(ctx.model, example)
    report = None
    int8_details: dict = {}
    if precision == "int8":
        quantized = _quantize(program, mode, ctx)
        report = count_pt2e_graph(quantized.graph_module, method=quantized.method)
        int8_details = quantized.details
        program = _export_program(quantized.graph_module, example)
    edge = _lower(program)
    details = {**_delegation_summary(edge), **int8_details}
    executorch_program = edge.to_executorch()
    path = _save(bytes(executorch_program.buffer), staged_path(ctx, FORMAT, precision, mode))
    details["etrecord"] = _save_etrecord(executorch_program, path.with_suffix(".etrecord"))
    return [make_artifact(ctx, fmt=FORMAT, precision=precision, mode=mode, path=path,
                          runtime="executorch.runtime (XNNPACK)", started=started, quantization=report,
                          details=details)]


def _export_program(model, example):
    import torch

    with torch.no_grad():
        return torch.export.export(model, (example,), strict=False)


def _quantize(program, mode: str | None, ctx: ExportContext):
    """The converted pt2e graph for ``mode`` and how it was made (``export.mixed.Quantized``)."""
    from export.mixed import quantize_for_mode

    return quantize_for_mode(ctx, program.module(), mode)


def _lower(program):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()], generate_etrecord=True)


def _delegation_summary(edge) -> dict:
    """How much of the graph XNNPACK took: delegate calls and the ops left to the portable kernels."""
    graph = edge.exported_program().graph_module.graph
    left: Counter[str] = Counter()
    delegates = 0
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if "executorch_call_delegate" in name:
            delegates += 1
        elif name != "getitem":
            left[name] += 1
    return {"xnnpack_delegate_calls": delegates, "ops_outside_delegate": dict(sorted(left.items()))}


def _save_etrecord(executorch_program, path: Path) -> dict:
    """Write the program's ETRecord to ``path``; returns the manifest entry (name relative to the .pte)."""
    from emobench_common.fileio import sha256_file

    etrecord = executorch_program.get_etrecord()
    etrecord.save(str(path))
    return {"path": path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def _save(buffer: bytes, path: Path) -> Path:
    path.write_bytes(buffer)
    return path
