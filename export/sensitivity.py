"""Which layer groups change the model's answers when quantized, and mixed precision built from that.

``analyse_sensitivity`` quantizes one layer group at a time (everything else stays FP32), calibrates it
on the calibration images and measures, on those same images, top-1 agreement with the FP32 model and
the output divergence (mean KL(FP32 || INT8) of the softmax, and mean |logit difference|). Groups are
ranked most damaging first.

``select_fp32_groups`` is the mixed-precision search: quantize everything, and while agreement on the
calibration images is below the target, keep the next most sensitive group in FP32. It stops at the
target, or when the next group would push the share of FP32 weight layers past ``max_fp32_layer_share``
(the INT8 artifact must stay mostly INT8 to be worth shipping); the result says which happened.

``choose_observer`` is the ``auto`` calibration: calibrate with every activation observer and keep the
one whose INT8 model agrees best with FP32 on the calibration images.

Nothing here reads the evaluation images: selection is on calibration data only, so the agreement the
verification reports on the evaluation images stays an honest, held-out figure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from export import calibration as cal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupSensitivity:
    """One layer group quantized alone, against FP32 on the calibration images."""

    group: str
    layers: int
    weight_bytes_fp32: int
    top1_agreement: float
    kl_divergence: float
    mean_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class MixedSelection:
    """The outcome of the mixed-precision search."""

    fp32_groups: tuple[str, ...]
    fp32_layers: tuple[str, ...]
    target_agreement: float
    reached_agreement: float
    target_met: bool
    stopped_because: str
    steps: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["fp32_groups"] = list(self.fp32_groups)
        out["fp32_layers"] = list(self.fp32_layers)
        out["steps"] = [dict(s) for s in self.steps]
        return out


def divergence(fp32_logits: np.ndarray, int8_logits: np.ndarray) -> tuple[float, float, float]:
    """(top-1 agreement, mean KL(softmax FP32 || softmax INT8), mean |logit difference|) of two logit arrays."""
    a = fp32_logits.astype(np.float64)
    b = int8_logits.astype(np.float64)
    pa = np.exp(a - a.max(axis=1, keepdims=True))
    pa /= pa.sum(axis=1, keepdims=True)
    log_pa = np.log(np.clip(pa, 1e-12, None))
    log_pb = b - b.max(axis=1, keepdims=True)
    log_pb -= np.log(np.exp(log_pb).sum(axis=1, keepdims=True))
    kl = float(np.mean(np.sum(pa * (log_pa - log_pb), axis=1)))
    agreement = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    return agreement, kl, float(np.abs(a - b).mean())


@dataclass(frozen=True)
class RoundingFloor:
    """The FP32 model with only its weights rounded to INT8 (activations FP32), against FP32.

    Every conv and linear weight is rounded to the nearest point of its per-output-channel symmetric
    INT8 grid (scale max|w| / 127, XNNPACK's per-channel weight quantization; batch-norm folding scales
    whole output channels, which scales the grid with them). An INT8 artifact with round-to-nearest
    weights adds activation rounding on top, so it seldom agrees better than this: a target agreement
    above ``top1_agreement`` needs weights that learn their rounding (QAT), layers kept FP32, or a
    model whose answers are less close calls. ``near_tie_share`` says why: the share of images whose
    FP32 top-1/top-2 logit margin is below the mean |logit change| rounding causes.
    """

    images: int
    top1_agreement: float
    kl_divergence: float
    mean_abs_diff: float
    near_tie_share: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "measured_on": "calibration images",
                "what": "every conv/linear weight rounded to its per-channel INT8 grid, activations FP32"}


def round_weights_int8(model):
    """A copy of ``model`` whose conv and linear weights are rounded to their per-output-channel INT8 grid."""
    import copy

    import torch
    from torch import nn

    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for module in rounded.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                w = module.weight
                dims = tuple(range(1, w.dim()))
                scale = w.abs().amax(dim=dims, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny) / 127.0
                w.copy_(torch.clamp(torch.round(w / scale), -127, 127) * scale)
    return rounded


def rounding_floor(model, images: np.ndarray, *, fp32_logits: np.ndarray | None = None,
                   batch_size: int = 64) -> RoundingFloor:
    """Measure ``RoundingFloor`` on ``images`` (float32 NCHW; the calibration images)."""
    reference = cal.run_graph(model, images, batch_size) if fp32_logits is None else fp32_logits
    agreement, kl, mad = divergence(reference, cal.run_graph(round_weights_int8(model), images, batch_size))
    top2 = np.sort(reference, axis=1)[:, -2:]
    near_ties = float(np.mean(top2[:, 1] - top2[:, 0] < mad))
    return RoundingFloor(images=int(images.shape[0]), top1_agreement=agreement, kl_divergence=kl,
                         mean_abs_diff=mad, near_tie_share=near_ties)


class _Measure:
    """A calibrated model converted with different FP32 groups, each measured against FP32 on ``images``."""

    def __init__(self, model, prepared, images: np.ndarray, *, fp32_logits: np.ndarray | None = None,
                 batch_size: int = 64) -> None:
        import torch

        self.prepared, self.images, self.batch_size = prepared, images, batch_size
        if fp32_logits is None:
            with torch.no_grad():
                fp32_logits = model(torch.from_numpy(np.ascontiguousarray(images))).numpy()
        self.fp32_logits = fp32_logits

    def __call__(self, **groups: Any) -> tuple[float, float, float]:
        converted = cal.convert(self.prepared, **groups)
        return divergence(self.fp32_logits, cal.run_graph(converted, self.images, batch_size=self.batch_size))


@dataclass(frozen=True)
class ObserverTrial:
    """One activation observer tried by ``choose_observer``: its converted model measured against FP32."""

    observer: str
    top1_agreement: float
    kl_divergence: float
    mean_abs_diff: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ObserverChoice:
    """The observer ``choose_observer`` picked, its calibrated model, and every trial (best first)."""

    observer: str
    prepared: Any
    trials: tuple[ObserverTrial, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"chosen_by": "highest top-1 agreement with FP32 on the calibration images, then lowest KL",
                "trials": [t.to_dict() for t in self.trials]}


def choose_observer(model, images: np.ndarray, *, observers: Sequence[str] = cal.OBSERVERS,
                    scheme: str = "static") -> ObserverChoice:
    """Calibrate with each observer, convert, and keep the one whose INT8 model agrees best with FP32.

    No one range rule fits every model: L2-optimal (``histogram``) and ``minmax`` ranges cover the rare
    images whose late activations are 30-80x the usual ones (seen on a better-trained demo model:
    static INT8 agreement 16%), while ``percentile``/``moving_average`` clip them and win there, and
    lose elsewhere (docs/export.md). So ``auto`` measures: top-1 agreement with FP32 on ``images``
    (the calibration images; the ranges are not fitted to agreement, so in-sample is fair between
    observers), ties broken by the lower KL divergence.

    ``scheme`` ``hybrid`` (``cal.hybrid_quantizer``) calibrates only the depthwise convs; its models run
    one image at a time, as on the device, because their run-time ranges are computed per call.
    """
    measured: list[tuple[ObserverTrial, Any]] = []
    fp32_logits = None
    started = time.perf_counter()
    for observer, prepared in cal.calibrate_each(model, images, observers, scheme=scheme):
        measure = _Measure(model, prepared, images, fp32_logits=fp32_logits,
                           batch_size=1 if scheme == "hybrid" else 64)
        fp32_logits = measure.fp32_logits
        agreement, kl, mad = measure()
        trial = ObserverTrial(observer=observer, top1_agreement=agreement, kl_divergence=kl, mean_abs_diff=mad,
                              seconds=round(time.perf_counter() - started, 2))
        log.info("calibration observer %s: agreement %.3f, KL %.2e (%.1f s)", observer, agreement, kl, trial.seconds)
        measured.append((trial, prepared))
        started = time.perf_counter()
    if not measured:
        raise ValueError("choose_observer needs at least one observer")
    measured.sort(key=lambda tp: (-tp[0].top1_agreement, tp[0].kl_divergence, tp[0].mean_abs_diff))
    best, prepared = measured[0]
    return ObserverChoice(observer=best.observer, prepared=prepared, trials=tuple(t for t, _ in measured))


def analyse_sensitivity(model, prepared, images: np.ndarray, *, groups: Sequence[str] | None = None,
                        on_group: Callable[[GroupSensitivity], None] | None = None) -> list[GroupSensitivity]:
    """Quantize each layer group alone and rank the groups by the damage done (worst first).

    Args:
        model: the eager FP32 model (eval mode).
        prepared: the model calibrated by ``calibration.calibrate`` (on ``images``).
        images: float32 NCHW images to measure on (the calibration images).
        groups: layer groups to test (default ``calibration.layer_groups(model)``).
        on_group: called with each result as it is measured (progress).

    Returns:
        One ``GroupSensitivity`` per group, lowest agreement first, then highest KL divergence.
    """
    groups = list(groups or cal.layer_groups(model))
    layers = cal.group_layers(model, groups)
    weight_bytes = cal.group_weight_bytes(model, groups)
    measure = _Measure(model, prepared, images)
    results = []
    for group in groups:
        started = time.perf_counter()
        agreement, kl, mad = measure(only_groups=[group])
        result = GroupSensitivity(group=group, layers=len(layers[group]), weight_bytes_fp32=weight_bytes[group],
                                  top1_agreement=agreement, kl_divergence=kl, mean_abs_diff=mad)
        log.info("sensitivity %s: agreement %.3f, KL %.2e (%.1f s)", group, agreement, kl,
                 time.perf_counter() - started)
        if on_group:
            on_group(result)
        results.append(result)
    return rank(results)


def rank(results: Sequence[GroupSensitivity]) -> list[GroupSensitivity]:
    """Most damaging first: lowest agreement, then highest KL divergence, then highest |logit difference|."""
    return sorted(results, key=lambda r: (r.top1_agreement, -r.kl_divergence, -r.mean_abs_diff))


def select_fp32_groups(model, prepared, images: np.ndarray, ranking: Sequence[GroupSensitivity], *,
                       target_agreement: float, max_fp32_layer_share: float = 0.10,
                       max_fp32_weight_share: float = 0.03) -> MixedSelection:
    """Keep the most sensitive groups in FP32, one more at a time, until ``target_agreement`` is met.

    Agreement is measured on ``images`` (the calibration images) with everything else INT8. A group
    is passed over when keeping it FP32 too would leave more than ``max_fp32_layer_share`` of the
    weight layers, or more than ``max_fp32_weight_share`` of the weight bytes, in FP32 (each FP32
    weight costs 4 bytes where INT8 costs 1: 3% of the weights in FP32 adds ~0.02 to the size ratio).
    """
    layers = cal.group_layers(model, [r.group for r in ranking])
    all_groups = cal.layer_groups(model)
    total_layers = sum(len(v) for v in cal.group_layers(model, all_groups).values())
    weight_bytes = cal.group_weight_bytes(model, all_groups)
    total_bytes = max(sum(weight_bytes.values()), 1)
    measure = _Measure(model, prepared, images)
    fp32: list[str] = []
    steps: list[dict[str, Any]] = []
    candidates = list(ranking)
    while True:
        agreement, kl, mad = measure(fp32_groups=list(fp32))
        steps.append({"fp32_groups": list(fp32), "top1_agreement": agreement, "kl_divergence": kl,
                      "mean_abs_diff": mad})
        log.info("mixed: FP32 groups %s -> agreement %.3f", fp32 or "none", agreement)
        if agreement >= target_agreement:
            stopped = "target met"
            break
        used = sum(len(layers[g]) for g in fp32)
        used_bytes = sum(weight_bytes[g] for g in fp32)
        # the most sensitive group that still fits under both FP32 limits (bigger ones are passed over)
        fitting = [c for c in candidates
                   if (used + len(layers[c.group])) / max(total_layers, 1) <= max_fp32_layer_share
                   and (used_bytes + weight_bytes[c.group]) / total_bytes <= max_fp32_weight_share]
        if not fitting:
            stopped = (f"no further group fits under the FP32 limits ({max_fp32_layer_share:.0%} of the weight "
                       f"layers, {max_fp32_weight_share:.0%} of the weight bytes)" if candidates
                       else "every group is FP32")
            break
        nxt = fitting[0]
        candidates.remove(nxt)
        fp32.append(nxt.group)
    return MixedSelection(
        fp32_groups=tuple(fp32), fp32_layers=tuple(name for g in fp32 for name in layers[g]),
        target_agreement=target_agreement, reached_agreement=steps[-1]["top1_agreement"],
        target_met=steps[-1]["top1_agreement"] >= target_agreement, stopped_because=stopped, steps=tuple(steps))
