"""Depthwise channel equalization: every channel around a depthwise conv brought to one activation range.

Per-tensor INT8 gives all channels of an activation one scale. Around a depthwise conv the channels'
ranges differ by orders of magnitude, so the narrow channels get a handful of levels; widening the
range makes it worse (docs/export.md). A depthwise conv mixes no channels, so each channel can be
rescaled on its own, exactly:

- input side: channel ``c`` of the conv's input is multiplied by ``1 / t_c`` and the conv's weights
  by ``t_c`` (``dw(x / t; w * t) == dw(x; w)``), the multiply in FP32 before the input is quantized;
- output side: the following batch norm's scale and shift are divided by ``s_c`` and its output is
  multiplied by ``s_c`` again (an FP32 multiply after the quantized conv output, before the activation).

with ``t_c``, ``s_c`` each channel's largest magnitude on the calibration images, relative to the
largest channel. In FP32 the model is unchanged (to float rounding); quantized, every channel of those
two activations uses the whole INT8 range: per-channel activation quantization, emulated with two
multiplies per depthwise conv that XNNPACK runs in FP32.

Applies to timm's depthwise blocks (``InvertedResidual``: ``conv_dw`` -> ``bn2``;
``DepthwiseSeparableConv``: ``conv_dw`` -> ``bn1``), i.e. EfficientNet, MobileNetV3, MobileViT's MBConv
stages; a depthwise conv elsewhere is left as it is and reported.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# timm block class -> the batch norm (with activation) that follows its depthwise conv ``conv_dw``
_BN_AFTER_DW = {"InvertedResidual": "bn2", "DepthwiseSeparableConv": "bn1"}
_MIN_RELATIVE_RANGE = 1e-3  # a channel that never fires is scaled as if it reached 0.1% of the widest


@dataclass(frozen=True)
class Equalization:
    """What ``equalize_depthwise`` changed: the depthwise convs equalized and those it could not."""

    layers: tuple[str, ...]
    skipped: tuple[str, ...]
    images: int
    widest_over_narrowest: float  # before: the largest ratio of channel ranges at one equalized activation

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "skipped": list(self.skipped), "images": self.images,
                "ranges_from": "largest |activation| per channel on the calibration images",
                "widest_over_narrowest": round(self.widest_over_narrowest, 1)}


def _channel_scale(scale):
    import torch
    from torch import nn

    class ChannelScale(nn.Module):
        """Multiplies channel ``c`` of an NCHW tensor by ``scale[c]`` (in FP32)."""

        scale: torch.Tensor

        def __init__(self, scale: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("scale", scale.reshape(1, -1, 1, 1).clone())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale

    return ChannelScale(scale)


def _input_scaled(conv, inv_scale):
    """``conv`` as a Conv2d of the same name whose input is first multiplied by ``inv_scale`` per channel."""
    from torch import nn

    class InputScaledConv2d(nn.Conv2d):
        def forward(self, x):
            return super().forward(x * self.input_scale)

    new = InputScaledConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    new.load_state_dict(conv.state_dict())
    new.register_buffer("input_scale", inv_scale.reshape(1, -1, 1, 1).clone())
    return new


def _depthwise_sites(model) -> tuple[list[tuple[str, Any, Any]], list[str]]:
    """(name, block, batch norm after it) of every equalizable depthwise conv, and the names of the others."""
    from torch import nn

    from export.quant_report import is_depthwise

    sites, skipped = [], []
    for name, module in model.named_modules():
        if not (isinstance(module, nn.Conv2d) and is_depthwise(tuple(module.weight.shape), module.groups)
                and module.out_channels == module.in_channels):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        bn = getattr(parent, _BN_AFTER_DW.get(type(parent).__name__, ""), None)
        if (attr != "conv_dw" or not isinstance(bn, nn.BatchNorm2d) or bn.weight is None or bn.running_var is None
                or not isinstance(getattr(bn, "drop", None), nn.Module)):
            skipped.append(name)
            continue
        sites.append((name, parent, bn))
    return sites, skipped


def equalize_depthwise(model, images: np.ndarray, *, batch_size: int = 32) -> tuple[Any, Equalization]:
    """A copy of ``model`` (eval) with the channels around its depthwise convs equalized on ``images``.

    Returns:
        (the equalized copy, what was done). The copy computes the same function in FP32.
    """
    import torch

    equalized = copy.deepcopy(model).eval()
    sites, skipped = _depthwise_sites(equalized)
    ranges: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def observe(name: str, bn):
        def hook(_module, inputs, output):
            pre_activation = torch.nn.functional.batch_norm(output, bn.running_mean, bn.running_var, bn.weight,
                                                            bn.bias, False, 0.0, bn.eps)
            seen = (inputs[0].abs().amax(dim=(0, 2, 3)), pre_activation.abs().amax(dim=(0, 2, 3)))
            old = ranges.get(name)
            ranges[name] = seen if old is None else (torch.maximum(old[0], seen[0]), torch.maximum(old[1], seen[1]))
        return hook

    handles = [parent.get_submodule("conv_dw").register_forward_hook(observe(name, bn)) for name, parent, bn in sites]
    try:
        x = torch.from_numpy(np.ascontiguousarray(images))
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                equalized(x[start:start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    widest = 1.0
    with torch.no_grad():
        for name, parent, bn in sites:
            in_range, out_range = ranges[name]
            for r in (in_range, out_range):
                widest = max(widest, float(r.max() / r.clamp_min(r.max() * _MIN_RELATIVE_RANGE).min()))
            t = (in_range / in_range.max()).clamp_min(_MIN_RELATIVE_RANGE)
            s = (out_range / out_range.max()).clamp_min(_MIN_RELATIVE_RANGE)
            conv = _input_scaled(parent.conv_dw, 1.0 / t)
            conv.weight.mul_(t.reshape(-1, 1, 1, 1))
            parent.conv_dw = conv
            bn.weight.div_(s)
            bn.bias.div_(s)
            bn.drop = torch.nn.Sequential(_channel_scale(s), bn.drop)  # after the norm, before the activation
    if skipped:
        log.info("depthwise equalization: %d conv(s) outside timm's depthwise blocks left as they are: %s",
                 len(skipped), ", ".join(skipped))
    return equalized, Equalization(layers=tuple(n for n, _, _ in sites), skipped=tuple(skipped),
                                   images=int(images.shape[0]), widest_over_narrowest=widest)
