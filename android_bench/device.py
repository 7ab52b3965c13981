"""One small device interface over adb, and its transports.

Everything in emobench that touches a phone goes through :class:`Device`: ``shell`` (stdout,
stderr where the transport separates it, and the exit status), ``push`` (sha256-checked on the
device), ``pull``, ``getprop`` and ``info``. :func:`connect` picks the transport from the target:

- ``host:port``: adb-shell over TCP (wireless debugging, ``adb tcpip``, the virtual device);
- ``usb:<serial>``: adb-shell over USB (needs the ``usb`` extra; fails clearly when an adb server
  already holds the phone);
- ``<serial>``: through a running adb server (``ANDROID_ADB_SERVER_PORT`` or 5037), speaking the
  server's smart-socket protocol directly (``host:transport:<serial>``, ``shell,v2,raw:``, ``sync:``).

Every argument reaching the device shell is quoted with :func:`shlex.quote`; a plain ``str``
command is passed as-is and is for trusted constants only.

This module is the public facade; the rooms behind it are in :mod:`android_bench.adb`: ``errors``
(the ``DeviceError`` family), ``commands`` (``ShellResult``, quoting, shell v2 / legacy exit status),
``base`` (the ``Device`` interface and the logic every transport shares), ``shell_transport``
(adb-shell over TCP/USB), ``server_client`` (the adb server), ``elf`` (ABI of a binary) and
``retry`` (backoff).
"""

from __future__ import annotations

import re
from pathlib import Path

from android_bench.adb.base import Device, DeviceBase
from android_bench.adb.commands import ShellResult, quote_command
from android_bench.adb.elf import elf_machine
from android_bench.adb.errors import (
    DeviceAuthError,
    DeviceCommandError,
    DeviceError,
    DeviceStorageError,
    DeviceTimeoutError,
    DeviceUnreachableError,
)
from android_bench.adb.retry import retry_with_backoff
from android_bench.adb.server_client import (
    DEFAULT_ADB_SERVER_PORT,
    AdbServerClient,
    AdbServerDevice,
    adb_server_port,
    list_server_devices,
)
from android_bench.adb.shell_transport import AdbShellDevice, connect_usb, make_tcp_adb
from android_bench.device_info import DeviceInfo

__all__ = [
    "DEFAULT_ADB_SERVER_PORT",
    "AdbServerClient",
    "AdbServerDevice",
    "AdbShellDevice",
    "Device",
    "DeviceAuthError",
    "DeviceBase",
    "DeviceCommandError",
    "DeviceError",
    "DeviceInfo",
    "DeviceStorageError",
    "DeviceTimeoutError",
    "DeviceUnreachableError",
    "ShellResult",
    "adb_server_port",
    "connect",
    "elf_machine",
    "list_server_devices",
    "quote_command",
    "retry_with_backoff",
]

_HOST_PORT_RE = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})$")


def connect(target: str, *, adb_key: Path | None = None, timeout_s: float = 10, auth_timeout_s: float = 30,
            shell_protocol: str = "auto") -> Device:
    """Open a device.

    Args:
        target: ``host:port`` (adb-shell over TCP), ``usb:<serial>`` (adb-shell over USB; ``usb:`` for
            the only one), ``<serial>`` (through the adb server on ``ANDROID_ADB_SERVER_PORT``/5037) or
            ``adb:<serial>`` (through the server even when the serial looks like host:port).
        adb_key: private key to authenticate with (default ``~/.android/adbkey``, created if missing).
        timeout_s: connection / per-packet time limit.
        auth_timeout_s: how long to wait for a person to accept the key on the phone.
        shell_protocol: ``auto`` (shell v2 where the device has it), ``v2`` or ``legacy``.

    Raises:
        DeviceUnreachableError, DeviceAuthError, DeviceError.
    """
    if shell_protocol not in ("auto", "v2", "legacy"):
        raise ValueError(f"shell_protocol must be auto, v2 or legacy, not {shell_protocol!r}")
    target = target.strip()
    if not target:
        raise DeviceError("empty device target", hint="use host:port, usb:<serial> or an adb serial")
    if target.startswith("usb:"):
        return connect_usb(target[4:] or None, adb_key=adb_key, timeout_s=timeout_s,
                            auth_timeout_s=auth_timeout_s, shell_protocol=shell_protocol)
    if target.startswith("adb:"):
        return AdbServerDevice(target[4:], timeout_s=timeout_s)
    m = _HOST_PORT_RE.match(target)
    if m:
        host, port = m["host"].strip("[]"), int(m["port"])
        return AdbShellDevice(
            target, lambda: make_tcp_adb(host, port, timeout_s),
            adb_key=adb_key, timeout_s=timeout_s, auth_timeout_s=auth_timeout_s,
            shell_protocol=shell_protocol, probe=(host, port))
    return AdbServerDevice(target, timeout_s=timeout_s)
