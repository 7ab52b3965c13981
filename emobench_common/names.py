"""Names every layer shares: the default results database, the eager model's key, the clock format.

They live here, at the bottom of the layers, so the commands of any package and the app layer
agree on them without importing each other.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

DEFAULT_DB = Path("results") / "emobench.db"
"""The results database the ablation writes and ``results``/``report`` read, when --db is not given."""

EAGER_KEY = "eager-fp32"
"""Model key of the eager FP32 PyTorch model run from the checkpoint (the reference in every comparison)."""


def utc_now() -> str:
    """Current UTC time as ISO 8601 with microseconds (the timestamps of the results store)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")
