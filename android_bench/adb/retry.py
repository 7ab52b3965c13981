"""Retrying a device operation with a bounded exponential backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from android_bench.adb.errors import DeviceUnreachableError

log = logging.getLogger(__name__)

T = TypeVar("T")


def retry_with_backoff(fn: Callable[[], T], *, attempts: int = 4, initial_delay_s: float = 0.5,
                       max_delay_s: float = 8.0, factor: float = 2.0,
                       retry_on: tuple[type[BaseException], ...] = (DeviceUnreachableError,),
                       on_retry: Callable[[int, BaseException], None] | None = None) -> T:
    """Call ``fn`` up to ``attempts`` times, sleeping a bounded exponential backoff between tries.

    Only exceptions in ``retry_on`` are retried; the last one is re-raised.
    """
    delay = initial_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except retry_on as exc:
            if attempt == attempts:
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            log.info("attempt %d/%d failed (%s); retrying in %.1f s", attempt, attempts, exc, delay)
            time.sleep(delay)
            delay = min(delay * factor, max_delay_s)
    raise AssertionError("unreachable")
