"""Preemption: stop a run cleanly on a signal so that ``--resume`` continues it.

SIGUSR1 or SIGTERM (Slurm's warning signal, ``scancel``, torchrun) sets a flag; the training loop
checks it after every step, every rank agrees to stop, rank 0 saves the state, and ``train`` raises
``TrainingPreempted``. The CLI exits with ``REQUEUE_EXIT_CODE`` (75) and the Slurm script requeues.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from emobench_common.errors import EmobenchError

log = logging.getLogger(__name__)

REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; the Slurm scripts requeue on it

_STOP = threading.Event()
_STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGUSR1", None), signal.SIGTERM) if s is not None)


class TrainingPreempted(EmobenchError):
    """The run stopped on a signal after saving its state; start it again with --resume to continue."""

    exit_code = REQUEUE_EXIT_CODE

    def __init__(self, message: str, *, run_dir: Path, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.run_dir = run_dir


def stop_requested() -> bool:
    """Whether a stop signal arrived since ``stop_on_signals`` was entered."""
    return _STOP.is_set()


def _on_signal(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    if not _STOP.is_set():
        log.warning("received %s: saving the state at the next step, then exiting for a requeue",
                    signal.Signals(signum).name)
    _STOP.set()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGUSR1/SIGTERM into a stop request for the duration (main thread only; restores the handlers)."""
    _STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
