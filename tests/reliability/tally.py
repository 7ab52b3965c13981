"""The reliability suite's outcome counts (see ``tests/reliability/conftest.py``), one per test process.

A plain module rather than a conftest so that the root conftest, the only one pytest-xdist's
controller loads, can merge the workers' counts and print them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


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

    def to_dict(self) -> dict:
        """The counts as plain JSON-able values (what an xdist worker sends its controller)."""
        return {name: (list(value) if isinstance(value, list) else dict(value))
                for name, value in self.__dict__.items()}

    def merge(self, counts: dict) -> None:
        """Add another process's ``to_dict()`` counts to these."""
        for name, value in counts.items():
            mine = getattr(self, name)
            if isinstance(mine, list):
                mine.extend(value)
            else:
                mine.update(Counter(value))


TALLY = Tally()
