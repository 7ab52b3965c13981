"""Devices reached through the adb-shell library: over TCP (``host:port``) or USB (``usb:<serial>``).

adb-shell speaks the ADB transport itself (no adb server): RSA authentication with our key, shell
v2 where the device has it (else the legacy shell with an exit-status marker), and sync for push
and pull. Its exceptions are mapped to the :mod:`android_bench.adb.errors` family, and after a
timeout or a dropped link the connection is reset so the next command starts clean.
"""

from __future__ import annotations

import logging
import socket
import stat as stat_mod
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from android_bench.adb.base import Device, DeviceBase
from android_bench.adb.commands import (
    ShellResult,
    decode_output,
    parse_shell_v2,
    unwrap_legacy,
    wrap_legacy,
)
from android_bench.adb.errors import (
    AUTH_HINT,
    DeviceAuthError,
    DeviceCommandError,
    DeviceError,
    DeviceStorageError,
    DeviceTimeoutError,
    DeviceUnreachableError,
    is_storage_message,
)

if TYPE_CHECKING:
    from adb_shell.adb_device import AdbDevice

log = logging.getLogger(__name__)


class AdbShellDevice(DeviceBase):
    """A device reached through the adb-shell library (TCP or USB)."""

    def __init__(self, serial: str, make_adb: Callable[[], AdbDevice], *, adb_key: Path | None, timeout_s: float,
                 auth_timeout_s: float, shell_protocol: str = "auto", probe: tuple[str, int] | None = None) -> None:
        self.serial = serial
        self._make_adb = make_adb
        self._adb_key = adb_key
        self._timeout_s = timeout_s
        self._auth_timeout_s = auth_timeout_s
        self._probe = probe
        self._requested_protocol = shell_protocol
        self.shell_protocol = "legacy"
        self._lock = threading.RLock()
        self._adb: AdbDevice | None = None
        self._connect()

    # -- connection
    def _connect(self) -> None:
        from adb_shell import exceptions as adb_exc

        from android_bench.keys import load_signer

        signer = load_signer(self._adb_key)
        if self._probe is not None:  # tell "nothing listening" apart from "refused our key"
            try:
                socket.create_connection(self._probe, timeout=self._timeout_s).close()
            except OSError as exc:
                raise DeviceUnreachableError(
                    f"cannot reach {self.serial}: {exc}",
                    hint="check the address; on the phone enable wireless debugging or run `adb tcpip 5555`; "
                         "for the virtual device run `emobench device serve`") from exc
        adb = self._make_adb()
        try:
            ok = adb.connect(rsa_keys=[signer], transport_timeout_s=self._timeout_s,
                             auth_timeout_s=self._auth_timeout_s)
        except adb_exc.DeviceAuthError as exc:
            raise DeviceAuthError(f"{self.serial} refused our adb key: {exc}", hint=AUTH_HINT) from exc
        except (ConnectionRefusedError, socket.gaierror) as exc:
            raise DeviceUnreachableError(f"cannot reach {self.serial}: {exc}") from exc
        except (OSError, adb_exc.TcpTimeoutException, adb_exc.InvalidResponseError,
                adb_exc.AdbConnectionError, struct.error, adb_exc.UsbReadFailedError) as exc:
            raise DeviceAuthError(
                f"{self.serial} did not accept the connection ({type(exc).__name__}: {exc or 'closed'})",
                hint=AUTH_HINT) from exc
        if not ok:
            raise DeviceAuthError(f"{self.serial} did not accept the connection", hint=AUTH_HINT)
        self._adb = adb
        self.shell_protocol = self._pick_protocol()
        log.info("connected to %s (shell protocol %s)", self.serial, self.shell_protocol)

    def _pick_protocol(self) -> str:
        if self._requested_protocol in ("v2", "legacy"):
            return self._requested_protocol
        try:
            _, _, status = self._v2_stream(b"true", 10)
            if status == 0:
                return "v2"
        except DeviceError:
            raise
        except Exception as exc:  # an old adbd answers an unknown service with CLSE
            log.debug("%s: shell v2 not available (%s); using legacy shell with an exit marker", self.serial, exc)
            self._reconnect_quietly()
        return "legacy"

    def _reconnect_quietly(self) -> None:
        with self._lock:
            if self._adb is not None:
                try:
                    self._adb.close()
                except Exception:  # noqa: BLE001 - closing a broken transport
                    pass
            self._adb = self._make_adb()
            from android_bench.keys import load_signer

            self._adb.connect(rsa_keys=[load_signer(self._adb_key)], transport_timeout_s=self._timeout_s,
                              auth_timeout_s=self._auth_timeout_s)

    def reconnect(self) -> None:
        """Drop the connection and open a new one (after a timeout, a dropped link or a device reboot)."""
        with self._lock:
            if self._adb is not None:
                try:
                    self._adb.close()
                except Exception:  # noqa: BLE001
                    pass
            self._adb = None
            protocol = self._requested_protocol
            self._requested_protocol = self.shell_protocol  # no need to probe again
            try:
                self._connect()
            finally:
                self._requested_protocol = protocol

    def close(self) -> None:
        with self._lock:
            if self._adb is not None:
                try:
                    self._adb.close()
                finally:
                    self._adb = None

    def _need(self) -> AdbDevice:
        if self._adb is None:
            raise DeviceUnreachableError(f"{self.serial} is not connected", hint="call reconnect()")
        return self._adb

    # -- errors
    def _map_error(self, exc: BaseException, what: str, timeout_s: float) -> DeviceError:
        from adb_shell import exceptions as adb_exc

        if isinstance(exc, adb_exc.AdbTimeoutError | adb_exc.TcpTimeoutException | TimeoutError):
            err: DeviceError = DeviceTimeoutError(
                f"{what} on {self.serial} did not finish within {timeout_s:g} s",
                hint="raise the timeout or check whether the device is stuck; the connection was reset")
        elif isinstance(exc, adb_exc.PushFailedError) and is_storage_message(str(exc)):
            err = DeviceStorageError(str(exc))
        elif isinstance(exc, adb_exc.PushFailedError | adb_exc.AdbCommandFailureException):
            err = DeviceCommandError(f"{what} on {self.serial} failed: {exc}")
        else:
            err = DeviceUnreachableError(
                f"lost the connection to {self.serial} during {what}: {type(exc).__name__}: {exc}",
                hint="check the cable / Wi-Fi; the harness reconnects on the next command")
        # The stream is in an unknown state: start over on the next call.
        try:
            self.reconnect()
        except DeviceError as again:
            log.warning("reconnecting to %s failed: %s", self.serial, again)
        return err

    # -- primitives
    def _v2_stream(self, cmd: bytes, timeout_s: float) -> tuple[bytes, bytes, int | None]:
        adb = self._need()
        # A runner may print nothing for longer than the connect timeout (logcat-only builds print
        # nothing at all), so every socket read may wait as long as the command's own limit.
        chunks = adb._streaming_command(b"shell,v2,raw", cmd, max(self._timeout_s, timeout_s), timeout_s, timeout_s)
        return parse_shell_v2(chunks)

    def _run(self, cmd: str, timeout_s: float) -> ShellResult:
        from adb_shell import exceptions as adb_exc

        with self._lock:
            try:
                if self.shell_protocol == "v2":
                    out, err, status = self._v2_stream(cmd.encode(), timeout_s)
                    if status is None:
                        raise DeviceUnreachableError(f"{self.serial} closed `{cmd}` without an exit status")
                    return ShellResult(decode_output(out), decode_output(err), status)
                wrapped, nonce = wrap_legacy(cmd)
                data = self._need().shell(wrapped, transport_timeout_s=max(self._timeout_s, timeout_s),
                                          read_timeout_s=timeout_s, timeout_s=timeout_s, decode=False)
            except DeviceError:
                raise
            except (adb_exc.AdbTimeoutError, adb_exc.TcpTimeoutException, adb_exc.InvalidResponseError,
                    adb_exc.InvalidCommandError, adb_exc.AdbConnectionError, adb_exc.InvalidChecksumError,
                    OSError, struct.error, adb_exc.UsbReadFailedError, adb_exc.UsbWriteFailedError) as exc:
                raise self._map_error(exc, f"`{cmd}`", timeout_s) from exc
        out, status = unwrap_legacy(data, nonce)
        if status is None:
            raise DeviceCommandError(
                f"`{cmd}` on {self.serial} ended without reporting its exit status (did it exit the shell?)",
                result=ShellResult(decode_output(out), "", -1))
        return ShellResult(decode_output(out), "", status)

    def _push_file(self, local: Path, remote: str, mode: int, timeout_s: float) -> None:
        from adb_shell import exceptions as adb_exc

        with self._lock:
            try:
                self._need().push(str(local), remote, st_mode=stat_mod.S_IFREG | mode,
                                  mtime=int(local.stat().st_mtime), transport_timeout_s=self._timeout_s,
                                  read_timeout_s=timeout_s)
            except Exception as exc:
                if isinstance(exc, DeviceError):
                    raise
                if isinstance(exc, adb_exc.PushFailedError) and is_storage_message(str(exc)):
                    raise DeviceStorageError(str(exc)) from exc
                raise self._map_error(exc, f"push to {remote}", timeout_s) from exc

    def _pull_file(self, remote: str, local: Path, timeout_s: float) -> None:
        from adb_shell import exceptions as adb_exc

        with self._lock:
            adb = self._need()
            try:
                st = adb.stat(remote, transport_timeout_s=self._timeout_s, read_timeout_s=timeout_s)
                if st[0] == 0:
                    raise DeviceError(f"{self.serial}:{remote} does not exist")
                adb.pull(remote, str(local), transport_timeout_s=self._timeout_s, read_timeout_s=timeout_s)
            except DeviceError:
                raise
            except adb_exc.AdbCommandFailureException as exc:
                raise DeviceError(f"cannot pull {self.serial}:{remote}: {exc}") from exc
            except Exception as exc:
                raise self._map_error(exc, f"pull of {remote}", timeout_s) from exc




_FAST_CHECKSUM_INSTALLED = False


def _install_fast_checksum() -> None:
    """Give adb-shell a numpy version of its payload checksum (the same value, ~50x faster).

    adb-shell speaks protocol version 0x01000000, so every payload it sends or receives carries a
    byte-sum checksum, computed with Python's ``sum()``: about 5 ms per MiB, which caps pushes at
    ~200 MB/s on loopback. The replacement returns the identical value for bytes and bytearrays.
    """
    global _FAST_CHECKSUM_INSTALLED
    if _FAST_CHECKSUM_INSTALLED:
        return
    import numpy as np
    from adb_shell import adb_device, adb_message

    original = adb_message.checksum

    def checksum(data: bytes | bytearray | memoryview) -> int:
        if isinstance(data, bytes | bytearray | memoryview) and len(data) > 256:
            return int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFFFFFF
        return original(data)

    adb_message.checksum = checksum
    adb_device.checksum = checksum
    _FAST_CHECKSUM_INSTALLED = True


def make_tcp_adb(host: str, port: int, timeout_s: float) -> AdbDevice:
    """adb-shell over TCP, with a transport that reports a closed socket at once and sets TCP_NODELAY.

    adb-shell's own transport reads b'' from a closed socket in a loop until its timeout, so a
    device that refuses our key would look like a 30-second hang.
    """
    from adb_shell.adb_device import AdbDevice
    from adb_shell.transport.tcp_transport import TcpTransport

    _install_fast_checksum()

    class _Transport(TcpTransport):
        def connect(self, transport_timeout_s: float) -> None:
            super().connect(transport_timeout_s)
            # adb-shell writes a header and its payload separately: without TCP_NODELAY, Nagle's
            # algorithm and the peer's delayed ACK add ~40 ms to every message.
            self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def bulk_read(self, numbytes: int, transport_timeout_s: float) -> bytes:
            data = super().bulk_read(numbytes, transport_timeout_s)
            if not data and numbytes:
                raise ConnectionResetError(f"{host}:{port} closed the connection")
            return data

    return AdbDevice(_Transport(host, port), default_transport_timeout_s=timeout_s)


def connect_usb(serial: str | None, *, adb_key: Path | None, timeout_s: float, auth_timeout_s: float,
                shell_protocol: str) -> Device:
    from adb_shell import exceptions as adb_exc
    from adb_shell.adb_device import AdbDeviceUsb

    _install_fast_checksum()

    def make() -> AdbDevice:
        try:
            return AdbDeviceUsb(serial=serial, default_transport_timeout_s=timeout_s)
        except adb_exc.InvalidTransportError as exc:
            raise DeviceError(
                "USB support is not installed (adb-shell's libusb extra)",
                hint="pip install 'emobench[usb]' (adb-shell[usb]), or use the adb server: pass the serial "
                     "without 'usb:'") from exc
        except adb_exc.UsbDeviceNotFoundError as exc:
            raise DeviceUnreachableError(f"no USB device {serial or ''} found: {exc}",
                                         hint="check the cable and that USB debugging is on") from exc

    try:
        return AdbShellDevice(f"usb:{serial or ''}", make, adb_key=adb_key, timeout_s=timeout_s,
                              auth_timeout_s=auth_timeout_s, shell_protocol=shell_protocol)
    except DeviceAuthError as exc:
        if "busy" in str(exc).lower() or "access" in str(exc).lower():
            raise DeviceUnreachableError(
                f"the USB device {serial or ''} is held by another program (usually a running adb server)",
                hint=f"use the adb server instead: pass the serial without 'usb:' ({serial or 'see adb devices'}), "
                     "or stop it with `adb kill-server`") from exc
        raise
    except Exception as exc:
        if isinstance(exc, DeviceError):
            raise
        text = str(exc)
        if "BUSY" in text.upper() or "ACCESS" in text.upper():
            raise DeviceUnreachableError(
                f"the USB device {serial or ''} is held by another program (usually a running adb server)",
                hint="use the adb server instead: pass the serial without 'usb:', or stop it with "
                     "`adb kill-server`") from exc
        raise DeviceUnreachableError(f"USB connection to {serial or 'the device'} failed: {exc}") from exc
