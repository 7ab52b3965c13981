"""What a target session hands back: one model's outcome on one batch, or why the target cannot run.

Shared by the host sessions (``android_bench.host_session``) and the device sessions
(``android_bench.runners``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from emobench_common.errors import EmobenchError


class TargetError(EmobenchError):
    """A target that cannot run the plan (unreachable, wrong runner, no CUDA, no room)."""


@dataclass(frozen=True)
class CellOutcome:
    """What one model did on one batch: timed latencies and logits, or the failure."""

    latencies_ms: tuple[float, ...] = ()
    logits: np.ndarray | None = None
    error: str = ""
    runner_output: str = ""
    log_path: str | None = None

    @property
    def ok(self) -> bool:
        return not self.error


def softmax_top1(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 class and its softmax probability for each row of a logits matrix."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    top = p.argmax(axis=1)
    return top, p[np.arange(len(top)), top]


def slug(text: str) -> str:
    """``text`` as a safe file name part."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "target"


def short_error(exc: BaseException) -> str:
    """One line for a failure: the exception type and the first line of its message."""
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0][:500]}"
