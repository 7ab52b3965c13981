"""The ADB daemon side of the virtual device: a real ADB protocol endpoint on 127.0.0.1.

One thread accepts connections; each connection has a reader thread, and each opened stream
(``shell:``, ``shell,v2,...:``, ``exec:``, ``sync:``) runs in its own thread, so a long model run
does not block other commands. Flow control follows adbd: every WRTE we send waits for the peer's
OKAY; a WRTE we receive is acknowledged when consumed (sync) or at once (shell stdin); CLSE is
answered with CLSE. Payload checksums are filled in for version-0x01000000 peers (adb-shell checks
them). Nothing here starts a host process.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import itertools
import logging
import os
import queue
import secrets
import shutil
import socket
import stat as stat_mod
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from android_bench import shell_v2
from android_bench.virtual.fs import FsError
from android_bench.virtual.logcat import LogBuffer
from android_bench.virtual.profiles import load_profile
from android_bench.virtual.runner import RUNNER_STUB
from android_bench.virtual.shell import Shell, Stdin
from android_bench.virtual.state import DeviceState, FaultPlan

log = logging.getLogger(__name__)

A_SYNC, A_CNXN, A_OPEN, A_OKAY, A_CLSE, A_WRTE, A_AUTH = (
    0x434E5953, 0x4E584E43, 0x4E45504F, 0x59414B4F, 0x45534C43, 0x45545257, 0x48545541)
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
VERSION_MIN, VERSION_SKIP_CHECKSUM = 0x01000000, 0x01000001
MAX_PAYLOAD = 1024 * 1024
_HEADER = struct.Struct("<6I")
_SYNC_DATA_MAX = 64 * 1024


# ------------------------------------------------------------------------------------------ keys
def parse_adb_public_key(text: str):
    """An RSA public key from the adb format (base64 of Android's RSAPublicKey struct [+ ' user@host'])."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    blob = base64.b64decode(text.strip().split()[0])
    (words,) = struct.unpack_from("<I", blob, 0)
    if words * 8 + 12 != len(blob):
        raise ValueError("not an adb RSA public key")
    n = int.from_bytes(blob[8:8 + 4 * words], "little")
    (e,) = struct.unpack_from("<I", blob, 8 + 8 * words)
    return RSAPublicNumbers(e, n).public_key()


def load_authorized_keys(path: Path) -> list:
    """Keys from an ``adb_keys``-style file (one adb public key per line; '#' comments)."""
    keys = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(parse_adb_public_key(line))
        except (ValueError, struct.error, base64.binascii.Error) as exc:
            from emobench_common.errors import EmobenchError

            raise EmobenchError(f"{path}:{lineno}: not an adb public key ({exc})",
                                hint="each line must be the content of an adbkey.pub file") from None
    return keys


def _verify(keys: list, token: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    for key in keys:
        try:
            key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


# ------------------------------------------------------------------------------------------ streams
class _ConnectionClosed(Exception):
    pass


class _Stream:
    def __init__(self, conn: _Connection, local_id: int, remote_id: int, *, ack_on_read: bool) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.ack_on_read = ack_on_read
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.okay = threading.Event()
        self.closed = threading.Event()
        self.we_closed = False
        self._pending = bytearray()

    # peer -> us
    def on_write(self, data: bytes) -> None:
        self.inbox.put(data)
        if not self.ack_on_read:
            self.conn.send(A_OKAY, self.local_id, self.remote_id)

    def on_close(self) -> None:
        self.closed.set()
        self.okay.set()
        self.inbox.put(None)

    def read_chunk(self) -> bytes | None:
        data = self.inbox.get()
        if data is not None and self.ack_on_read and not self.closed.is_set():
            self.conn.send(A_OKAY, self.local_id, self.remote_id)
        return data

    def read_exact(self, n: int) -> bytes:
        while len(self._pending) < n:
            chunk = self.read_chunk()
            if chunk is None:
                raise _ConnectionClosed()
            self._pending += chunk
        out = bytes(self._pending[:n])
        del self._pending[:n]
        return out

    # us -> peer
    def write(self, data: bytes) -> None:
        view = memoryview(data)
        step = self.conn.max_payload
        for start in range(0, len(view), step):
            if self.closed.is_set():
                raise _ConnectionClosed()
            self.okay.clear()
            self.conn.send(A_WRTE, self.local_id, self.remote_id, bytes(view[start:start + step]), delay=True)
            while not self.okay.wait(1.0):
                if self.conn.dead.is_set():
                    raise _ConnectionClosed()

    def close(self) -> None:
        if not self.we_closed:
            self.we_closed = True
            with contextlib.suppress(OSError, _ConnectionClosed):
                self.conn.send(A_CLSE, self.local_id, self.remote_id)
        self.conn.forget(self.local_id)


class _Buffered:
    """Collects small writes into larger WRTEs (flushed at 32 KiB, after 100 ms, and at the end)."""

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self.emit = emit
        self.buf = bytearray()
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self.lock:
            self.buf += data
            if len(self.buf) >= 32 * 1024 or time.monotonic() - self.last > 0.1:
                self._flush()

    def _flush(self) -> None:
        if self.buf:
            data = bytes(self.buf)
            self.buf.clear()
            self.emit(data)
        self.last = time.monotonic()

    def flush(self) -> None:
        with self.lock:
            self._flush()


# ------------------------------------------------------------------------------------------ connection
class _Connection:
    def __init__(self, device: VirtualDevice, sock: socket.socket, peer: tuple) -> None:
        self.device = device
        self.sock = sock
        self.peer = peer
        self.reader = sock.makefile("rb", buffering=256 * 1024)
        self.send_lock = threading.Lock()
        self.dead = threading.Event()
        self.version = VERSION_SKIP_CHECKSUM
        self.max_payload = 4096
        self.online = False
        self.streams: dict[int, _Stream] = {}
        self.streams_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.bytes_sent = 0
        self.token = b""
        self.auth_attempts = 0

    # -- wire
    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"", *, delay: bool = False) -> None:
        if self.dead.is_set():
            raise _ConnectionClosed()
        faults = self.device.state.faults
        if delay and faults.reply_delay_s:
            time.sleep(faults.reply_delay_s)
        checksum = 0
        if data and self.version < VERSION_SKIP_CHECKSUM:
            checksum = int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFFFFFF
        header = _HEADER.pack(command, arg0, arg1, len(data), checksum, command ^ 0xFFFFFFFF)
        with self.send_lock:
            try:
                self.sock.sendall(header + data if len(data) < 65536 else header)
                if len(data) >= 65536:
                    self.sock.sendall(data)
            except OSError as exc:
                self.kill()
                raise _ConnectionClosed() from exc
            self.bytes_sent += len(header) + len(data)
        if self.device._fault_bytes_hit(len(header) + len(data)):
            log.info("fault: closing %s after %d bytes", self.peer, self.bytes_sent)
            self.kill()

    def kill(self) -> None:
        if not self.dead.is_set():
            self.dead.set()
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            with self.streams_lock:
                streams = list(self.streams.values())
            for s in streams:
                s.on_close()

    def forget(self, local_id: int) -> None:
        with self.streams_lock:
            self.streams.pop(local_id, None)

    def _read_message(self) -> tuple[int, int, int, bytes]:
        header = self.reader.read(24)
        if len(header) < 24:
            raise _ConnectionClosed()
        command, arg0, arg1, length, _checksum, magic = _HEADER.unpack(header)
        if magic != command ^ 0xFFFFFFFF:
            raise _ConnectionClosed()
        if length > MAX_PAYLOAD:
            raise _ConnectionClosed()
        data = self.reader.read(length) if length else b""
        if len(data) < length:
            raise _ConnectionClosed()
        return command, arg0, arg1, data

    # -- main loop
    def serve(self) -> None:
        try:
            while not self.dead.is_set():
                command, arg0, arg1, data = self._read_message()
                self._dispatch(command, arg0, arg1, data)
        except (_ConnectionClosed, OSError, ValueError):
            pass
        finally:
            self.kill()
            with contextlib.suppress(OSError):
                self.reader.close()
                self.sock.close()
            self.device._forget(self)

    def _banner(self) -> bytes:
        props = self.device.state.properties
        keys = ("ro.product.name", "ro.product.model", "ro.product.device")
        parts = ";".join(f"{k}={props.get(k, '')}" for k in keys)
        features = ",".join(self.device.state.profile.features)
        return f"device::{parts};features={features}".encode()

    def _send_cnxn(self) -> None:
        self.online = True
        self.send(A_CNXN, self.version, self.max_payload, self._banner())

    def _send_token(self) -> None:
        self.token = secrets.token_bytes(20)
        self.send(A_AUTH, AUTH_TOKEN, 0, self.token)

    def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            self.version = max(VERSION_MIN, min(arg0, VERSION_SKIP_CHECKSUM))
            self.max_payload = max(4096, min(arg1, MAX_PAYLOAD))
            if self.device.auth:
                self._send_token()
            else:
                self._send_cnxn()
            return
        if command == A_AUTH:
            self._auth(arg0, data)
            return
        if not self.online:
            raise _ConnectionClosed()
        if command == A_OPEN:
            self._open(arg0, data)
        elif command == A_OKAY:
            stream = self.streams.get(arg1)
            if stream is not None:
                if stream.remote_id == 0:
                    stream.remote_id = arg0
                stream.okay.set()
        elif command == A_WRTE:
            stream = self.streams.get(arg1)
            if stream is None:
                self.send(A_CLSE, 0, arg0)
            else:
                stream.on_write(data)
        elif command == A_CLSE:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.on_close()
                if not stream.we_closed:
                    stream.we_closed = True
                    with contextlib.suppress(_ConnectionClosed):
                        self.send(A_CLSE, stream.local_id, stream.remote_id)
                self.forget(arg1)

    def _auth(self, kind: int, data: bytes) -> None:
        if not self.device.auth or self.online:
            return
        self.auth_attempts += 1
        if self.auth_attempts > 16:
            raise _ConnectionClosed()
        if kind == AUTH_SIGNATURE:
            if self.token and _verify(self.device.authorized_keys, self.token, data):
                log.info("accepted a known key from %s", self.peer)
                self._send_cnxn()
            else:
                self._send_token()
        elif kind == AUTH_RSAPUBLICKEY:
            text = data.rstrip(b"\0").decode("ascii", "replace")
            if self.device.accept_new_keys:
                try:
                    self.device.authorized_keys.append(parse_adb_public_key(text))
                except (ValueError, struct.error):
                    raise _ConnectionClosed() from None
                log.info("accepted a new key from %s (accept_new_keys)", self.peer)
                self._send_cnxn()
            else:
                # A phone would show "Allow USB debugging?"; nobody is there to accept it.
                log.warning("refused an unknown adb key from %s: %s", self.peer, text[-60:])
                raise _ConnectionClosed()
        else:
            raise _ConnectionClosed()

    def _open(self, remote_id: int, data: bytes) -> None:
        destination = data.rstrip(b"\0").decode("utf-8", "replace")
        if self.device._fault_commands_hit():
            log.info("fault: closing %s at command %r", self.peer, destination)
            self.kill()
            raise _ConnectionClosed()
        service, handler, ack_on_read = self._route(destination)
        if handler is None:
            self.send(A_CLSE, 0, remote_id)
            return
        local_id = next(self._ids)
        stream = _Stream(self, local_id, remote_id, ack_on_read=ack_on_read)
        with self.streams_lock:
            self.streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id, delay=True)
        thread = threading.Thread(target=self._run_service, args=(stream, handler, service),
                                  name=f"vdev-{destination[:20]}", daemon=True)
        thread.start()

    def _route(self, destination: str):
        if destination.startswith("shell"):
            head, sep, cmd = destination.partition(":")
            if not sep:
                return destination, None, False
            opts = head.split(",")[1:]
            v2 = "v2" in opts
            pty = "pty" in opts or (not v2 and not cmd)
            return cmd, (lambda s, c: self._shell(s, c, v2=v2, pty=pty)), False
        if destination.startswith("exec:"):
            return destination[5:], (lambda s, c: self._shell(s, c, v2=False, pty=False, exec_mode=True)), False
        if destination.startswith("sync:"):
            return "", (lambda s, c: _SyncService(self.device.state, s).run()), True
        return destination, None, False

    def _run_service(self, stream: _Stream, handler, arg: str) -> None:
        try:
            handler(stream, arg)
        except _ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 - a bug in a service must not take the server down
            log.exception("virtual device service failed")
        finally:
            stream.close()

    # -- shell
    def _shell(self, stream: _Stream, cmd: str, *, v2: bool, pty: bool, exec_mode: bool = False) -> None:
        state = self.device.state
        stdin_chunks = bytearray()
        stdin_done = threading.Event()

        def pump() -> None:
            buf = bytearray()
            while True:
                chunk = stream.read_chunk()
                if chunk is None:
                    break
                if not v2:
                    stdin_chunks.extend(chunk)
                    continue
                buf += chunk
                for kind, payload in shell_v2.take_packets(buf):
                    if kind == shell_v2.STDIN:
                        stdin_chunks.extend(payload)
                    elif kind == shell_v2.CLOSE_STDIN:
                        stdin_done.set()
            stdin_done.set()

        threading.Thread(target=pump, daemon=True).start()

        def read_stdin() -> bytes:
            stdin_done.wait()
            return bytes(stdin_chunks)

        if v2:
            def packet(kind: int) -> Callable[[bytes], None]:
                return lambda data: stream.write(shell_v2.pack(kind, data))
            out = _Buffered(packet(shell_v2.STDOUT))
            err = _Buffered(packet(shell_v2.STDERR)) if not pty else out
        else:
            out = err = _Buffered(stream.write)  # one buffer keeps stdout/stderr order in a merged stream
        cancel = threading.Event()
        watcher_stop = threading.Event()

        def watch() -> None:
            while not watcher_stop.is_set():
                if stream.closed.wait(0.2) or self.dead.is_set():
                    cancel.set()
                    return

        threading.Thread(target=watch, daemon=True).start()
        try:
            shell = Shell(state, cancel)
            if not cmd.strip():
                err.write(b"the emobench virtual device has no interactive shell; pass a command\n")
                status = 1
            else:
                status = shell.run(cmd, stdout=out.write, stderr=err.write, stdin=Stdin(reader=read_stdin))
            out.flush()
            err.flush()
            if v2:
                stream.write(shell_v2.pack(shell_v2.EXIT, bytes([status & 0xFF])))
        finally:
            watcher_stop.set()


# ------------------------------------------------------------------------------------------ sync
class _SyncService:
    def __init__(self, state: DeviceState, stream: _Stream) -> None:
        self.state = state
        self.stream = stream
        self.fs = state.fs

    def _reply(self, ident: bytes, payload: bytes) -> None:
        self.stream.write(ident + payload)

    def _fail(self, message: str) -> None:
        data = message.encode()
        self.stream.write(b"FAIL" + struct.pack("<I", len(data)) + data)

    def run(self) -> None:
        while True:
            head = self.stream.read_exact(8)
            ident, length = head[:4], struct.unpack("<I", head[4:])[0]
            if ident == b"QUIT":
                return
            if length > 4096:
                self._fail("path too long")
                return
            path = self.stream.read_exact(length).decode("utf-8", "replace")
            if ident == b"STAT":
                mode, size, mtime = self.fs.stat(path)
                self._reply(b"STAT", struct.pack("<III", mode, size & 0xFFFFFFFF, mtime))
            elif ident in (b"STA2", b"LST2"):
                mode, size, mtime = self.fs.stat(path)
                err = 0 if mode else errno.ENOENT
                self._reply(ident, struct.pack("<IQQIIIIQqqq", err, 0, 0, mode, 1, 2000, 2000, size,
                                               mtime, mtime, mtime))
            elif ident == b"LIST":
                self._list(path)
            elif ident == b"SEND":
                self._send(path)
            elif ident == b"RECV":
                self._recv(path)
            else:
                self._fail(f"unknown sync request {ident!r}")
                return

    def _list(self, path: str) -> None:
        try:
            names = self.fs.listdir(path)
        except FsError:
            names = []
        out = bytearray()
        for name in [".", "..", *names]:
            mode, size, mtime = self.fs.stat(posixpath_join(path, name))
            data = name.encode()
            out += b"DENT" + struct.pack("<IIII", mode, size & 0xFFFFFFFF, mtime, len(data)) + data
        out += b"DONE" + struct.pack("<IIII", 0, 0, 0, 0)
        self.stream.write(bytes(out))

    def _drain(self) -> None:
        """Read the rest of a SEND until DONE (the client sends everything before reading the reply)."""
        while True:
            head = self.stream.read_exact(8)
            ident, length = head[:4], struct.unpack("<I", head[4:])[0]
            if ident == b"DONE":
                return
            if ident != b"DATA":
                raise _ConnectionClosed()
            self.stream.read_exact(length)

    def _send(self, spec: str) -> None:
        path, _, mode_text = spec.rpartition(",")
        if not path:
            path, mode_text = spec, "33188"
        try:
            mode = stat_mod.S_IMODE(int(mode_text)) or 0o644
        except ValueError:
            mode = 0o644
        try:
            host = self.fs.writable_host_path(path)
            host.parent.mkdir(parents=True, exist_ok=True)
            if host.is_dir():
                raise FsError(errno.EISDIR, path)
        except (FsError, OSError) as exc:
            self._drain()
            self._fail(f"couldn't create file: {exc.strerror or exc}")
            return
        limit = self.state.faults.storage_free_bytes
        fd, tmp_name = tempfile.mkstemp(prefix=f".{host.name}.", suffix=".part", dir=host.parent)
        written = 0
        failure = ""
        try:
            with os.fdopen(fd, "wb") as fh:
                while True:
                    head = self.stream.read_exact(8)
                    ident, length = head[:4], struct.unpack("<I", head[4:])[0]
                    if ident == b"DONE":
                        mtime = length
                        break
                    if ident != b"DATA" or length > _SYNC_DATA_MAX:
                        raise _ConnectionClosed()
                    chunk = self.stream.read_exact(length)
                    if failure:
                        continue
                    written += len(chunk)
                    if limit is not None and written > limit:
                        failure = os.strerror(errno.ENOSPC)
                        continue
                    try:
                        fh.write(chunk)
                    except OSError as exc:
                        failure = exc.strerror or str(exc)
            if failure:
                raise OSError(failure)
            os.chmod(tmp_name, mode)
            os.utime(tmp_name, (mtime, mtime))
            os.replace(tmp_name, host)
        except _ConnectionClosed:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            self._fail(f"write failed: {exc.strerror or exc.args[0]}")
            return
        self.stream.write(b"OKAY" + struct.pack("<I", 0))

    def _recv(self, path: str) -> None:
        node = self.fs.resolve(path)
        try:
            if node.host_path is not None and node.host_path.is_file():
                fh = open(node.host_path, "rb")  # noqa: SIM115 - closed below
            else:
                import io

                fh = io.BytesIO(self.fs.read_bytes(path))
        except (FsError, OSError) as exc:
            self._fail(f"{exc.strerror or exc}")
            return
        budget = max(_SYNC_DATA_MAX + 8, self.stream.conn.max_payload)
        with fh:
            out = bytearray()
            while chunk := fh.read(_SYNC_DATA_MAX):
                out += b"DATA" + struct.pack("<I", len(chunk)) + chunk
                if len(out) + _SYNC_DATA_MAX + 8 > budget:
                    self.stream.write(bytes(out))
                    out.clear()
            out += b"DONE" + struct.pack("<I", 0)
            self.stream.write(bytes(out))


def posixpath_join(a: str, b: str) -> str:
    import posixpath

    return posixpath.join(a, b)


# ------------------------------------------------------------------------------------------ the device
def _preload_runtime() -> None:
    with contextlib.suppress(Exception):
        import executorch.runtime  # noqa: F401


class VirtualDevice:
    """A virtual Android device serving the ADB protocol on 127.0.0.1.

    Use as a context manager::

        with VirtualDevice(auth=False) as vd:
            dev = android_bench.device.connect(vd.address)

    Args:
        root: the sandbox folder behind /data/local/tmp (a temporary folder, removed at stop, if None).
        port: TCP port on 127.0.0.1 (0 = a free one).
        profile: a shipped profile name or a JSON file.
        auth: require RSA authentication like a phone.
        authorized_keys: an adb_keys-style file of accepted public keys (default: the user's
            ~/.android/adbkey.pub, created if missing, like a phone that trusts this computer).
        accept_new_keys: accept a key the host offers (as if a person tapped "Allow").
        runner_logging: override the profile's runner logging (``stderr``, ``logcat``, ``none``).
        faults: failures to inject (see :class:`FaultPlan`).
    """

    def __init__(self, root: Path | None = None, *, port: int = 0, profile: str | Path = "default",
                 auth: bool = True, authorized_keys: Path | None = None, accept_new_keys: bool = False,
                 runner_logging: str | None = None, faults: FaultPlan | None = None) -> None:
        self.profile = load_profile(profile)
        mode = runner_logging or self.profile.runner_logging
        if mode not in ("stderr", "logcat", "none"):
            raise ValueError(f"runner_logging must be stderr, logcat or none, not {mode!r}")
        self._tmp = None
        if root is None:
            self._tmp = tempfile.mkdtemp(prefix="emobench-vdev-")
            root = Path(self._tmp)
        self.root = Path(root)
        self.auth = auth
        self.accept_new_keys = accept_new_keys
        self.authorized_keys: list = []
        if auth:
            if authorized_keys is None:
                from android_bench.keys import ensure_adb_key

                authorized_keys = Path(str(ensure_adb_key(None)) + ".pub")
            self.authorized_keys = load_authorized_keys(authorized_keys)
        self.state = DeviceState(self.root, self.profile, mode, faults or FaultPlan())
        self._requested_port = port
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[_Connection] = set()
        self._lock = threading.Lock()
        self._commands = 0
        self._bytes_sent = 0
        self._bytes_fault_done = False
        self._commands_fault_done = False
        self._install_runner()

    # -- faults
    @property
    def faults(self) -> FaultPlan:
        return self.state.faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        self.state.faults = plan
        self._bytes_fault_done = False
        self._commands_fault_done = False
        self._commands = 0
        self._bytes_sent = 0

    def set_faults(self, **changes) -> None:
        """Change some fault settings (see :class:`FaultPlan`)."""
        self.faults = replace(self.state.faults, **changes)

    def _fault_bytes_hit(self, sent: int) -> bool:
        limit = self.state.faults.close_after_bytes
        if limit is None or self._bytes_fault_done:
            return False
        with self._lock:
            self._bytes_sent += sent
            if self._bytes_sent < limit:
                return False
            self._bytes_fault_done = True
            return True

    def _fault_commands_hit(self) -> bool:
        with self._lock:
            self._commands += 1
            limit = self.state.faults.close_after_commands
            if limit is None or self._commands_fault_done or self._commands <= limit:
                return False
            self._commands_fault_done = True
            return True

    # -- setup
    def _install_runner(self) -> None:
        host = self.state.fs.writable_host_path(self.profile.runner_path)
        if not host.exists():
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_bytes(RUNNER_STUB)
            os.chmod(host, 0o755)

    @property
    def runner_path(self) -> str:
        """Device path of the built-in executor_runner."""
        return self.profile.runner_path

    @property
    def logcat(self) -> LogBuffer:
        return self.state.logcat

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the virtual device is not started")
        return self._server.getsockname()[1]

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``: the target to pass to :func:`android_bench.device.connect`."""
        return f"127.0.0.1:{self.port}"

    @property
    def serial(self) -> str:
        """How ``adb`` and emobench name this device after ``adb connect``."""
        return self.address

    def start(self) -> VirtualDevice:
        """Bind 127.0.0.1 and start serving (returns self)."""
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("127.0.0.1", self._requested_port))
        except OSError as exc:
            server.close()
            from emobench_common.errors import EmobenchError

            raise EmobenchError(f"cannot listen on 127.0.0.1:{self._requested_port}: {exc.strerror}",
                                hint="pick another --port, or 0 for a free one") from exc
        server.listen(16)
        self._server = server
        self._thread = threading.Thread(target=self._accept_loop, name="vdev-accept", daemon=True)
        self._thread.start()
        # Importing executorch takes seconds; do it now, off the request path, so the first
        # executor_runner call answers as promptly as a phone's would.
        threading.Thread(target=_preload_runtime, name="vdev-preload", daemon=True).start()
        log.info("virtual device %s serving %s (sandbox %s)", self.profile.name, self.address, self.root)
        return self

    def _accept_loop(self) -> None:
        server = self._server
        assert server is not None
        while True:
            try:
                sock, peer = server.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock, peer)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=conn.serve, name=f"vdev-conn-{peer[1]}", daemon=True).start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def drop_connections(self) -> None:
        """Close every client connection (as if the phone were unplugged for a moment)."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.kill()

    def stop(self) -> None:
        """Stop serving, end running commands, and remove a temporary sandbox."""
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread on Linux
            with contextlib.suppress(OSError):
                self._server.close()
        self.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> VirtualDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
