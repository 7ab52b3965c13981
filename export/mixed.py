"""The INT8 modes of the XNNPACK path, behind one call: dynamic, static, hybrid, mixed, qat (and their details).

``quantize_for_mode(ctx, graph_module, mode)`` returns the converted pt2e graph that
``export.executorch_export`` lowers, plus what the manifest should record about how it was made:

- ``dynamic``: per-channel INT8 weights, activations quantized at run time (no calibration);
- ``static``: per-channel INT8 weights, activation ranges from ``config.calibration_observer`` on
  ``config.calibration_images`` training images (``auto``, the default: every observer tried, the one
  whose INT8 model agrees best with FP32 on those images kept, all trials in the details);
- ``hybrid``: per-channel INT8 weights in every layer; ``dynamic``'s run-time activation ranges where
  XNNPACK has them (Linear, non-depthwise Conv2d), calibrated static ranges for the depthwise convs
  (``calibration.hybrid_quantizer``; observer chosen as for ``static``), on the model with its
  depthwise channels equalized first (``export.equalize``; ``config.equalize_depthwise``);
- ``mixed``: ``static``, except the layer groups whose quantization changes the answers most stay FP32,
  added one at a time (most sensitive first) until top-1 agreement with FP32 on the calibration
  images reaches ``config.target_agreement`` (see ``export.sensitivity``);
- ``qat``: the graph a QAT run trained (``training.qat``), converted: ranges learned, not calibrated.

The sensitivity ranking is computed once per export (``ctx.cache``) and recorded in the details of
the artifacts that used it (``--sensitivity`` adds it to the static artifact too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from export import calibration as cal
from export import sensitivity as sens
from export.context import ExportContext

log = logging.getLogger(__name__)

METHODS = {
    "dynamic": "XNNPACKQuantizer (pt2e), per-channel symmetric INT8 weights, dynamic INT8 activations",
    "static": "XNNPACKQuantizer (pt2e), per-channel symmetric INT8 weights, static INT8 activations "
              "calibrated on real images ({observer} observer, {images} images)",
    "hybrid": "XNNPACKQuantizer (pt2e), per-channel symmetric INT8 weights in every layer; dynamic INT8 activations "
              "for Linear and non-depthwise Conv2d, static INT8 activations for the depthwise convs, calibrated on "
              "real images ({observer} observer, {images} images){equalized}",
    "mixed": "XNNPACKQuantizer (pt2e), per-channel symmetric INT8 weights, static INT8 activations "
             "({observer} observer, {images} images); the most quantization-sensitive layer groups kept FP32 "
             "({fp32_groups})",
    "qat": "XNNPACKQuantizer (pt2e) QAT: per-channel symmetric INT8 weights, static INT8 activations with ranges "
           "learned by quantization-aware training ({epochs} epoch(s), distilled from the FP32 model), convert_pt2e",
}
_QAT_KEY = "qat:converted"
_SENSITIVITY_KEY = "executorch:sensitivity"
_CALIBRATED_KEY = "executorch:calibrated"
_EQUALIZED_KEY = "executorch:equalized"
_FLOOR_KEY = "executorch:rounding-floor"


@dataclass(frozen=True)
class Quantized:
    """A converted pt2e graph and the manifest details of how it was quantized."""

    graph_module: Any
    method: str
    details: dict[str, Any] = field(default_factory=dict)


def quantize_for_mode(ctx: ExportContext, graph_module: Any, mode: str | None) -> Quantized:
    """Quantize ``graph_module`` (``torch.export(...).module()``) for ``mode``.

    Raises:
        ExportConfigError: static/mixed without calibration images.
        ValueError: a mode the XNNPACK path does not have.
    """
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if mode == "dynamic":
        prepared = prepare_pt2e(graph_module, XNNPACKQuantizer().set_global(cal.dynamic_config()))
        with torch.no_grad():
            prepared(ctx.example_input())
        return Quantized(convert_pt2e(prepared), METHODS["dynamic"])
    if mode == "qat":
        return quantized_qat(ctx)
    if mode not in ("static", "hybrid", "mixed"):
        raise ValueError(f"ExecuTorch has no INT8 mode {mode!r}")
    config = ctx.config
    observer = config.calibration_observer
    ctx.calibration_batches()  # raises before any work when no calibration data was given
    images = _calibration_images(ctx)
    scheme = "hybrid" if mode == "hybrid" else "static"
    equalization = None
    model = ctx.model
    if mode == "hybrid" and config.equalize_depthwise:
        model, equalization = _equalized(ctx, images)
    prepared, choice = _calibrated(ctx, images, scheme=scheme, model=model)
    calibration: dict[str, Any] = {"observer": observer, "images": int(images.shape[0]),
                                   "split": config.calibration_split}
    if choice is not None:
        observer = choice.observer
        calibration = {**calibration, "observer": observer, "requested": "auto", **choice.to_dict()}
    floor = _rounding_floor(ctx, images)
    details: dict[str, Any] = {"calibration": calibration, "weight_rounding": floor.to_dict()}
    if equalization is not None:
        details["depthwise_equalization"] = equalization.to_dict()
    ranking = _ranking(ctx, prepared, images) if (mode == "mixed" or (config.sensitivity and mode == "static")) else None
    if ranking is not None:
        details["sensitivity"] = {"measured_on": "calibration images", "images": int(images.shape[0]),
                                  "ranked": [r.to_dict() for r in ranking]}
    fp32_groups: tuple[str, ...] = ()
    if mode == "mixed":
        assert ranking is not None
        selection = sens.select_fp32_groups(ctx.model, prepared, images, ranking,
                                            target_agreement=config.target_agreement,
                                            max_fp32_layer_share=config.max_fp32_layer_share,
                                            max_fp32_weight_share=config.max_fp32_weight_share)
        fp32_groups = selection.fp32_groups
        fp32_bytes = sum(cal.group_weight_bytes(ctx.model, list(fp32_groups)).values())
        details["mixed"] = {
            **selection.to_dict(),
            "fp32_weight_bytes": fp32_bytes,
            # FP32 weights take 4 bytes per value where INT8 takes 1 (scales aside): the extra file size
            "size_cost_bytes_estimate": fp32_bytes - fp32_bytes // 4,
        }
        if not selection.target_met:
            log.warning("mixed INT8: agreement %.3f on the calibration images is below the target %.3f (%s)",
                        selection.reached_agreement, selection.target_agreement, selection.stopped_because)
            if floor.top1_agreement < selection.target_agreement:
                log.warning("rounding the weights alone to INT8 already agrees only %.3f with FP32 (%.0f%% of the "
                            "calibration images are closer calls than the logit change it causes): the target needs "
                            "QAT, more layers in FP32, or a model with fewer close calls",
                            floor.top1_agreement, 100 * floor.near_tie_share)
    converted = cal.convert(prepared, fp32_groups=fp32_groups)
    equalized = (f", their channels equalized ({len(equalization.layers)} depthwise convs)"
                 if equalization is not None else "")
    method = METHODS[mode].format(observer=observer, images=int(images.shape[0]),
                                  fp32_groups=", ".join(fp32_groups) or "none needed", equalized=equalized)
    return Quantized(converted, method, details)


def quantized_qat(ctx: ExportContext) -> Quantized:
    """The converted graph of a QAT checkpoint (``emobench train qat``): its learned ranges, no calibration.

    Shared by the ExecuTorch and ONNX ``qat`` artifacts of one export (``ctx.cache``).

    Raises:
        ExportConfigError: the checkpoint is not a QAT checkpoint.
    """
    from export.errors import ExportConfigError

    qat = ctx.checkpoint.qat
    if qat is None:
        raise ExportConfigError(f"INT8 mode qat needs a QAT checkpoint; {ctx.checkpoint.path} is an FP32 one",
                                hint=f"run `emobench train qat --init-from {ctx.checkpoint.path}` and export its run")
    if _QAT_KEY not in ctx.cache:
        ctx.cache[_QAT_KEY] = ctx.checkpoint.build_qat_model().converted()
    settings = dict(qat.get("settings") or {})
    details = {"qat": {"settings": settings, "init_from": qat.get("init_from"),
                       "init_from_sha256": qat.get("init_from_sha256"), "quantizer": qat.get("quantizer"),
                       "range_init": qat.get("range_init"),
                       "epochs_trained": ctx.checkpoint.raw.get("epoch")}}
    return Quantized(ctx.cache[_QAT_KEY], METHODS["qat"].format(epochs=settings.get("epochs", "?")), details)


def _calibration_images(ctx: ExportContext) -> np.ndarray:
    assert ctx.calibration is not None
    return ctx.calibration.images


def _rounding_floor(ctx: ExportContext, images: np.ndarray) -> sens.RoundingFloor:
    """What rounding the weights alone to INT8 costs on the calibration images (``sensitivity.rounding_floor``)."""
    if _FLOOR_KEY not in ctx.cache:
        floor = sens.rounding_floor(ctx.model, images)
        log.info("INT8 weight rounding alone: agreement %.3f with FP32 on %d calibration images, mean |logit "
                 "change| %.4f, close calls %.1f%%", floor.top1_agreement, floor.images, floor.mean_abs_diff,
                 100 * floor.near_tie_share)
        ctx.cache[_FLOOR_KEY] = floor
    return ctx.cache[_FLOOR_KEY]


def _equalized(ctx: ExportContext, images: np.ndarray):
    """The model with its depthwise channels equalized on the calibration images (``export.equalize``)."""
    from export.equalize import equalize_depthwise

    if _EQUALIZED_KEY not in ctx.cache:
        ctx.cache[_EQUALIZED_KEY] = equalize_depthwise(ctx.model, images)
    return ctx.cache[_EQUALIZED_KEY]


def _calibrated(ctx: ExportContext, images: np.ndarray, *, scheme: str = "static", model: Any = None
                ) -> tuple[Any, sens.ObserverChoice | None]:
    """The calibrated (prepared) ``model`` (default: the checkpoint's) for ``scheme``, shared by the static and
    mixed artifacts of one export.

    With observer ``auto`` also the ``ObserverChoice`` that picked it (None for a named observer).
    """
    model = ctx.model if model is None else model
    key = f"{_CALIBRATED_KEY}:{scheme}"
    if key not in ctx.cache:
        observer = ctx.config.calibration_observer
        if observer == "auto":
            choice = sens.choose_observer(model, images, scheme=scheme)
            log.info("calibration observer auto (%s): %s (%s)", scheme, choice.observer, ", ".join(
                f"{t.observer} {t.top1_agreement:.3f}" for t in choice.trials))
            ctx.cache[key] = (choice.prepared, choice)
        else:
            ctx.cache[key] = (cal.calibrate(model, images, observer=observer, scheme=scheme), None)
    return ctx.cache[key]


def _ranking(ctx: ExportContext, prepared, images: np.ndarray) -> list[sens.GroupSensitivity]:
    if _SENSITIVITY_KEY not in ctx.cache:
        ctx.cache[_SENSITIVITY_KEY] = sens.analyse_sensitivity(ctx.model, prepared, images)
    return ctx.cache[_SENSITIVITY_KEY]
