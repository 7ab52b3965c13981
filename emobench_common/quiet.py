"""Third-party noise a user cannot act on, filtered where it starts; ``emobench -v`` shows it again.

Three kinds reach the terminal from the libraries emobench drives:

- Python warnings: ``torch.jit.load`` / ``torch.jit.trace`` FutureWarnings ("deprecated, switch to
  torch.export": the TorchScript artifacts are still what Android apps ship) and ExecuTorch's
  ``ExperimentalWarning`` on its runtime bindings. :func:`known_warnings` ignores exactly these
  around the calls that raise them.
- torch's log record ``<enum 'KernelPreference'> is an Enum subclass ... register_constant() ...
  deprecated``, logged by ``torch.utils._pytree`` when torchao (imported by ExecuTorch's quantizer and
  runtime) registers its enum. :func:`configure` puts a filter on that logger.
- Native log lines of the ExecuTorch runtime: the pip wheel is built with logging on at Info (the
  level is a compile-time option, ``EXECUTORCH_LOG_LEVEL``; there is no runtime switch), and XNNPACK's
  threadpool start prints ``[cpuinfo_utils.cpp:NN] Reading file /sys/devices/...`` lines to stderr
  (and ``[threadpool.cpp:NN] Resetting threadpool to N threads.`` on every resize).
  :func:`native_log_filter` sends file descriptor 2 to a temporary file around such a call and
  writes back every line that is not one of them.

Everything else (including every error) passes unchanged. ``configure(verbose=1)`` (``emobench -v``)
turns all three filters off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator

# (category, message regex) of the Python warnings emobench hides
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"`torch\.jit\.\w+` is deprecated"),
    (DeprecationWarning, r"`torch\.jit\.\w+` is deprecated"),
    (Warning, r"This API is experimental and subject to change without notice"),  # executorch ExperimentalWarning
)
# log records of torch's own loggers emobench hides: (logger name, message regex)
KNOWN_LOG_RECORDS: tuple[tuple[str, str], ...] = (
    ("torch.utils._pytree", r"is an Enum subclass and is now natively supported by torch\.compile"),
)
# native log lines on stderr emobench hides: ExecuTorch's CPU probing when XNNPACK's threadpool starts,
# and its note on every threadpool resize
KNOWN_NATIVE_LINES = re.compile(rb"^\[(cpuinfo_utils\.cpp:\d+\] |threadpool\.cpp:\d+\] Resetting threadpool to )")

_state = {"verbose": 0}
_native_lock = threading.RLock()


def configure(verbose: int = 0) -> None:
    """Hide the known third-party noise (``verbose == 0``, the default) or show everything (``>= 1``)."""
    _state["verbose"] = int(verbose)
    _install_log_filters()


def _install_log_filters() -> None:
    # idempotent; the filters read the current setting, so they go in once, before torch is imported
    for name, pattern in KNOWN_LOG_RECORDS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _KnownRecordFilter) for f in logger.filters):
            logger.addFilter(_KnownRecordFilter(re.compile(pattern)))


def quiet() -> bool:
    """Whether the known third-party noise is hidden now."""
    return _state["verbose"] == 0


class _KnownRecordFilter(logging.Filter):
    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not (quiet() and self.pattern.search(record.getMessage()))


@contextlib.contextmanager
def known_warnings() -> Iterator[None]:
    """Ignore the known third-party warnings inside the block (all shown with ``-v``)."""
    with warnings.catch_warnings():
        if quiet():
            for category, message in KNOWN_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
        yield


@contextlib.contextmanager
def native_log_filter() -> Iterator[None]:
    """Around a native call: drop ExecuTorch's known runtime log lines from stderr, keep every other line.

    File descriptor 2 goes to a temporary file for the duration of the block (so other threads'
    stderr output is held back until it ends, then written in order). Does nothing with ``-v``, and
    nothing where stderr is not a file descriptor.
    """
    if not quiet():
        yield
        return
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
    except (AttributeError, OSError, ValueError):
        yield
        return
    with _native_lock, tempfile.TemporaryFile() as held:
        _flush_stderr()
        saved = os.dup(fd)
        try:
            os.dup2(held.fileno(), fd)
            try:
                yield
            finally:
                _flush_stderr()
                os.dup2(saved, fd)
        finally:
            os.close(saved)
        held.seek(0)
        kept = b"".join(line for line in held.read().splitlines(keepends=True)
                        if not KNOWN_NATIVE_LINES.match(line))
        while kept:
            kept = kept[os.write(fd, kept):]


def _flush_stderr() -> None:
    for stream in (sys.stderr, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


_install_log_filters()
