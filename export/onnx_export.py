"""ONNX: FP32 via the dynamo exporter (dynamic batch axis, ``onnx.checker``), INT8 dynamic, static QDQ and QAT QDQ.

Both INT8 artifacts start from the FP32 graph after onnxruntime's pre-processing
(``quant_pre_process``: symbolic shape inference and graph optimisation). ``dynamic`` is
``quantize_dynamic`` (per-channel INT8 weights, activations quantized at run time: ConvInteger /
MatMulInteger); ``static`` is ``quantize_static`` in QDQ format, per-channel INT8 weights and INT8
activations calibrated (MinMax) on real images. ``qat`` is the QAT run's converted pt2e graph
(``export.mixed.quantized_qat``) through the same dynamo exporter: QDQ with the ranges QAT learned.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from export._common import make_artifact, metadata, staged_path
from export.artifact import Artifact
from export.context import ExportContext
from export.quant_report import count_onnx

log = logging.getLogger(__name__)

FORMAT = "onnx"
MODES: dict[str, tuple[str | None, ...]] = {"fp32": (None,), "int8": ("dynamic", "static", "qat")}
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_METHODS = {
    "dynamic": "onnxruntime.quantization.quantize_dynamic, per-channel INT8 weights, dynamic activations",
    "static": "onnxruntime.quantization.quantize_static, QDQ, per-channel INT8 weights, INT8 activations "
              "calibrated (MinMax) on real images",
    "qat": "torch.onnx (dynamo) export of the converted pt2e QAT graph (XNNPACKQuantizer QAT config): QDQ, "
           "per-channel INT8 weights, INT8 activations with ranges learned by quantization-aware training",
}


def export(ctx: ExportContext, precision: str, mode: str | None) -> list[Artifact]:
    """Write ``<arch>_onnx_<precision>[-mode].onnx`` into the staging folder.

    Raises:
        ExportConfigError: static mode without calibration images.
        Exception: what the exporter, the checker or the quantizer raises.
    """
    started = time.perf_counter()
    path = staged_path(ctx, FORMAT, precision, mode)
    if precision == "fp32":
        shutil.copyfile(_fp32_source(ctx), path)
        report = None
    elif mode == "qat":
        _export_qat(ctx, path)
        _stamp_metadata(path, ctx, precision, mode)
        _check(path)
        import onnx

        report = count_onnx(onnx.load(str(path)), method=_METHODS[mode])
    else:
        pre = _preprocessed(ctx, _fp32_source(ctx))
        if mode == "dynamic":
            _quantize_dynamic(pre, path)
        elif mode == "static":
            _quantize_static(pre, path, ctx)
        else:
            raise ValueError(f"ONNX has no INT8 mode {mode!r}")
        _stamp_metadata(path, ctx, precision, mode)
        _check(path)
        import onnx

        report = count_onnx(onnx.load(str(path)), method=_METHODS[mode])
    details = {"opset": _opset(path), "dynamic_batch": True, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME}
    return [make_artifact(ctx, fmt=FORMAT, precision=precision, mode=mode, path=path,
                          runtime="onnxruntime (CPUExecutionProvider)", started=started, quantization=report,
                          details=details)]


def _fp32_source(ctx: ExportContext) -> Path:
    """The checked FP32 graph, exported once per run and shared by every ONNX artifact."""
    if "onnx_fp32" not in ctx.cache:
        path = ctx.staging_dir / "_source_fp32.onnx"
        _export_dynamo(ctx, path)
        _stamp_metadata(path, ctx, "fp32", None)
        _check(path)
        ctx.cache["onnx_fp32"] = path
    return ctx.cache["onnx_fp32"]


def _export_qat(ctx: ExportContext, path: Path) -> None:
    """The QAT run's converted graph (quantize/dequantize pairs) as ONNX QDQ."""
    from export.mixed import quantized_qat

    _export_dynamo(ctx, path, model=quantized_qat(ctx).graph_module)


def _export_dynamo(ctx: ExportContext, path: Path, model=None) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(
            ctx.model if model is None else model, (ctx.example_input(),), dynamo=True, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)


def _stamp_metadata(path: Path, ctx: ExportContext, precision: str, mode: str | None) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata(ctx, FORMAT, precision, mode).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"emobench.{key}", str(value)
    onnx.save(model, str(path))


def _check(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _preprocessed(ctx: ExportContext, source: Path) -> Path:
    if "onnx_pre" not in ctx.cache:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        path = ctx.staging_dir / "_source_fp32_preprocessed.onnx"
        quant_pre_process(str(source), str(path))
        ctx.cache["onnx_pre"] = path
    return ctx.cache["onnx_pre"]


def _quantize_dynamic(source: Path, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8, per_channel=True)


def _quantize_static(source: Path, path: Path, ctx: ExportContext) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    batches = [b.numpy() for b in ctx.calibration_batches()]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {INPUT_NAME: batch}

    quantize_static(str(source), str(path), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
