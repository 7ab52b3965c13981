"""The errors the results store raises."""

from __future__ import annotations

from emobench_common.errors import EmobenchError


class StoreError(EmobenchError):
    """The results database cannot be opened or does not hold what was asked for."""


class RunNotFoundError(StoreError):
    """No run with that id in the database."""


class AlreadyRecordedError(StoreError):
    """An (experiment, target) that is already in the database was written again."""
