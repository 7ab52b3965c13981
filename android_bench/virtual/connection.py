"""One client connection to the virtual device: the ADB handshake, authentication and stream routing.

A reader thread per connection reads messages (:mod:`.wire`); CNXN and AUTH run the handshake
(RSA keys as in :mod:`.auth`); each OPEN starts its service (``shell``/``exec`` in
:mod:`.shell_service`, ``sync`` in :mod:`.sync_service`) on a :class:`~.streams.Stream` in its own
thread, so a long model run does not block other commands. The fault plan's byte and command
limits and reply delay act here.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

from android_bench.virtual.auth import parse_adb_public_key, verify_signature
from android_bench.virtual.shell_service import serve_shell
from android_bench.virtual.state import DeviceState
from android_bench.virtual.streams import Stream
from android_bench.virtual.sync_service import SyncService
from android_bench.virtual.wire import (
    A_AUTH,
    A_CLSE,
    A_CNXN,
    A_OKAY,
    A_OPEN,
    A_WRTE,
    AUTH_RSAPUBLICKEY,
    AUTH_SIGNATURE,
    AUTH_TOKEN,
    MAX_PAYLOAD,
    VERSION_MIN,
    VERSION_SKIP_CHECKSUM,
    ConnectionClosed,
    pack_header,
    read_message,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

log = logging.getLogger(__name__)

Service = Callable[[Stream, str], None]
"""A stream's service: gets the stream and the part of the destination after the service name."""


class Endpoint(Protocol):
    """What a connection needs of the device that accepted it (the :class:`~.server.VirtualDevice`)."""

    state: DeviceState
    auth: bool
    accept_new_keys: bool
    authorized_keys: list[RSAPublicKey]

    def fault_bytes_hit(self, sent: int) -> bool: ...

    def fault_commands_hit(self) -> bool: ...

    def forget_connection(self, conn: Connection) -> None: ...


class Connection:
    """One client's ADB connection: CNXN/AUTH handshake, then OPEN/WRTE/OKAY/CLSE for its streams."""

    def __init__(self, device: Endpoint, sock: socket.socket, peer: tuple[str, int]) -> None:
        self.device = device
        self.sock = sock
        self.peer = peer
        # makefile("rb", buffering=N) is a BufferedReader; typeshed only says IOBase
        self.reader = cast(BinaryIO, sock.makefile("rb", buffering=256 * 1024))
        self.send_lock = threading.Lock()
        self.dead = threading.Event()
        self.version = VERSION_SKIP_CHECKSUM
        self.max_payload = 4096
        self.online = False
        self.streams: dict[int, Stream] = {}
        self.streams_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.bytes_sent = 0
        self.token = b""
        self.auth_attempts = 0

    # -- wire
    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"", *, delay: bool = False) -> None:
        if self.dead.is_set():
            raise ConnectionClosed()
        faults = self.device.state.faults
        if delay and faults.reply_delay_s:
            time.sleep(faults.reply_delay_s)
        header = pack_header(command, arg0, arg1, data, version=self.version)
        with self.send_lock:
            try:
                self.sock.sendall(header + data if len(data) < 65536 else header)
                if len(data) >= 65536:
                    self.sock.sendall(data)
            except OSError as exc:
                self.kill()
                raise ConnectionClosed() from exc
            self.bytes_sent += len(header) + len(data)
        if self.device.fault_bytes_hit(len(header) + len(data)):
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

    # -- main loop
    def serve(self) -> None:
        try:
            while not self.dead.is_set():
                command, arg0, arg1, data = read_message(self.reader)
                self._dispatch(command, arg0, arg1, data)
        except (ConnectionClosed, OSError, ValueError):
            pass
        finally:
            self.kill()
            with contextlib.suppress(OSError):
                self.reader.close()
                self.sock.close()
            self.device.forget_connection(self)

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
            raise ConnectionClosed()
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
                    with contextlib.suppress(ConnectionClosed):
                        self.send(A_CLSE, stream.local_id, stream.remote_id)
                self.forget(arg1)

    def _auth(self, kind: int, data: bytes) -> None:
        if not self.device.auth or self.online:
            return
        self.auth_attempts += 1
        if self.auth_attempts > 16:
            raise ConnectionClosed()
        if kind == AUTH_SIGNATURE:
            if self.token and verify_signature(self.device.authorized_keys, self.token, data):
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
                    raise ConnectionClosed() from None
                log.info("accepted a new key from %s (accept_new_keys)", self.peer)
                self._send_cnxn()
            else:
                # A phone would show "Allow USB debugging?"; nobody is there to accept it.
                log.warning("refused an unknown adb key from %s: %s", self.peer, text[-60:])
                raise ConnectionClosed()
        else:
            raise ConnectionClosed()

    def _open(self, remote_id: int, data: bytes) -> None:
        destination = data.rstrip(b"\0").decode("utf-8", "replace")
        if self.device.fault_commands_hit():
            log.info("fault: closing %s at command %r", self.peer, destination)
            self.kill()
            raise ConnectionClosed()
        arg, service, ack_on_read = self._route(destination)
        if service is None:
            self.send(A_CLSE, 0, remote_id)
            return
        local_id = next(self._ids)
        stream = Stream(self, local_id, remote_id, ack_on_read=ack_on_read)
        with self.streams_lock:
            self.streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id, delay=True)
        thread = threading.Thread(target=self._run_service, args=(stream, service, arg),
                                  name=f"vdev-{destination[:20]}", daemon=True)
        thread.start()

    def _route(self, destination: str) -> tuple[str, Service | None, bool]:
        """``(argument, service, ack_on_read)`` for an OPEN of ``destination``; no service: refused."""
        state = self.device.state
        if destination.startswith("shell"):
            head, sep, cmd = destination.partition(":")
            if not sep:
                return destination, None, False
            opts = head.split(",")[1:]
            v2 = "v2" in opts
            pty = "pty" in opts or (not v2 and not cmd)
            return cmd, (lambda s, c: serve_shell(s, c, state, v2=v2, pty=pty)), False
        if destination.startswith("exec:"):
            return destination[5:], (lambda s, c: serve_shell(s, c, state, v2=False, pty=False)), False
        if destination.startswith("sync:"):
            return "", (lambda s, c: SyncService(state, s).run()), True
        return destination, None, False

    def _run_service(self, stream: Stream, service: Service, arg: str) -> None:
        try:
            service(stream, arg)
        except ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 - a bug in a service must not take the server down
            log.exception("virtual device service failed")
        finally:
            stream.close()
