"""The shape every benchmark shares.

A benchmark module ``bench/bench_<area>.py`` defines ``run(*, quick: bool) -> list[Figure]`` and
ends with ``if __name__ == "__main__": main(run)``. ``python -m bench`` runs each module in its own
process and prints one table; ``--quick`` is a smoke run the test suite exercises.

Ratios come from paired, interleaved runs (``paired_rounds`` / ``interleaved``) with a 95% percentile-bootstrap
interval over the pairs (``paired_ratio_interval``); ``interval_figure`` judges "met" on the interval's bound,
so a target is met only when the whole interval meets it.

Rules: warm up, repeat, report medians and the spread; a figure that could not be measured raises
(``BenchmarkError``) rather than reporting a number; a figure that needs hardware this machine lacks
is ``Figure.not_measured(...)`` with the command that measures it where the hardware exists.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass


class BenchmarkError(RuntimeError):
    """A figure could not be measured."""


@dataclass(frozen=True)
class Figure:
    """One measured figure and the reference it was measured against in the same run."""

    name: str
    value: float | None
    unit: str
    reference: float | None = None
    reference_label: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    spread: str = ""
    note: str = ""
    ratio_low: float | None = None  # the ratio's 95% interval (paired bootstrap), where the ratio has one
    ratio_high: float | None = None

    @staticmethod
    def not_measured(name: str, *, reason: str, command: str, target: str = "") -> Figure:
        return Figure(name=name, value=None, unit="", target=target, met=None,
                      note=f"not measured here: {reason}; measure with: {command}")


@dataclass(frozen=True)
class Timing:
    """Wall-clock samples of one measured callable, in seconds."""

    samples_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3

    def quantile_s(self, q: float) -> float:
        xs = sorted(self.samples_s)
        if len(xs) == 1:
            return xs[0]
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    def spread_ms(self) -> str:
        return f"p25-p75 {self.quantile_s(0.25) * 1e3:.2f}-{self.quantile_s(0.75) * 1e3:.2f} ms, n={len(self.samples_s)}"


def measure(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 10) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed with perf_counter."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Timing(tuple(samples))


def interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 2, repeats: int = 10) -> dict[str, Timing]:
    """Time several callables alternately (a, b, a, b, ...) so drift on a shared machine hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[key].append(time.perf_counter() - t0)
    return {k: Timing(tuple(v)) for k, v in samples.items()}


def ratio_figure(name: str, *, value: float, reference: float, unit: str, reference_label: str,
                 target_max: float | None = None, target_min: float | None = None, spread: str = "",
                 note: str = "") -> Figure:
    """A figure whose ratio is value/reference, checked against ``target_max`` or ``target_min``."""
    if not (math.isfinite(value) and math.isfinite(reference)) or reference <= 0 or value < 0:
        raise BenchmarkError(f"{name}: cannot form a ratio of {value!r} over {reference!r} {unit}; "
                             "the measurement failed")
    ratio = value / reference
    if target_max is not None:
        target, met = f"ratio <= {target_max:g}", ratio <= target_max
    elif target_min is not None:
        target, met = f"ratio >= {target_min:g}", ratio >= target_min
    else:
        target, met = "", None
    return Figure(name=name, value=value, unit=unit, reference=reference, reference_label=reference_label,
                  ratio=ratio, target=target, met=met, spread=spread, note=note)


@dataclass(frozen=True)
class RatioInterval:
    """A ratio of medians from paired samples and its percentile-bootstrap interval."""

    ratio: float
    low: float
    high: float
    pairs: int
    confidence: float = 0.95


def paired_ratio_interval(values: Sequence[float], references: Sequence[float], *, confidence: float = 0.95,
                          resamples: int = 4000, seed: int = 0) -> RatioInterval:
    """median(values) / median(references), with a bootstrap interval that resamples the PAIRS.

    ``values[i]`` and ``references[i]`` must come from the same round of an interleaved run (``interleaved``
    or ``paired_rounds``), so that drift on a shared machine hits both members of a pair alike.
    """
    import numpy as np

    v = np.asarray(values, dtype=float)
    r = np.asarray(references, dtype=float)
    if v.shape != r.shape or v.ndim != 1 or len(v) < 2:
        raise BenchmarkError(f"paired ratio needs two equally long sample lists of >= 2, got {v.shape} and {r.shape}")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(r))) or np.median(r) <= 0:
        raise BenchmarkError("paired ratio: samples are not finite or the reference median is not positive")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(resamples, len(v)))
    boot = np.median(v[idx], axis=1) / np.median(r[idx], axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return RatioInterval(float(np.median(v) / np.median(r)), float(low), float(high), len(v), confidence)


def median_interval(samples: Sequence[float], *, confidence: float = 0.95, resamples: int = 4000,
                    seed: int = 0) -> RatioInterval:
    """The median of per-round ratios (each already paired inside its round) with a bootstrap interval."""
    import numpy as np

    x = np.asarray(samples, dtype=float)
    if x.ndim != 1 or len(x) < 2 or not np.all(np.isfinite(x)):
        raise BenchmarkError(f"median interval needs >= 2 finite samples, got {x.shape}")
    rng = np.random.default_rng(seed)
    boot = np.median(x[rng.integers(0, len(x), size=(resamples, len(x)))], axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return RatioInterval(float(np.median(x)), float(low), float(high), len(x), confidence)


def interval_figure(name: str, interval: RatioInterval, *, value: float, reference: float, unit: str,
                    reference_label: str, target_max: float | None = None, target_min: float | None = None,
                    note: str = "", basis: str = "paired, interleaved rounds") -> Figure:
    """A ratio figure judged on its interval's bound: ``met`` only when the whole interval meets the target.

    ``target_max``: met when the upper bound <= target; ``target_min``: met when the lower bound >= target.
    """
    if target_max is not None:
        target, met = f"ratio <= {target_max:g} (95% upper bound)", interval.high <= target_max
    elif target_min is not None:
        target, met = f"ratio >= {target_min:g} (95% lower bound)", interval.low >= target_min
    else:
        target, met = "", None
    spread = f"95% CI [{interval.low:.3g}, {interval.high:.3g}] (bootstrap over {interval.pairs} {basis})"
    return Figure(name=name, value=value, unit=unit, reference=reference, reference_label=reference_label,
                  ratio=interval.ratio, target=target, met=met, spread=spread, note=note, ratio_low=interval.low,
                  ratio_high=interval.high)


def paired_rounds(fns: dict[str, Callable[[], float]], *, rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Call each ``fn`` once per round, alternating the order every round; each returns its own measurement."""
    keys = list(fns)
    for _ in range(warmup):
        for key in keys:
            fns[key]()
    out: dict[str, list[float]] = {k: [] for k in keys}
    for i in range(rounds):
        for key in (keys if i % 2 == 0 else list(reversed(keys))):
            out[key].append(float(fns[key]()))
    return out


def main(run: Callable[..., list[Figure]]) -> None:
    """Entry point of one benchmark module: ``--quick`` and ``--json`` (one JSON list on stdout)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smallest sizes: a smoke run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = run(quick=args.quick)
    if args.json:
        json.dump([asdict(f) for f in figures], sys.stdout)
        sys.stdout.write("\n")
    else:
        for f in figures:
            sys.stdout.write(f"{f.name}: {f.value} {f.unit} (ref {f.reference} {f.reference_label}) "
                             f"ratio={f.ratio} target={f.target} met={f.met} {f.spread} {f.note}\n")
