"""Statistics against values computed by hand (see each test's comment for the arithmetic)."""

from __future__ import annotations

import math

import pytest

from device_results import stats


def test_wilson_matches_hand_computation():
    # 8/10, z = 1.959964: z^2 = 3.841459, denom = 1.3841459, centre = (0.8 + 0.1920729) / denom = 0.716737,
    # half = z / denom * sqrt(0.8 * 0.2 / 10 + z^2 / 400) = 1.4160085 * 0.1600114 = 0.2265775,
    # so (0.71674 - 0.22658, 0.71674 + 0.22658) = (0.49016, 0.94332) (published tables: 0.4902, 0.9433).
    low, high = stats.wilson_interval(8, 10)
    assert low == pytest.approx(0.49016, abs=1e-5)
    assert high == pytest.approx(0.94332, abs=1e-5)


def test_wilson_edges():
    # 0/10: centre = 0.1920729 / 1.3841459 = 0.138767, half = 1.416009 * sqrt(3.841459 / 400) = 0.138767... upper
    # = 2 * 0.138767 = 0.277533.
    low, high = stats.wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.277533, abs=1e-6)
    low, high = stats.wilson_interval(10, 10)
    assert low == pytest.approx(1 - 0.277533, abs=1e-6)
    assert high == 1.0
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(stats.StatsError):
        stats.wilson_interval(11, 10)


def test_accuracy_proportion():
    p = stats.accuracy([True] * 8 + [False] * 2)
    assert (p.successes, p.n, p.value) == (8, 10, 0.8)
    assert p.low == pytest.approx(0.49016, abs=1e-5)
    assert math.isnan(stats.accuracy([]).value)


def test_mcnemar_exact_hand_values():
    # b=1, c=6: n=7, P[X <= 1] = (C(7,0) + C(7,1)) / 2^7 = 8/128, two-sided 0.125.
    assert stats.mcnemar_exact_p(1, 6) == pytest.approx(0.125)
    assert stats.mcnemar_exact_p(6, 1) == pytest.approx(0.125)
    # b=0, c=5: 2 * 1/32 = 0.0625.
    assert stats.mcnemar_exact_p(0, 5) == pytest.approx(0.0625)
    # b=3, c=3: 2 * 42/64 > 1 -> 1.
    assert stats.mcnemar_exact_p(3, 3) == 1.0
    assert stats.mcnemar_exact_p(0, 0) == 1.0
    # b=2, c=10: P[X <= 2] = (1 + 12 + 66) / 4096 = 79/4096, two-sided 158/4096.
    assert stats.mcnemar_exact_p(2, 10) == pytest.approx(158 / 4096)


def test_mcnemar_from_paired_flags():
    a = [True, True, False, False, True, False, True]
    b = [True, False, True, True, True, True, False]
    r = stats.mcnemar_exact(a, b)
    assert (r.both_correct, r.only_a_correct, r.only_b_correct, r.both_wrong) == (2, 2, 3, 0)
    # n=5 discordant, min=2: P[X <= 2] = (1 + 5 + 10) / 32 = 0.5 -> p = 1.
    assert r.p_value == 1.0
    with pytest.raises(stats.StatsError):
        stats.mcnemar_exact([True], [True, False])


def test_percentile_linear_interpolation():
    xs = [4.0, 1.0, 3.0, 2.0]
    assert stats.percentile(xs, 50) == pytest.approx(2.5)
    assert stats.percentile(xs, 90) == pytest.approx(3.7)  # h = 3 * 0.9 = 2.7 -> 3 + 0.7 * 1
    assert stats.percentile(xs, 99) == pytest.approx(3.97)
    assert stats.percentile(xs, 0) == 1.0
    assert stats.percentile(xs, 100) == 4.0
    assert stats.percentile([15, 20, 35, 40, 50], 40) == pytest.approx(29.0)  # h = 1.6 -> 20 + 0.6 * 15
    assert stats.percentile([7.0], 90) == 7.0
    with pytest.raises(stats.StatsError):
        stats.percentile([], 50)
    with pytest.raises(stats.StatsError):
        stats.percentile([1.0], 101)


def test_latency_summary_hand_values():
    s = stats.latency_summary([10.0, 14.0, 12.0])
    assert s.n == 3
    assert s.median_ms == 12.0
    assert s.mean_ms == 12.0
    assert s.std_ms == pytest.approx(2.0)  # sqrt((4 + 0 + 4) / 2)
    assert s.cv == pytest.approx(1 / 6)
    assert s.p90_ms == pytest.approx(13.6)  # h = 1.8 -> 12 + 0.8 * 2
    assert (s.min_ms, s.max_ms) == (10.0, 14.0)
    one = stats.latency_summary([5.0])
    assert math.isnan(one.std_ms) and math.isnan(one.cv)
    with pytest.raises(stats.StatsError):
        stats.latency_summary([1.0, -2.0])


def test_top1_agreement():
    p = stats.top1_agreement([0, 1, 2, 3], [0, 1, 0, 3])
    assert (p.successes, p.n, p.value) == (3, 4, 0.75)


def test_bootstrap_ratio_is_seeded_and_exact_on_scaled_pairs():
    base = [10.0, 11.0, 13.0, 9.0, 12.0, 15.0, 10.5]
    doubled = [2 * x for x in base]
    r = stats.bootstrap_ratio_ci(doubled, base, paired=True, n_resamples=500, seed=3)
    assert r.ratio == pytest.approx(2.0)
    assert (r.low, r.high) == (pytest.approx(2.0), pytest.approx(2.0))
    a = stats.bootstrap_ratio_ci(doubled, base, n_resamples=500, seed=3)
    b = stats.bootstrap_ratio_ci(doubled, base, n_resamples=500, seed=3)
    c = stats.bootstrap_ratio_ci(doubled, base, n_resamples=500, seed=4)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)
    assert a.low <= a.ratio <= a.high
    with pytest.raises(stats.StatsError):
        stats.bootstrap_ratio_ci([1.0], [1.0, 2.0], paired=True)
    with pytest.raises(stats.StatsError):
        stats.bootstrap_ratio_ci([1.0], [0.0])


# --- scipy does the work where it can; what stays by hand is checked against scipy or an independent sum -----


def test_wilson_agrees_with_the_closed_form_everywhere():
    # The closed form in the module docstring, evaluated directly, for every k of n up to 60.
    z = 1.959963984540054
    for n in range(1, 61):
        for k in range(n + 1):
            p, z2 = k / n, z * z
            centre = (p + z2 / (2 * n)) / (1 + z2 / n)
            half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
            low, high = stats.wilson_interval(k, n)
            assert low == pytest.approx(max(0.0, centre - half), abs=1e-12)
            assert high == pytest.approx(min(1.0, centre + half), abs=1e-12)
    assert stats.wilson_interval(7, 20, confidence=0.99)[0] < stats.wilson_interval(7, 20)[0]
    with pytest.raises(stats.StatsError):
        stats.wilson_interval(3, 10, confidence=1.5)


def test_mcnemar_agrees_with_exact_fractions():
    from fractions import Fraction

    for b in range(0, 40):
        for c in range(0, 40):
            n = b + c
            exact = 1.0 if n == 0 else float(min(Fraction(1), 2 * Fraction(
                sum(math.comb(n, i) for i in range(min(b, c) + 1)), 2**n)))
            assert stats.mcnemar_exact_p(b, c) == pytest.approx(exact, rel=1e-12, abs=1e-300)


def test_percentile_and_latency_summary_agree_with_numpy():
    import numpy as np

    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 10, 101):
        xs = rng.gamma(4.0, 2.0, size=n).tolist()
        for q in (0, 10, 50, 90, 99, 100):
            # Type 7 by hand: h = (n - 1) q / 100, interpolate between the neighbouring order statistics.
            ys = sorted(xs)
            h = (n - 1) * q / 100
            lo = math.floor(h)
            by_hand = ys[lo] + (h - lo) * (ys[min(lo + 1, n - 1)] - ys[lo])
            assert stats.percentile(xs, q) == pytest.approx(by_hand, rel=1e-12)
        s = stats.latency_summary(xs)
        assert s.mean_ms == pytest.approx(float(np.mean(xs)), rel=1e-12)
        assert s.median_ms == pytest.approx(float(np.median(xs)), rel=1e-12)
        if n > 1:
            assert s.std_ms == pytest.approx(float(np.std(xs, ddof=1)), rel=1e-12)


def test_order_statistic_interval_agrees_with_scipy_where_scipy_defines_it():
    import numpy as np
    from scipy import stats as scipy_stats

    checked = 0
    for n in range(1, 160):
        xs = [float(i) for i in range(1, n + 1)]  # x_(i) = i: the bounds are the ranks
        for q in (0.1, 0.5, 0.75, 0.9):
            iv = stats.order_statistic_interval(xs, q)
            if math.isnan(iv.low):
                # Undefined only when no pair of ranks reaches 95%: even [x_(1), x_(n)] covers less.
                assert 1 - q**n - (1 - q) ** n < 0.95
                continue
            # The exact coverage P(l <= B < u), B ~ Binomial(n, q), reaches 95% (scipy's binomial cdf).
            lo, hi = int(iv.low), int(iv.high)
            assert scipy_stats.binom.cdf(hi - 1, n, q) - scipy_stats.binom.cdf(lo - 1, n, q) >= 0.95 - 1e-12
            ref = scipy_stats.quantile_test(np.array(xs), q=float(np.quantile(xs, q)), p=q).confidence_interval(0.95)
            if not (math.isnan(ref.low) or math.isnan(ref.high)):
                assert (iv.low, iv.high) == (ref.low, ref.high), (n, q)
                checked += 1
    assert checked > 300


def test_bootstrap_holds_a_one_value_sample_fixed_and_matches_scipy():
    import numpy as np
    from scipy import stats as scipy_stats

    den = [10.0, 11.0, 13.0, 9.0, 12.0, 15.0, 10.5]
    r = stats.bootstrap_ratio_ci([22.0], den, n_resamples=400, seed=5)
    ref = scipy_stats.bootstrap((np.array(den),), lambda y, axis=-1: 22.0 / np.median(y, axis=axis), n_resamples=400,
                                vectorized=True, method="percentile", rng=np.random.default_rng(5))
    assert r.ratio == pytest.approx(22.0 / 11.0)
    assert (r.low, r.high) == (ref.confidence_interval.low, ref.confidence_interval.high)
    assert r.low < r.ratio < r.high
    one = stats.bootstrap_ratio_ci([4.0], [2.0])
    assert (one.ratio, one.low, one.high) == (2.0, 2.0, 2.0)
    # Unpaired resampling of two samples: a ratio of medians whose interval holds the point estimate.
    num = [20.0, 23.0, 21.0, 26.0, 22.0]
    u = stats.bootstrap_ratio_ci(num, den, n_resamples=1000, seed=0)
    assert u.low <= u.ratio <= u.high and u.ratio == pytest.approx(22.0 / 11.0)
    assert 1.5 < u.low and u.high < 2.7
