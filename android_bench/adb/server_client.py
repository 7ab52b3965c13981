"""Devices reached through a running adb server, speaking its smart-socket protocol directly.

The server (``adb start-server``; port ``ANDROID_ADB_SERVER_PORT`` or 5037) holds the USB phones
and ``adb connect``-ed ones. Each request is a 4-hex-digit length and the text (``host:devices``,
``host:transport:<serial>``, then a service such as ``shell,v2,raw:`` or ``sync:``), answered by
``OKAY`` or ``FAIL`` + message. File transfers use the sync framing of
:mod:`android_bench.sync_framing`, the same module the virtual device serves with.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from android_bench import sync_framing as sync
from android_bench.adb.base import DeviceBase
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

DEFAULT_ADB_SERVER_PORT = 5037


def adb_server_port() -> int:
    """The adb server's port: ``ANDROID_ADB_SERVER_PORT`` or 5037."""
    raw = os.environ.get("ANDROID_ADB_SERVER_PORT", "")
    try:
        return int(raw) if raw else DEFAULT_ADB_SERVER_PORT
    except ValueError:
        raise DeviceError(f"ANDROID_ADB_SERVER_PORT={raw!r} is not a port number") from None


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from the adb server's socket (DeviceUnreachableError when it closes first)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise DeviceUnreachableError("the adb server closed the connection")
        buf += chunk
    return bytes(buf)


class AdbServerClient:
    """A minimal client of the adb server's smart-socket protocol (what the ``adb`` tool speaks)."""

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1", timeout_s: float = 10) -> None:
        self.host = host
        self.port = port if port is not None else adb_server_port()
        self.timeout_s = timeout_s

    def _open(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise DeviceUnreachableError(
                f"no adb server on {self.host}:{self.port} ({exc})",
                hint="start one with `adb start-server` (or set ANDROID_ADB_SERVER_PORT), "
                     "or connect directly with host:port") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _request(self, sock: socket.socket, payload: str) -> None:
        data = payload.encode()
        sock.sendall(b"%04x" % len(data) + data)
        status = recv_exact(sock, 4)
        if status == b"OKAY":
            return
        if status == b"FAIL":
            length = int(recv_exact(sock, 4), 16)
            message = recv_exact(sock, length).decode("utf-8", "replace")
            if "unauthorized" in message:
                raise DeviceAuthError(f"adb server: {message}", hint=AUTH_HINT)
            if "not found" in message or "offline" in message:
                raise DeviceUnreachableError(f"adb server: {message}", hint="check `adb devices`")
            raise DeviceError(f"adb server refused {payload.split(':')[0]}...: {message}")
        raise DeviceError(f"unexpected reply from the adb server: {status!r}")

    def _read_block(self, sock: socket.socket) -> str:
        length = int(recv_exact(sock, 4), 16)
        return recv_exact(sock, length).decode("utf-8", "replace")

    def query(self, request: str) -> str:
        """A ``host:...`` request that answers with one length-prefixed block."""
        with self._open() as sock:
            self._request(sock, request)
            return self._read_block(sock)

    def devices(self) -> list[tuple[str, str]]:
        """(serial, state) of every device the server knows."""
        rows = []
        for line in self.query("host:devices").splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                rows.append((parts[0], parts[1]))
        return rows

    def features(self, serial: str) -> set[str]:
        return set(self.query(f"host-serial:{serial}:features").strip().split(","))

    def connect_tcp(self, address: str) -> str:
        """Ask the server to ``adb connect`` an address; returns its message."""
        return self.query(f"host:connect:{address}")

    def open_service(self, serial: str, service: str, timeout_s: float | None = None) -> socket.socket:
        """A socket switched to ``serial`` with ``service`` opened on it."""
        sock = self._open()
        try:
            sock.settimeout(timeout_s if timeout_s is not None else self.timeout_s)
            self._request(sock, f"host:transport:{serial}")
            self._request(sock, service)
        except BaseException:
            sock.close()
            raise
        return sock


class AdbServerDevice(DeviceBase):
    """A device reached through a running adb server (the usual case for a USB phone)."""

    def __init__(self, serial: str, *, port: int | None = None, timeout_s: float = 10) -> None:
        self.serial = serial
        self._client = AdbServerClient(port, timeout_s=timeout_s)
        self.reconnect()

    def reconnect(self) -> None:
        """Check the server still knows the device (each command opens its own server socket)."""
        states = dict(self._client.devices())
        state = states.get(self.serial)
        if state is None:
            raise DeviceUnreachableError(
                f"adb server on port {self._client.port} does not know device {self.serial!r} "
                f"(it has: {', '.join(states) or 'none'})",
                hint="check `adb devices`; for a phone on Wi-Fi use `adb connect HOST:PORT` or pass HOST:PORT")
        if state == "unauthorized":
            raise DeviceAuthError(f"{self.serial} has not authorized this computer", hint=AUTH_HINT)
        if state != "device":
            raise DeviceUnreachableError(f"{self.serial} is {state}", hint="replug the phone or wait for it to boot")
        self.shell_protocol = "v2" if "shell_v2" in self._client.features(self.serial) else "legacy"

    def close(self) -> None:
        pass

    def _stream(self, service: str, timeout_s: float) -> bytes:
        sock = self._client.open_service(self.serial, service, timeout_s)
        chunks = bytearray()
        deadline = time.monotonic() + timeout_s
        with sock:
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = sock.recv(1 << 16)
                except TimeoutError:
                    raise DeviceTimeoutError(f"`{service}` on {self.serial} did not finish within {timeout_s:g} s",
                                             hint="raise the timeout or check whether the device is stuck") from None
                if not chunk:
                    return bytes(chunks)
                chunks += chunk

    def _run(self, cmd: str, timeout_s: float) -> ShellResult:
        if self.shell_protocol == "v2":
            out, err, status = parse_shell_v2(iter([self._stream(f"shell,v2,raw:{cmd}", timeout_s)]))
            if status is None:
                raise DeviceUnreachableError(f"{self.serial} closed `{cmd}` without an exit status")
            return ShellResult(decode_output(out), decode_output(err), status)
        wrapped, nonce = wrap_legacy(cmd)
        out, status = unwrap_legacy(self._stream(f"shell:{wrapped}", timeout_s), nonce)
        if status is None:
            raise DeviceCommandError(f"`{cmd}` on {self.serial} ended without reporting its exit status",
                                     result=ShellResult(decode_output(out), "", -1))
        return ShellResult(decode_output(out), "", status)

    # -- sync protocol
    def _sync_fail(self, sock: socket.socket, length: int, what: str) -> DeviceError:
        message = recv_exact(sock, length).decode("utf-8", "replace")
        if is_storage_message(message):
            return DeviceStorageError(message)
        return DeviceError(f"{what} on {self.serial} failed: {message}")

    def _push_file(self, local: Path, remote: str, mode: int, timeout_s: float) -> None:
        sock = self._client.open_service(self.serial, "sync:", timeout_s)
        with sock, open(local, "rb") as fh:
            try:
                sock.sendall(sync.request(sync.SEND, sync.send_spec(remote, mode)))
                while chunk := fh.read(sync.MAX_DATA_BYTES):
                    sock.sendall(sync.packet(sync.DATA, chunk))
                sock.sendall(sync.header(sync.DONE, int(local.stat().st_mtime)))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the device gave up early: its FAIL reply says why
            kind, length = sync.read_header(lambda n: recv_exact(sock, n))
            if kind == sync.FAIL:
                raise self._sync_fail(sock, length, f"push to {remote}")
            if kind != sync.OKAY:
                raise DeviceError(f"unexpected sync reply {kind!r} pushing to {self.serial}:{remote}")
            sock.sendall(sync.header(sync.QUIT, 0))

    def _pull_file(self, remote: str, local: Path, timeout_s: float) -> None:
        sock = self._client.open_service(self.serial, "sync:", timeout_s)
        with sock, open(local, "wb") as fh:
            sock.sendall(sync.request(sync.RECV, remote))
            while True:
                kind, length = sync.read_header(lambda n: recv_exact(sock, n))
                if kind == sync.DATA:
                    fh.write(recv_exact(sock, length))
                elif kind == sync.DONE:
                    break
                elif kind == sync.FAIL:
                    raise self._sync_fail(sock, length, f"pull of {remote}")
                else:
                    raise DeviceError(f"unexpected sync reply {kind!r} pulling {self.serial}:{remote}")
            sock.sendall(sync.header(sync.QUIT, 0))


def list_server_devices(port: int | None = None) -> list[tuple[str, str]]:
    """(serial, state) for the devices a running adb server knows; [] when no server runs."""
    try:
        return AdbServerClient(port, timeout_s=3).devices()
    except DeviceUnreachableError:
        return []
