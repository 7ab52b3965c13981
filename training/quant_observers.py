"""Activation range observers for INT8 calibration, shared by static INT8 export and QAT's range init.

- ``minmax``: the widest range seen (``MinMaxObserver``): no clipping, coarsest steps;
- ``moving_average``: the per-batch min/max averaged (``MovingAverageMinMaxObserver``, constant 0.01);
- ``histogram``: the range that minimises the L2 quantization error of a 2048-bin histogram
  (``HistogramObserver``, the XNNPACK quantizer's own default for static INT8);
- ``percentile``: the 0.01th / 99.99th percentile of each batch, averaged over batches
  (``PercentileObserver`` below): clips the rare extreme activations of SiLU/SE blocks.

No one of them is safe for every model (docs/export.md), so both users measure: ``export`` picks the
observer whose converted model agrees best with FP32 (``export.sensitivity.choose_observer``), QAT the
one whose fake-quantized graph does (``training.qat.QatModel.init_ranges``).
"""

from __future__ import annotations

from typing import Any

OBSERVERS: tuple[str, ...] = ("minmax", "moving_average", "histogram", "percentile")
PERCENTILE = 99.99
EPS = 2**-12  # the XNNPACK quantizer's own eps
# torch.quantile refuses inputs above 2**24 elements; a strided sample keeps the estimate cheap.
_MAX_QUANTILE_ELEMENTS = 1 << 20


def _percentile_observer_class() -> type:
    from torchao.quantization.pt2e.observer import MinMaxObserver

    class PercentileObserver(MinMaxObserver):
        """Activation range = low/high percentile of each batch, averaged over the calibration batches.

        Unlike min/max, a handful of extreme activations do not stretch the range (and the step size)
        for every other value; unlike the histogram search it needs no per-batch re-binning.
        """

        def __init__(self, *args: Any, percentile: float = PERCENTILE, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.percentile = float(percentile)
            self.batches = 0

        def forward(self, x_orig):
            import torch

            if x_orig.numel() == 0:
                return x_orig
            x = x_orig.detach().to(self.min_val.dtype).flatten()
            if x.numel() > _MAX_QUANTILE_ELEMENTS:
                x = x[:: -(-x.numel() // _MAX_QUANTILE_ELEMENTS)]
            q = torch.tensor([1.0 - self.percentile / 100.0, self.percentile / 100.0], dtype=x.dtype)
            low, high = torch.quantile(x, q)
            low, high = torch.minimum(low, x.new_zeros(())), torch.maximum(high, x.new_zeros(()))
            n = self.batches
            if n == 0:
                self.min_val.resize_(low.shape).copy_(low)
                self.max_val.resize_(high.shape).copy_(high)
            else:  # running mean of the per-batch percentiles
                self.min_val.copy_(self.min_val + (low - self.min_val) / (n + 1))
                self.max_val.copy_(self.max_val + (high - self.max_val) / (n + 1))
            self.batches = n + 1
            return x_orig

    PercentileObserver.__module__ = __name__
    PercentileObserver.__qualname__ = "PercentileObserver"
    return PercentileObserver


_PERCENTILE_CLASS: type | None = None


def percentile_observer_class() -> type:
    """The ``PercentileObserver`` class (built lazily so importing this module needs no torchao)."""
    global _PERCENTILE_CLASS
    if _PERCENTILE_CLASS is None:
        _PERCENTILE_CLASS = _percentile_observer_class()
    return _PERCENTILE_CLASS


def activation_observer(observer: str):
    """The observer constructor (``with_args``) for activations named ``observer`` (one of ``OBSERVERS``).

    Raises:
        ValueError: an unknown name.
    """
    from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

    if observer == "minmax":
        return MinMaxObserver.with_args(eps=EPS)
    if observer == "moving_average":
        return MovingAverageMinMaxObserver.with_args(eps=EPS, averaging_constant=0.01)
    if observer == "histogram":
        return HistogramObserver.with_args(eps=EPS)
    if observer == "percentile":
        percentile: Any = percentile_observer_class()
        return percentile.with_args(eps=EPS)
    raise ValueError(f"unknown activation observer {observer!r}; choose from {', '.join(OBSERVERS)}")
