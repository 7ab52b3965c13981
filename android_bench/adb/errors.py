"""The errors a device operation raises, each with a message naming the device and a hint.

``DeviceError`` is the family (an ``EmobenchError``, so the CLI shows one line and the hint);
the subclasses say what went wrong: unreachable, refused key, failed command, timeout, storage.
"""

from __future__ import annotations

from typing import Protocol

from emobench_common.errors import EmobenchError

AUTH_HINT = ("accept the 'Allow USB debugging?' prompt on the phone (tick 'Always allow'), or check that "
             "~/.android/adbkey (or --adb-key) is the key the device trusts")


class CommandOutput(Protocol):
    """What a failed command produced (a :class:`~android_bench.adb.commands.ShellResult`)."""

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...

    @property
    def exit_status(self) -> int: ...


class DeviceError(EmobenchError):
    """A device could not do what was asked."""


class DeviceUnreachableError(DeviceError):
    """No connection to the device (not listening, unplugged, wrong address, dropped)."""


class DeviceAuthError(DeviceError):
    """The device refused our adb key."""


class DeviceCommandError(DeviceError):
    """A device shell command exited non-zero; the message carries its output."""

    def __init__(self, message: str, *, result: CommandOutput | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.result = result


class DeviceTimeoutError(DeviceError):
    """A device command did not finish in its time limit."""


class DeviceStorageError(DeviceError):
    """The device has no room for a file, or a pushed file arrived corrupted."""




def is_storage_message(message: str) -> bool:
    """Whether a device's error message says it ran out of room."""
    lowered = message.lower()
    return "no space" in lowered or "enospc" in lowered or "disk full" in lowered or "quota" in lowered
