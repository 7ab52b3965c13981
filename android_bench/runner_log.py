"""A pure parser of ExecuTorch ``executor_runner`` output, in every form it comes in.

The runner times each execution itself and logs ``Iteration i of N: X ms`` (then ``Model executed
successfully N time(s) in X ms.``). Where that text arrives depends on the build:

- **stderr** (a Linux build, or an Android build with the POSIX platform layer): each log line has
  the prefix ``I HH:MM:SS.uuuuuu executorch:executor_runner.cpp:LINE] ``;
- **logcat** (an Android build with ExecuTorch's Android platform layer, which logs only there):
  tag ``ExecuTorch``, no prefix, in any of logcat's line formats (threadtime, time, brief, tag);
- **none**: a build configured with logging off prints no timing lines at all.

These are the only latencies the harness records on a device: the runner's own timing, never the
wall time of an adb round trip. No timing lines at all is an error that says how to rebuild the
runner with logging on. Nothing here touches a device or the disk; every failure is a
``RunnerLogError`` naming the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from emobench_common.errors import EmobenchError

LOGCAT_TAG = "ExecuTorch"
FORMS = ("stderr", "logcat")

REBUILD_HINT = (
    "rebuild executor_runner with logging on: configure ExecuTorch with "
    "`cmake -DEXECUTORCH_ENABLE_LOGGING=ON -DCMAKE_BUILD_TYPE=Release ...` (for Android add "
    "-DCMAKE_TOOLCHAIN_FILE=$ANDROID_NDK/build/cmake/android.toolchain.cmake -DANDROID_ABI=arm64-v8a), "
    "build the executor_runner target, and pass it with --runner"
)

# "I 00:00:00.123456 executorch:executor_runner.cpp:123] message"
_ET_PREFIX = re.compile(r"^(?P<level>[DIWEF]) \d{2}:\d{2}:\d{2}\.\d+ executorch:(?P<src>[^\s:\]]+):(?P<line>\d+)\] ?")
# logcat: threadtime "01-02 03:04:05.678  1234  1235 I ExecuTorch: msg"
_LOGCAT_THREADTIME = re.compile(
    r"^(?:\d{4}-)?\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d+\s+(?:\S+\s+)?\d+\s+\d+\s+(?P<level>[VDIWEFA])\s+(?P<tag>[^:]*?)\s*: ?"
)
# logcat: time "01-02 03:04:05.678 I/ExecuTorch( 1234): msg", brief "I/ExecuTorch( 1234): msg", tag "I/ExecuTorch: msg"
_LOGCAT_BRIEF = re.compile(
    r"^(?:(?:\d{4}-)?\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d+\s+)?(?P<level>[VDIWEFA])/(?P<tag>[^(:]*?)\s*(?:\(\s*\d+\))?: ?"
)
_ITERATION = re.compile(r"^Iteration (?P<i>\d+) of (?P<n>\d+): (?P<ms>\S+) ms\s*$")
_TOTAL = re.compile(r"^Model executed successfully (?P<n>\d+) time\(s\) in (?P<ms>\S+) ms\.?\s*$")


class RunnerLogError(EmobenchError):
    """Runner output that does not give a complete, consistent set of timings."""


class NoTimingLinesError(RunnerLogError):
    """The runner printed no ``Iteration i of N`` lines at all: it was built with logging off."""


@dataclass(frozen=True)
class LogLine:
    """One line the runner logged: level (D/I/W/E/F), message without prefix, 1-based line number."""

    line_number: int
    level: str
    message: str


@dataclass(frozen=True)
class RunnerLog:
    """What the runner logged, parsed.

    Attributes:
        form: 'stderr' or 'logcat'.
        lines: the ExecuTorch log lines (prefix stripped, other tags dropped).
        iterations: (i, n, latency_ms, line_number) for every ``Iteration i of N`` line in order.
        total_executions, total_ms: from ``Model executed successfully N time(s) in X ms`` if present.
    """

    form: str
    lines: tuple[LogLine, ...]
    iterations: tuple[tuple[int, int, float, int], ...]
    total_executions: int | None
    total_ms: float | None
    source: str = "runner"

    @property
    def errors(self) -> tuple[str, ...]:
        """Messages logged at error or fatal level (what to show when a run fails)."""
        return tuple(line.message for line in self.lines if line.level in ("E", "F", "A"))

    def latencies_ms(self, *, expected_executions: int, source: str | None = None) -> tuple[float, ...]:
        """Per-iteration latencies, checked to be exactly iterations 1..N with N = ``expected_executions``.

        Args:
            expected_executions: the ``--num_executions`` the runner was started with.
            source: what produced the text (device and log path), named in errors; default the parser's.

        Raises:
            NoTimingLinesError: no timing lines at all (logging off).
            RunnerLogError: missing, repeated, out-of-order or inconsistent iterations, bad values.
        """
        source = source or self.source
        if expected_executions < 1:
            raise RunnerLogError(f"{source}: expected_executions must be >= 1, got {expected_executions}")
        if not self.iterations:
            where = "its stderr" if self.form == "stderr" else f"logcat (tag {LOGCAT_TAG})"
            raise NoTimingLinesError(
                f"{source}: the runner printed no 'Iteration i of N: X ms' lines in {where}; it was built with "
                "logging off (EXECUTORCH_ENABLE_LOGGING=OFF, the default of release builds), so there are no "
                "runner timings, and emobench will not time the whole process instead",
                hint=REBUILD_HINT,
            )
        out: list[float] = []
        for expected_i, (i, n, ms, line_number) in enumerate(self.iterations, start=1):
            if n != expected_executions:
                raise RunnerLogError(f"{source}: line {line_number} says 'of {n}' but the runner was asked for "
                                     f"{expected_executions} executions")
            if i != expected_i:
                raise RunnerLogError(f"{source}: line {line_number} is iteration {i}, expected iteration {expected_i}")
            out.append(ms)
        if len(out) != expected_executions:
            errors = "; ".join(self.errors[-3:])
            raise RunnerLogError(
                f"{source}: the runner printed timings for {len(out)} of {expected_executions} iterations"
                + (f" (its errors: {errors})" if errors else " (did it crash?)")
            )
        return tuple(out)


def _parse_ms(text: str, line_number: int, source: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RunnerLogError(f"{source}: line {line_number}: latency {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise RunnerLogError(f"{source}: line {line_number}: latency {text!r} ms is not a finite value >= 0")
    return value


def _parse_count(text: str, line_number: int, source: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than int() converts
        raise RunnerLogError(f"{source}: line {line_number}: count {text[:20]!r}... is not a usable number") from None


def _as_text(output: str | bytes) -> str:
    if isinstance(output, bytes | bytearray):
        return bytes(output).decode("utf-8", errors="replace")
    if not isinstance(output, str):
        raise RunnerLogError(f"runner output must be text or bytes, got {type(output).__name__}")
    return output


def _collect(form: str, entries: list[LogLine], source: str) -> RunnerLog:
    iterations: list[tuple[int, int, float, int]] = []
    total_n: int | None = None
    total_ms: float | None = None
    for entry in entries:
        m = _ITERATION.match(entry.message)
        if m:
            iterations.append((_parse_count(m["i"], entry.line_number, source),
                               _parse_count(m["n"], entry.line_number, source),
                               _parse_ms(m["ms"], entry.line_number, source),
                               entry.line_number))
            continue
        m = _TOTAL.match(entry.message)
        if m:
            total_n = _parse_count(m["n"], entry.line_number, source)
            total_ms = _parse_ms(m["ms"], entry.line_number, source)
    return RunnerLog(form=form, lines=tuple(entries), iterations=tuple(iterations), total_executions=total_n,
                     total_ms=total_ms, source=source)


def parse_stderr(output: str | bytes, *, source: str = "runner stderr") -> RunnerLog:
    """Parse a runner's stderr (Linux-style ``I HH:MM:SS.uuuuuu executorch:FILE:LINE] `` prefix).

    Lines without the ExecuTorch prefix (e.g. printed outputs merged in by a legacy ``adb shell``)
    are kept at level '' but timing lines are only taken from prefixed lines.
    """
    entries: list[LogLine] = []
    for number, raw in enumerate(_as_text(output).splitlines(), start=1):
        line = raw.rstrip("\r")
        m = _ET_PREFIX.match(line)
        if m:
            entries.append(LogLine(number, m["level"], line[m.end():]))
    return _collect("stderr", entries, source)


def parse_logcat(output: str | bytes, *, tag: str = LOGCAT_TAG, source: str = "logcat") -> RunnerLog:
    """Parse ``adb logcat -d`` output, keeping only lines of ``tag`` (threadtime, time, brief or tag format)."""
    entries: list[LogLine] = []
    for number, raw in enumerate(_as_text(output).splitlines(), start=1):
        line = raw.rstrip("\r")
        m = _LOGCAT_THREADTIME.match(line) or _LOGCAT_BRIEF.match(line)
        if m and m["tag"].strip() == tag:
            entries.append(LogLine(number, m["level"], line[m.end():].strip()))
    return _collect("logcat", entries, source)


def parse_runner_output(output: str | bytes, *, form: str, source: str = "runner") -> RunnerLog:
    """Parse runner output in ``form`` ('stderr' or 'logcat')."""
    if form == "stderr":
        return parse_stderr(output, source=source)
    if form == "logcat":
        return parse_logcat(output, source=source)
    raise RunnerLogError(f"unknown runner log form {form!r}; one of {', '.join(FORMS)}")
