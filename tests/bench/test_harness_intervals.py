"""Paired bootstrap intervals in the bench harness: ratios of medians judged on their bound."""

from __future__ import annotations

import numpy as np
import pytest

from bench.harness import (
    BenchmarkError,
    interval_figure,
    median_interval,
    paired_ratio_interval,
    paired_rounds,
)


def test_paired_interval_cancels_shared_drift():
    rng = np.random.default_rng(1)
    drift = np.linspace(10, 30, 40)  # the machine slows down over the run, for both members of each pair
    reference = drift * (1 + rng.normal(0, 0.01, 40))
    value = 1.1 * drift * (1 + rng.normal(0, 0.01, 40))
    interval = paired_ratio_interval(value, reference)
    assert interval.pairs == 40 and interval.low <= interval.ratio <= interval.high
    assert interval.ratio == pytest.approx(np.median(value) / np.median(reference))
    assert 1.0 < interval.low < 1.1 < interval.high < 1.2


def test_met_is_judged_on_the_bound_not_the_point():
    rng = np.random.default_rng(2)
    reference = rng.normal(100, 10, 12)
    value = reference * rng.normal(1.12, 0.08, 12)  # point estimate below 1.15, interval reaching above it
    interval = paired_ratio_interval(value, reference)
    assert interval.ratio < 1.15 < interval.high
    fig = interval_figure("x", interval, value=1.0, reference=1.0, unit="ms", reference_label="r", target_max=1.15)
    assert fig.met is False and fig.ratio_low == interval.low and fig.ratio_high == interval.high
    assert "95% CI" in fig.spread and "(95% upper bound)" in fig.target
    tight = paired_ratio_interval(reference * 1.01, reference)
    assert interval_figure("y", tight, value=1.0, reference=1.0, unit="ms", reference_label="r",
                           target_max=1.15).met is True
    assert interval_figure("z", tight, value=1.0, reference=1.0, unit="ms", reference_label="r",
                           target_min=1.05).met is False


def test_median_interval_and_bad_input():
    interval = median_interval([0.99, 0.995, 0.992, 0.997, 0.991])
    assert interval.low <= 0.992 <= interval.high and interval.high <= 0.997
    with pytest.raises(BenchmarkError):
        paired_ratio_interval([1.0, 2.0], [1.0])
    with pytest.raises(BenchmarkError):
        paired_ratio_interval([1.0, 2.0], [0.0, 0.0])


def test_paired_rounds_alternate_the_order():
    calls: list[str] = []

    def make(key: str):
        def fn() -> float:
            calls.append(key)
            return float(len(calls))
        return fn

    out = paired_rounds({"a": make("a"), "b": make("b")}, rounds=4, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(out["a"]) == len(out["b"]) == 4
