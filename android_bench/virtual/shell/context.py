"""What a shell command runs with: its standard streams, environment and the device state.

``Ctx`` is the one argument (besides argv) every built-in command and every program the virtual
device runs gets. ``ExitShell`` and ``Cancelled`` are the two ways out of a running command line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from android_bench.virtual.state import SH, DeviceState

__all__ = ["SH", "Cancelled", "Ctx", "ExitShell", "Output", "Stdin"]


class ExitShell(Exception):
    """``exit N``: leave the (sub-)shell with status N."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Cancelled(Exception):
    """The connection closed: stop the command."""


class Output:
    """Where a command writes: a callable sink (str is UTF-8 encoded, empty writes are dropped)."""

    def __init__(self, sink: Callable[[bytes], object]) -> None:
        self.sink = sink

    def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        if data:
            self.sink(data)


class Stdin:
    """Standard input: a fixed byte string, or a blocking source fed by the adb stream."""

    def __init__(self, data: bytes | None = None, reader: Callable[[], bytes] | None = None) -> None:
        self._data = data
        self._reader = reader

    def read_all(self) -> bytes:
        if self._data is not None:
            return self._data
        if self._reader is None:
            return b""
        self._data = self._reader()
        return self._data


@dataclass
class Ctx:
    """One command's environment."""

    state: DeviceState
    cwd: str
    env: dict[str, str]
    stdin: Stdin
    stdout: Output
    stderr: Output
    cancel: threading.Event

    def err(self, message: str) -> None:
        self.stderr.write(message.rstrip("\n") + "\n")
