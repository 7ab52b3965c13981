"""The reliability counts survive pytest-xdist: a worker's ``to_dict()`` merged into the controller's tally."""

from __future__ import annotations

import json

from tests.reliability.tally import Tally


def test_counts_from_two_workers_add_up_in_the_controller():
    one, two, controller = Tally(), Tally(), Tally()
    one.fault(survived=True)
    one.bad_input("manifest", "refused")
    one.attack("pickle payload", refused=True)
    two.fault(survived=False, rows_lost=2)
    two.bad_input("manifest", "refused")
    two.bad_input("rafdb labels", "valid")
    two.attack("path escape", refused=False)
    two.check(held=True)
    for worker in (one, two):
        controller.merge(json.loads(json.dumps(worker.to_dict())))  # what execnet carries: plain values
    assert controller.lines() == [
        "faults: 2 tried, 1 survived, 2 rows lost",
        "bad inputs: 2 cases, 2 refused clearly (and 1 generated inputs that were valid were accepted)",
        "  by parser: manifest 2, rafdb labels 1",
        "security: 2 hostile inputs tried, 1 refused, 1 got through",
        "  got through: path escape",
        "security hygiene: 1 checks, 1 held",
    ]
