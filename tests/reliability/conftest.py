"""Fixtures of the reliability suite, and the per-category summary lines it prints.

Every reliability test reports what it tried to a session-wide :class:`Tally` (the ``tally``
fixture, kept in ``tests/reliability/tally.py``); the root conftest's ``pytest_terminal_summary`` prints one
line per category from those counts (under pytest-xdist each worker hands its counts to the controller,
which adds them up), e.g.::

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

import pytest

from tests.reliability.tally import TALLY, Tally


@pytest.fixture(scope="session")
def tally() -> Tally:
    """The session's reliability counts (see :class:`Tally`)."""
    return TALLY


# The device fixtures (an isolated adb key in a temporary HOME, a virtual device that trusts only
# it, a connected Device, a tiny .pte) are the device tests' own; reused here rather than copied.
from tests.android_bench.conftest import adb_key, device, tiny_pte, virtual_device  # noqa: E402, F401
