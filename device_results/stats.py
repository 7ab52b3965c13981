"""Pure statistics for the ablation: proportions, paired tests, latency summaries, ratios.

Nothing here touches the store, the disk or the clock; every function is deterministic (the
bootstrap takes an explicit seed). Definitions, stated once so reports can quote them:

- **Wilson score interval** for a proportion k/n at 95% (scipy's
  ``binomtest(k, n).proportion_ci(method="wilson")``): centre ``(p + z^2/2n) / (1 + z^2/n)``,
  half-width ``z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2)``, z = 1.959963984540054; n = 0 gives
  the uninformative interval (0, 1).
- **McNemar's exact test** on paired correctness: with b = pairs where only A is correct and
  c = pairs where only B is correct, the two-sided p-value is
  ``min(1, 2 * P[X <= min(b, c)])`` for X ~ Binomial(b + c, 1/2) (scipy's exact binomial test);
  b + c = 0 gives p = 1.
- **Percentiles** use linear interpolation between order statistics (Hyndman & Fan type 7, numpy's
  default): for sorted x of length n, position ``h = (n - 1) q / 100``, value
  ``x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h])``.
- **Order-statistic interval of a quantile**: ``[x_(l), x_(u)]`` (1-based ranks) with ``l`` and
  ``u`` the equal-tailed quantiles of ``B ~ Binomial(n, q)``, widened until the exact coverage
  ``P(l <= B < u)`` reaches the confidence; distribution-free, and NaN where n is too small.
  (scipy's ``quantile_test`` interval is the equal-tailed one without the widening, so it leaves a
  bound undefined more often; the two agree wherever scipy's is defined.)
- **Standard deviation** is the sample one (n - 1 in the denominator); with one value it is NaN,
  not zero, and so is the coefficient of variation (std / mean).
- **Bootstrap interval of a latency ratio**: percentile bootstrap of ``stat(A) / stat(B)``
  (stat = median by default) by ``scipy.stats.bootstrap``, resampling with replacement from a
  seeded generator; paired resampling (the same indices for A and B) when the two samples are
  paired by experiment. A sample of one value is its own every resample, so it is held fixed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats


class StatsError(ValueError):
    """Inputs a statistic is not defined for (empty data, mismatched lengths, bad quantiles)."""


@dataclass(frozen=True)
class Proportion:
    """k successes out of n with a Wilson interval."""

    successes: int
    n: int
    value: float
    low: float
    high: float
    confidence: float = 0.95


@dataclass(frozen=True)
class McNemarResult:
    """Paired comparison of two classifiers' correctness on the same items."""

    n: int
    both_correct: int
    only_a_correct: int
    only_b_correct: int
    both_wrong: int
    p_value: float


@dataclass(frozen=True)
class LatencySummary:
    """Summary of latency samples in milliseconds."""

    n: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    cv: float
    min_ms: float
    max_ms: float


@dataclass(frozen=True)
class RatioInterval:
    """A ratio of two statistics with its bootstrap percentile interval."""

    ratio: float
    low: float
    high: float
    n_resamples: int
    seed: int
    paired: bool
    confidence: float = 0.95


@dataclass(frozen=True)
class QuantileInterval:
    """The q-quantile (0..1) of a sample with a distribution-free interval (NaN bounds when undefined)."""

    q: float
    value: float
    low: float
    high: float
    confidence: float = 0.95


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise StatsError(f"confidence must be in (0, 1), got {confidence}")


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``successes / n``.

    Raises:
        StatsError: negative counts or successes > n.
    """
    if n < 0 or successes < 0 or successes > n:
        raise StatsError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    _check_confidence(confidence)
    ci = scipy_stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def proportion(successes: int, n: int, *, confidence: float = 0.95) -> Proportion:
    """``successes / n`` (NaN when n = 0) with its Wilson interval."""
    low, high = wilson_interval(successes, n, confidence=confidence)
    value = successes / n if n else math.nan
    return Proportion(successes=successes, n=n, value=value, low=low, high=high, confidence=confidence)


def accuracy(correct: Sequence[bool]) -> Proportion:
    """Accuracy of a sequence of per-item correctness flags, with a Wilson 95% interval."""
    flags = [bool(c) for c in correct]
    return proportion(sum(flags), len(flags))


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c.

    ``min(1, 2 * sum_{i <= min(b, c)} C(b + c, i) / 2^(b + c))``: scipy's exact two-sided binomial
    test of ``min(b, c)`` successes in ``b + c`` trials at p = 1/2.
    """
    if only_a < 0 or only_b < 0:
        raise StatsError(f"discordant counts must be >= 0, got {only_a}, {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    return float(scipy_stats.binomtest(min(only_a, only_b), n, 0.5).pvalue)


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemarResult:
    """McNemar's exact test on paired correctness flags (same items, same order).

    Raises:
        StatsError: the two sequences differ in length.
    """
    if len(correct_a) != len(correct_b):
        raise StatsError(f"paired sequences differ in length: {len(correct_a)} vs {len(correct_b)}")
    both = only_a = only_b = neither = 0
    for a, b in zip(correct_a, correct_b, strict=True):
        a, b = bool(a), bool(b)
        if a and b:
            both += 1
        elif a:
            only_a += 1
        elif b:
            only_b += 1
        else:
            neither += 1
    return McNemarResult(n=len(correct_a), both_correct=both, only_a_correct=only_a, only_b_correct=only_b,
                         both_wrong=neither, p_value=mcnemar_exact_p(only_a, only_b))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation (type 7; numpy's default).

    Raises:
        StatsError: no values, a non-finite value, or q outside [0, 100].
    """
    if not 0 <= q <= 100:
        raise StatsError(f"percentile q must be within [0, 100], got {q}")
    xs = sorted(float(v) for v in values)
    if not xs:
        raise StatsError("percentile of no values")
    if not all(math.isfinite(x) for x in xs):
        raise StatsError("percentile of non-finite values")
    return float(np.percentile(xs, q))


def latency_summary(latencies_ms: Sequence[float]) -> LatencySummary:
    """Median, p90, p99, mean, sample std, CV, min and max of latency samples in ms.

    Raises:
        StatsError: no samples, or a negative or non-finite sample.
    """
    xs = [float(v) for v in latencies_ms]
    if not xs:
        raise StatsError("latency summary of no samples")
    if any(not math.isfinite(x) or x < 0 for x in xs):
        raise StatsError("latency samples must be finite and >= 0")
    n = len(xs)
    mean = math.fsum(xs) / n
    if n > 1:
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
        cv = std / mean if mean > 0 else math.nan
    else:
        std = cv = math.nan
    return LatencySummary(n=n, median_ms=percentile(xs, 50), p90_ms=percentile(xs, 90),
                          p99_ms=percentile(xs, 99), mean_ms=mean, std_ms=std, cv=cv,
                          min_ms=min(xs), max_ms=max(xs))


def top1_agreement(predictions_a: Sequence[int], predictions_b: Sequence[int]) -> Proportion:
    """Share of items where two models (or targets) give the same top-1 class, with a Wilson interval."""
    if len(predictions_a) != len(predictions_b):
        raise StatsError(f"paired predictions differ in length: {len(predictions_a)} vs {len(predictions_b)}")
    same = sum(1 for a, b in zip(predictions_a, predictions_b, strict=True) if int(a) == int(b))
    return proportion(same, len(predictions_a))


_STATISTICS: dict[str, Callable[..., Any]] = {"median": np.median, "mean": np.mean}


def bootstrap_ratio_ci(
    numerator: Sequence[float],
    denominator: Sequence[float],
    *,
    statistic: str = "median",
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    paired: bool = False,
) -> RatioInterval:
    """Percentile-bootstrap interval of ``stat(numerator) / stat(denominator)``.

    Args:
        numerator, denominator: latency samples (e.g. INT8 and FP32 per-batch latencies).
        statistic: 'median' or 'mean'.
        n_resamples: bootstrap resamples.
        confidence: interval coverage.
        seed: the generator seed; the same inputs and seed give the same interval.
        paired: resample the same indices from both (the samples are paired item by item).

    Raises:
        StatsError: empty samples, unequal lengths when paired, a zero denominator statistic.
    """
    if statistic not in _STATISTICS:
        raise StatsError(f"statistic must be one of {sorted(_STATISTICS)}, got {statistic!r}")
    if n_resamples < 1:
        raise StatsError("n_resamples must be >= 1")
    _check_confidence(confidence)
    a = np.asarray(numerator, dtype=np.float64)
    b = np.asarray(denominator, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise StatsError("bootstrap of an empty sample")
    if paired and a.size != b.size:
        raise StatsError(f"paired samples differ in length: {a.size} vs {b.size}")
    stat = _STATISTICS[statistic]
    ref_den = float(stat(b))
    if ref_den == 0:
        raise StatsError("the denominator statistic is zero; the ratio is undefined")
    ratio = float(stat(a)) / ref_den

    if a.size < 2 and b.size < 2:  # every resample is the sample itself
        low = high = ratio
    else:
        fixed_a, fixed_b = float(stat(a)), ref_den  # a sample of one value is its own every resample

        def ratio_of(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
            parts = list(resampled)
            top = stat(parts.pop(0), axis=axis) if a.size >= 2 else fixed_a
            bottom = stat(parts.pop(0), axis=axis) if b.size >= 2 else fixed_b
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.asarray(top / bottom)

        data = tuple(x for x in (a, b) if x.size >= 2)
        result = scipy_stats.bootstrap(data, ratio_of, n_resamples=n_resamples, paired=paired and len(data) == 2,
                                       vectorized=True, confidence_level=confidence, method="percentile",
                                       rng=np.random.default_rng(seed))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return RatioInterval(ratio=ratio, low=low, high=high, n_resamples=n_resamples, seed=seed, paired=paired,
                         confidence=confidence)


def order_statistic_interval(values: Sequence[float], q: float, *, confidence: float = 0.95) -> QuantileInterval:
    """The q-quantile (0..1) of ``values`` with a distribution-free order-statistic interval.

    The interval is ``[x_(l), x_(u)]`` (1-based ranks) with ``l`` and ``u`` the equal-tailed
    binomial quantiles around ``n q``, widened until the exact coverage ``P(l <= B < u)``,
    ``B ~ Binomial(n, q)``, reaches ``confidence``; with too few values the bounds are NaN.
    """
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n == 0:
        raise StatsError("quantile of no values")
    if not 0 < q < 1:
        raise StatsError(f"quantile q must lie in (0, 1), got {q}")
    value = percentile(xs, q * 100)
    pmf = [float(p) for p in scipy_stats.binom.pmf(np.arange(n + 1), n, q)]
    cdf = [0.0]
    for p in pmf:
        cdf.append(cdf[-1] + p)  # cdf[k] = P(B < k)
    alpha = (1 - confidence) / 2
    lo = max(1, next((k for k in range(n + 1) if cdf[k + 1] > alpha), 1))
    hi = min(n, next((k for k in range(n + 1) if cdf[k] >= 1 - alpha), n))
    while cdf[hi] - cdf[lo] < confidence and (lo > 1 or hi < n):
        if lo > 1 and (hi >= n or pmf[lo - 1] >= pmf[hi]):
            lo -= 1
        else:
            hi += 1
    if cdf[hi] - cdf[lo] < confidence or lo >= hi:
        return QuantileInterval(q, value, math.nan, math.nan, confidence)
    return QuantileInterval(q, value, xs[lo - 1], xs[hi - 1], confidence)
