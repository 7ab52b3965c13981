"""Fixtures of the reliability suite, and the per-category summary lines it prints.

Every reliability test reports what it tried to a session-wide :class:`Tally` (the ``tally``
fixture); ``pytest_terminal_summary`` prints one line per category from those counts, e.g.::

    faults: 9 tried, 9 survived, 0 rows lost
    bad inputs: 420 cases, 420 refused clearly
    security: 31 hostile inputs tried, 31 refused, 0 got through
    security hygiene: 5 checks, 5 held

The security line counts hostile inputs only (a pickle payload, an escaping path, a shell
metacharacter, an unknown key); static scans and hygiene checks (key permissions, the listening
address, no ``shell=True`` in the sources) have their own line. An input that got through is named.

The numbers are counted as the tests run (a partial run prints partial counts); nothing is a constant.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest


@dataclass
class Tally:
    """Outcome counts per category, filled in by the tests themselves."""

    faults: Counter = field(default_factory=Counter)
    bad_inputs: Counter = field(default_factory=Counter)
    security: Counter = field(default_factory=Counter)
    bad_input_kinds: Counter = field(default_factory=Counter)
    got_through: list[str] = field(default_factory=list)
    hygiene: Counter = field(default_factory=Counter)

    def bad_input(self, kind: str, outcome: str) -> None:
        """One generated input of ``kind``: ``refused`` (a clear EmobenchError), ``valid`` (it was good input
        and was accepted) or ``crashed`` (anything else; the test fails too)."""
        self.bad_inputs[outcome] += 1
        self.bad_input_kinds[kind] += 1

    def fault(self, *, survived: bool, rows_lost: int = 0, rows_duplicated: int = 0) -> None:
        """One injected fault and whether the run survived it with every row (no loss, no duplicate)."""
        self.faults["tried"] += 1
        self.faults["survived"] += int(survived)
        self.faults["rows_lost"] += rows_lost
        self.faults["rows_duplicated"] += rows_duplicated

    def attack(self, what: str, *, refused: bool) -> None:
        """One hostile input (pickle payload, path escape, shell metacharacters...) and whether it was
        stopped; record it BEFORE asserting, so an input that got through is counted and named."""
        self.security["tried"] += 1
        self.security["refused"] += int(refused)
        if not refused:
            self.got_through.append(what)

    def check(self, *, held: bool) -> None:
        """One security hygiene check or static scan (no hostile input involved) and whether it held."""
        self.hygiene["checks"] += 1
        self.hygiene["held"] += int(held)

    def lines(self) -> list[str]:
        out = []
        if self.faults["tried"]:
            f = self.faults
            line = f"faults: {f['tried']} tried, {f['survived']} survived, {f['rows_lost']} rows lost"
            if f["rows_duplicated"]:
                line += f", {f['rows_duplicated']} rows duplicated"
            out.append(line)
        b = self.bad_inputs
        cases = b["refused"] + b["crashed"]
        if cases or b["valid"]:
            line = f"bad inputs: {cases} cases, {b['refused']} refused clearly"
            if b["crashed"]:
                line += f", {b['crashed']} crashed"
            if b["valid"]:
                line += f" (and {b['valid']} generated inputs that were valid were accepted)"
            out.append(line)
            out.append("  by parser: " + ", ".join(f"{k} {n}" for k, n in sorted(self.bad_input_kinds.items())))
        if self.security["tried"]:
            s = self.security
            out.append(f"security: {s['tried']} hostile inputs tried, {s['refused']} refused, "
                       f"{len(self.got_through)} got through")
            if self.got_through:
                out.append("  got through: " + "; ".join(self.got_through))
        if self.hygiene["checks"]:
            h = self.hygiene
            out.append(f"security hygiene: {h['checks']} checks, {h['held']} held")
        return out


_TALLY = Tally()


@pytest.fixture(scope="session")
def tally() -> Tally:
    """The session's reliability counts (see :class:`Tally`)."""
    return _TALLY


def pytest_terminal_summary(terminalreporter) -> None:
    lines = _TALLY.lines()
    if lines:
        terminalreporter.section("reliability")
        for line in lines:
            terminalreporter.write_line(line)


# The device fixtures (an isolated adb key in a temporary HOME, a virtual device that trusts only
# it, a connected Device, a tiny .pte) are the device tests' own; reused here rather than copied.
from tests.android_bench.conftest import adb_key, device, tiny_pte, virtual_device  # noqa: E402, F401
