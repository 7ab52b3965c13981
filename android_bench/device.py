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
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shlex
import socket
import stat as stat_mod
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from android_bench import shell_v2
from emobench_common.errors import EmobenchError
from emobench_common.fileio import sha256_file

if TYPE_CHECKING:
    from android_bench.device_info import DeviceInfo

log = logging.getLogger(__name__)

DEFAULT_ADB_SERVER_PORT = 5037
_SYNC_CHUNK_BYTES = 64 * 1024
_AUTH_HINT = ("accept the 'Allow USB debugging?' prompt on the phone (tick 'Always allow'), or check that "
              "~/.android/adbkey (or --adb-key) is the key the device trusts")


# --------------------------------------------------------------------------------------------- errors
class DeviceError(EmobenchError):
    """A device could not do what was asked."""


class DeviceUnreachableError(DeviceError):
    """No connection to the device (not listening, unplugged, wrong address, dropped)."""


class DeviceAuthError(DeviceError):
    """The device refused our adb key."""


class DeviceCommandError(DeviceError):
    """A device shell command exited non-zero; the message carries its output."""

    def __init__(self, message: str, *, result: ShellResult | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.result = result


class DeviceTimeoutError(DeviceError):
    """A device command did not finish in its time limit."""


class DeviceStorageError(DeviceError):
    """The device has no room for a file, or a pushed file arrived corrupted."""


# --------------------------------------------------------------------------------------------- results
def _tail(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


@dataclass(frozen=True)
class ShellResult:
    """What one device shell command produced. ``stderr`` is '' where the transport merges it."""

    stdout: str
    stderr: str
    exit_status: int

    def check(self, cmd: str | Sequence[str], *, device: str = "") -> ShellResult:
        """Return self, or raise :class:`DeviceCommandError` with the output when the status is non-zero."""
        if self.exit_status == 0:
            return self
        shown = cmd if isinstance(cmd, str) else quote_command(cmd)
        where = f" on {device}" if device else ""
        output = "\n".join(p for p in (_tail(self.stdout), _tail(self.stderr)) if p)
        raise DeviceCommandError(
            f"device command{where} exited with status {self.exit_status}: {shown}"
            + (f"\n{output}" if output else " (no output)"),
            result=self,
        )


def quote_command(args: Sequence[str] | str) -> str:
    """A device shell command line: each argument of a sequence quoted with :func:`shlex.quote`."""
    if isinstance(args, str):
        return args
    if not args:
        raise ValueError("empty device command")
    return " ".join(shlex.quote(str(a)) for a in args)


# --------------------------------------------------------------------------------------------- ELF
_ELF_MACHINES = {3: "x86", 40: "armeabi-v7a", 62: "x86_64", 183: "arm64-v8a"}


def elf_machine(path: Path) -> str:
    """The Android ABI an ELF binary is built for, from its header's ``e_machine``.

    Returns one of ``arm64-v8a``, ``armeabi-v7a``, ``x86_64``, ``x86``.

    Raises:
        DeviceError: not an ELF file, or a machine Android does not run.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        header = fh.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise DeviceError(f"{path} is not an ELF executable",
                          hint="bring an Android build of ExecuTorch's executor_runner")
    endian = "<" if header[5] == 1 else ">"
    (machine,) = struct.unpack(endian + "H", header[18:20])
    try:
        return _ELF_MACHINES[machine]
    except KeyError:
        raise DeviceError(f"{path} is built for ELF machine {machine}, which no Android ABI runs",
                          hint="build executor_runner for arm64-v8a (or the device's ABI)") from None


# --------------------------------------------------------------------------------------------- helpers
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


def _parse_shell_v2(chunks: Iterator[bytes]) -> tuple[bytes, bytes, int | None]:
    """Split a shell-v2 byte stream into stdout, stderr and the exit status (None if missing)."""
    buf = bytearray()
    out, err = bytearray(), bytearray()
    status: int | None = None
    for chunk in chunks:
        buf += chunk
        for kind, payload in shell_v2.take_packets(buf):
            if kind == shell_v2.STDOUT:
                out += payload
            elif kind == shell_v2.STDERR:
                err += payload
            elif kind == shell_v2.EXIT and payload:
                status = payload[0]
    return bytes(out), bytes(err), status


def _legacy_wrap(cmd: str) -> tuple[str, str]:
    """Wrap ``cmd`` so its exit status follows the output behind a random per-call marker."""
    nonce = secrets.token_hex(12)
    return f"({cmd}\n); printf '\\n%s:%d\\n' {nonce} $?", nonce


def _legacy_unwrap(data: bytes, nonce: str) -> tuple[bytes, int | None]:
    """Strip the marker; the output before it keeps exactly its own trailing newline (or none)."""
    marker = b"\n" + nonce.encode() + b":"
    idx = data.rfind(marker)
    if idx < 0:
        return data, None
    rest = data[idx + len(marker):].strip()
    if not rest.isdigit():
        return data, None
    return data[:idx], int(rest)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _storage_message(message: str) -> bool:
    lowered = message.lower()
    return "no space" in lowered or "enospc" in lowered or "disk full" in lowered or "quota" in lowered


# --------------------------------------------------------------------------------------------- interface
@runtime_checkable
class Device(Protocol):
    """What the harness needs from a phone (or the virtual device)."""

    serial: str

    def shell(self, args: Sequence[str] | str, *, timeout_s: float = 60, check: bool = True) -> ShellResult: ...
    def push(self, local: Path, remote: str, *, verify_sha256: bool = True) -> None: ...
    def pull(self, remote: str, local: Path) -> None: ...
    def getprop(self, name: str | None = None) -> str | dict[str, str]: ...
    def info(self) -> DeviceInfo: ...
    def exists(self, remote: str) -> bool: ...
    def sha256(self, remote: str) -> str: ...
    def free_bytes(self, remote_dir: str) -> int: ...
    def reconnect(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Device: ...
    def __exit__(self, *exc: object) -> None: ...


_PROP_RE = re.compile(r"^\[(?P<key>[^\]]+)\]: \[(?P<value>.*?)\]$", re.MULTILINE | re.DOTALL)


class _BaseDevice:
    """Shared logic (quoting, sha256-checked push, properties) over three transport primitives."""

    serial: str

    # -- transport primitives, per subclass
    def _run(self, cmd: str, timeout_s: float) -> ShellResult:
        raise NotImplementedError

    def _push_file(self, local: Path, remote: str, mode: int, timeout_s: float) -> None:
        raise NotImplementedError

    def _pull_file(self, remote: str, local: Path, timeout_s: float) -> None:
        raise NotImplementedError

    def reconnect(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- the interface
    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.serial!r})"

    def shell(self, args: Sequence[str] | str, *, timeout_s: float = 60, check: bool = True) -> ShellResult:
        """Run a command line on the device.

        Args:
            args: a sequence of arguments (each quoted with shlex.quote) or a trusted constant string.
            timeout_s: the time limit for the whole command.
            check: raise :class:`DeviceCommandError` on a non-zero exit status.

        Raises:
            DeviceCommandError, DeviceTimeoutError, DeviceUnreachableError.
        """
        cmd = quote_command(args)
        log.debug("%s$ %s", self.serial, cmd)
        result = self._run(cmd, timeout_s)
        if check:
            result.check(cmd, device=self.serial)
        return result

    @staticmethod
    def _check_remote(remote: str) -> str:
        if not remote.startswith("/") or "\0" in remote or "\n" in remote:
            raise DeviceError(f"device path {remote!r} must be absolute and on one line",
                              hint="use a path under /data/local/tmp")
        return remote

    def push(self, local: Path, remote: str, *, verify_sha256: bool = True, mode: int | None = None,
             timeout_s: float = 600) -> None:
        """Copy a host file to the device, then check its sha256 there (one retry, then fail loudly).

        Raises:
            DeviceStorageError: no room on the device, or the checksum still differs after a retry.
        """
        local = Path(local)
        remote = self._check_remote(remote)
        if not local.is_file():
            raise DeviceError(f"cannot push {local}: not a file")
        size_bytes = local.stat().st_size
        file_mode = mode if mode is not None else (stat_mod.S_IMODE(local.stat().st_mode) or 0o644)
        expected = sha256_file(local) if verify_sha256 else None
        for attempt in (1, 2):
            try:
                self._push_file(local, remote, file_mode, timeout_s)
            except DeviceStorageError as exc:
                free = self._free_bytes_or_none(remote.rsplit("/", 1)[0] or "/")
                extra = f" ({free} bytes free there)" if free is not None else ""
                raise DeviceStorageError(
                    f"pushing {local} ({size_bytes} bytes) to {self.serial}:{remote} failed: {exc.message}{extra}",
                    hint="free space on the device (e.g. remove old runs under /data/local/tmp)") from exc
            if expected is None:
                return
            got = self.sha256(remote)
            if got == expected:
                return
            log.warning("sha256 mismatch after pushing %s to %s:%s (attempt %d): %s != %s",
                        local, self.serial, remote, attempt, got, expected)
        raise DeviceStorageError(
            f"{self.serial}:{remote} has sha256 {got} after two pushes of {local} (expected {expected})",
            hint="the transfer or the device storage corrupts data: check the cable/connection and free space")

    def pull(self, remote: str, local: Path, *, timeout_s: float = 600) -> None:
        """Copy a device file to the host (written atomically: temp file + rename)."""
        remote = self._check_remote(remote)
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".tmp", dir=local.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            self._pull_file(remote, tmp, timeout_s)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    def getprop(self, name: str | None = None) -> str | dict[str, str]:
        """One property's value ('' when unset), or all properties as a dict when ``name`` is None."""
        if name is not None:
            return self.shell(["getprop", name], timeout_s=15).stdout.strip()
        text = self.shell("getprop", timeout_s=15).stdout
        return {m["key"]: m["value"] for m in _PROP_RE.finditer(text)}

    def info(self) -> DeviceInfo:
        """Describe the device (see :class:`android_bench.device_info.DeviceInfo`)."""
        from android_bench.device_info import collect_device_info

        return collect_device_info(self)

    def exists(self, remote: str) -> bool:
        """Whether ``remote`` exists on the device."""
        return self.shell(["test", "-e", self._check_remote(remote)], check=False, timeout_s=15).exit_status == 0

    def sha256(self, remote: str) -> str:
        """The device's own ``sha256sum`` of a file."""
        out = self.shell(["sha256sum", self._check_remote(remote)], timeout_s=300).stdout.strip()
        digest = out.split()[0] if out else ""
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise DeviceCommandError(f"unexpected sha256sum output from {self.serial} for {remote}: {out!r}")
        return digest

    def free_bytes(self, remote_dir: str) -> int:
        """Bytes available to us in the file system holding ``remote_dir`` (from ``df -k``)."""
        out = self.shell(["df", "-k", self._check_remote(remote_dir)], timeout_s=15).stdout
        lines = [ln for ln in out.splitlines() if ln.strip()]
        try:
            fields = lines[-1].split()
            return int(fields[3]) * 1024
        except (IndexError, ValueError):
            raise DeviceCommandError(f"cannot parse `df -k {remote_dir}` from {self.serial}: {out!r}") from None

    def _free_bytes_or_none(self, remote_dir: str) -> int | None:
        try:
            return self.free_bytes(remote_dir)
        except DeviceError:
            return None


# --------------------------------------------------------------------------------------------- adb-shell
class AdbShellDevice(_BaseDevice):
    """A device reached through the adb-shell library (TCP or USB)."""

    def __init__(self, serial: str, make_adb: Callable[[], object], *, adb_key: Path | None, timeout_s: float,
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
        self._adb = None
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
            raise DeviceAuthError(f"{self.serial} refused our adb key: {exc}", hint=_AUTH_HINT) from exc
        except (ConnectionRefusedError, socket.gaierror) as exc:
            raise DeviceUnreachableError(f"cannot reach {self.serial}: {exc}") from exc
        except (OSError, adb_exc.TcpTimeoutException, adb_exc.InvalidResponseError,
                adb_exc.AdbConnectionError, struct.error, adb_exc.UsbReadFailedError) as exc:
            raise DeviceAuthError(
                f"{self.serial} did not accept the connection ({type(exc).__name__}: {exc or 'closed'})",
                hint=_AUTH_HINT) from exc
        if not ok:
            raise DeviceAuthError(f"{self.serial} did not accept the connection", hint=_AUTH_HINT)
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

    def _need(self):
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
        elif isinstance(exc, adb_exc.PushFailedError) and _storage_message(str(exc)):
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
        return _parse_shell_v2(chunks)

    def _run(self, cmd: str, timeout_s: float) -> ShellResult:
        from adb_shell import exceptions as adb_exc

        with self._lock:
            try:
                if self.shell_protocol == "v2":
                    out, err, status = self._v2_stream(cmd.encode(), timeout_s)
                    if status is None:
                        raise DeviceUnreachableError(f"{self.serial} closed `{cmd}` without an exit status")
                    return ShellResult(_decode(out), _decode(err), status)
                wrapped, nonce = _legacy_wrap(cmd)
                data = self._need().shell(wrapped, transport_timeout_s=max(self._timeout_s, timeout_s),
                                          read_timeout_s=timeout_s, timeout_s=timeout_s, decode=False)
            except DeviceError:
                raise
            except (adb_exc.AdbTimeoutError, adb_exc.TcpTimeoutException, adb_exc.InvalidResponseError,
                    adb_exc.InvalidCommandError, adb_exc.AdbConnectionError, adb_exc.InvalidChecksumError,
                    OSError, struct.error, adb_exc.UsbReadFailedError, adb_exc.UsbWriteFailedError) as exc:
                raise self._map_error(exc, f"`{cmd}`", timeout_s) from exc
        out, status = _legacy_unwrap(data, nonce)
        if status is None:
            raise DeviceCommandError(
                f"`{cmd}` on {self.serial} ended without reporting its exit status (did it exit the shell?)",
                result=ShellResult(_decode(out), "", -1))
        return ShellResult(_decode(out), "", status)

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
                if isinstance(exc, adb_exc.PushFailedError) and _storage_message(str(exc)):
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


# --------------------------------------------------------------------------------------------- adb server
def adb_server_port() -> int:
    """The adb server's port: ``ANDROID_ADB_SERVER_PORT`` or 5037."""
    raw = os.environ.get("ANDROID_ADB_SERVER_PORT", "")
    try:
        return int(raw) if raw else DEFAULT_ADB_SERVER_PORT
    except ValueError:
        raise DeviceError(f"ANDROID_ADB_SERVER_PORT={raw!r} is not a port number") from None


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

    @staticmethod
    def _recv_exact(sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise DeviceUnreachableError("the adb server closed the connection")
            buf += chunk
        return bytes(buf)

    def _request(self, sock: socket.socket, payload: str) -> None:
        data = payload.encode()
        sock.sendall(b"%04x" % len(data) + data)
        status = self._recv_exact(sock, 4)
        if status == b"OKAY":
            return
        if status == b"FAIL":
            length = int(self._recv_exact(sock, 4), 16)
            message = self._recv_exact(sock, length).decode("utf-8", "replace")
            if "unauthorized" in message:
                raise DeviceAuthError(f"adb server: {message}", hint=_AUTH_HINT)
            if "not found" in message or "offline" in message:
                raise DeviceUnreachableError(f"adb server: {message}", hint="check `adb devices`")
            raise DeviceError(f"adb server refused {payload.split(':')[0]}...: {message}")
        raise DeviceError(f"unexpected reply from the adb server: {status!r}")

    def _read_block(self, sock: socket.socket) -> str:
        length = int(self._recv_exact(sock, 4), 16)
        return self._recv_exact(sock, length).decode("utf-8", "replace")

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


class AdbServerDevice(_BaseDevice):
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
            raise DeviceAuthError(f"{self.serial} has not authorized this computer", hint=_AUTH_HINT)
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
            out, err, status = _parse_shell_v2(iter([self._stream(f"shell,v2,raw:{cmd}", timeout_s)]))
            if status is None:
                raise DeviceUnreachableError(f"{self.serial} closed `{cmd}` without an exit status")
            return ShellResult(_decode(out), _decode(err), status)
        wrapped, nonce = _legacy_wrap(cmd)
        out, status = _legacy_unwrap(self._stream(f"shell:{wrapped}", timeout_s), nonce)
        if status is None:
            raise DeviceCommandError(f"`{cmd}` on {self.serial} ended without reporting its exit status",
                                     result=ShellResult(_decode(out), "", -1))
        return ShellResult(_decode(out), "", status)

    # -- sync protocol
    @staticmethod
    def _sync_reply(sock: socket.socket) -> tuple[bytes, int]:
        head = AdbServerClient._recv_exact(sock, 8)
        return head[:4], struct.unpack("<I", head[4:])[0]

    def _sync_fail(self, sock: socket.socket, length: int, what: str) -> DeviceError:
        message = AdbServerClient._recv_exact(sock, length).decode("utf-8", "replace")
        if _storage_message(message):
            return DeviceStorageError(message)
        return DeviceError(f"{what} on {self.serial} failed: {message}")

    def _push_file(self, local: Path, remote: str, mode: int, timeout_s: float) -> None:
        sock = self._client.open_service(self.serial, "sync:", timeout_s)
        with sock, open(local, "rb") as fh:
            spec = f"{remote},{stat_mod.S_IFREG | mode}".encode()
            try:
                sock.sendall(b"SEND" + struct.pack("<I", len(spec)) + spec)
                while chunk := fh.read(_SYNC_CHUNK_BYTES):
                    sock.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                sock.sendall(b"DONE" + struct.pack("<I", int(local.stat().st_mtime)))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the device gave up early: its FAIL reply says why
            kind, length = self._sync_reply(sock)
            if kind == b"FAIL":
                raise self._sync_fail(sock, length, f"push to {remote}")
            if kind != b"OKAY":
                raise DeviceError(f"unexpected sync reply {kind!r} pushing to {self.serial}:{remote}")
            sock.sendall(b"QUIT" + struct.pack("<I", 0))

    def _pull_file(self, remote: str, local: Path, timeout_s: float) -> None:
        sock = self._client.open_service(self.serial, "sync:", timeout_s)
        with sock, open(local, "wb") as fh:
            data = remote.encode()
            sock.sendall(b"RECV" + struct.pack("<I", len(data)) + data)
            while True:
                kind, length = self._sync_reply(sock)
                if kind == b"DATA":
                    fh.write(AdbServerClient._recv_exact(sock, length))
                elif kind == b"DONE":
                    break
                elif kind == b"FAIL":
                    raise self._sync_fail(sock, length, f"pull of {remote}")
                else:
                    raise DeviceError(f"unexpected sync reply {kind!r} pulling {self.serial}:{remote}")
            sock.sendall(b"QUIT" + struct.pack("<I", 0))


# --------------------------------------------------------------------------------------------- connect
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
        return _connect_usb(target[4:] or None, adb_key=adb_key, timeout_s=timeout_s,
                            auth_timeout_s=auth_timeout_s, shell_protocol=shell_protocol)
    if target.startswith("adb:"):
        return AdbServerDevice(target[4:], timeout_s=timeout_s)
    m = _HOST_PORT_RE.match(target)
    if m:
        host, port = m["host"].strip("[]"), int(m["port"])
        return AdbShellDevice(
            target, lambda: _make_tcp_adb(host, port, timeout_s),
            adb_key=adb_key, timeout_s=timeout_s, auth_timeout_s=auth_timeout_s,
            shell_protocol=shell_protocol, probe=(host, port))
    return AdbServerDevice(target, timeout_s=timeout_s)


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

    def checksum(data) -> int:
        if isinstance(data, bytes | bytearray | memoryview) and len(data) > 256:
            return int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFFFFFF
        return original(data)

    adb_message.checksum = checksum
    adb_device.checksum = checksum
    _FAST_CHECKSUM_INSTALLED = True


def _make_tcp_adb(host: str, port: int, timeout_s: float):
    """adb-shell over TCP, with a transport that reports a closed socket at once and sets TCP_NODELAY.

    adb-shell's own transport reads b'' from a closed socket in a loop until its timeout, so a
    device that refuses our key would look like a 30-second hang.
    """
    from adb_shell.adb_device import AdbDevice
    from adb_shell.transport.tcp_transport import TcpTransport

    _install_fast_checksum()

    class _Transport(TcpTransport):
        def connect(self, transport_timeout_s):
            super().connect(transport_timeout_s)
            # adb-shell writes a header and its payload separately: without TCP_NODELAY, Nagle's
            # algorithm and the peer's delayed ACK add ~40 ms to every message.
            self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def bulk_read(self, numbytes, transport_timeout_s):
            data = super().bulk_read(numbytes, transport_timeout_s)
            if not data and numbytes:
                raise ConnectionResetError(f"{host}:{port} closed the connection")
            return data

    return AdbDevice(_Transport(host, port), default_transport_timeout_s=timeout_s)


def _connect_usb(serial: str | None, *, adb_key, timeout_s, auth_timeout_s, shell_protocol) -> Device:
    from adb_shell import exceptions as adb_exc
    from adb_shell.adb_device import AdbDeviceUsb

    _install_fast_checksum()

    def make():
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


def list_server_devices(port: int | None = None) -> list[tuple[str, str]]:
    """(serial, state) for the devices a running adb server knows; [] when no server runs."""
    try:
        return AdbServerClient(port, timeout_s=3).devices()
    except DeviceUnreachableError:
        return []


def _hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
