"""The ``sync:`` service of the virtual device: adb push, pull, stat and ls.

Requests and replies use the framing of :mod:`android_bench.sync_framing`, the same module the
device client uses. A push is written to a temporary file beside its target and renamed into
place only when complete, so an interrupted push never leaves a truncated file; the fault plan's
``storage_free_bytes`` makes a large push fail with "No space left on device" as a full phone does.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import posixpath
import struct
import tempfile
from typing import BinaryIO

from android_bench import sync_framing as sync
from android_bench.virtual.fs import FsError
from android_bench.virtual.state import DeviceState
from android_bench.virtual.streams import Stream
from android_bench.virtual.wire import ConnectionClosed


class SyncService:
    """Serves one ``sync:`` stream until the client sends QUIT (or a request it cannot serve)."""

    def __init__(self, state: DeviceState, stream: Stream) -> None:
        self.state = state
        self.stream = stream
        self.fs = state.fs

    def _fail(self, message: str) -> None:
        self.stream.write(sync.fail(message))

    def run(self) -> None:
        while True:
            try:
                ident, path = sync.read_request(self.stream.read_exact)
            except sync.SyncRequestError as exc:
                self._fail(str(exc))
                return
            if ident == sync.QUIT:
                return
            if ident == sync.STAT:
                mode, size, mtime = self.fs.stat(path)
                self.stream.write(sync.STAT + struct.pack("<III", mode, size & 0xFFFFFFFF, mtime))
            elif ident in (sync.STA2, sync.LST2):
                mode, size, mtime = self.fs.stat(path)
                err = 0 if mode else errno.ENOENT
                self.stream.write(ident + struct.pack("<IQQIIIIQqqq", err, 0, 0, mode, 1, 2000, 2000, size,
                                                      mtime, mtime, mtime))
            elif ident == sync.LIST:
                self._list(path)
            elif ident == sync.SEND:
                self._send(path)
            elif ident == sync.RECV:
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
            mode, size, mtime = self.fs.stat(posixpath.join(path, name))
            data = name.encode()
            out += sync.DENT + struct.pack("<IIII", mode, size & 0xFFFFFFFF, mtime, len(data)) + data
        out += sync.DONE + struct.pack("<IIII", 0, 0, 0, 0)
        self.stream.write(bytes(out))

    def _drain(self) -> None:
        """Read the rest of a SEND until DONE (the client sends everything before reading the reply)."""
        while True:
            ident, length = sync.read_header(self.stream.read_exact)
            if ident == sync.DONE:
                return
            if ident != sync.DATA:
                raise ConnectionClosed()
            self.stream.read_exact(length)

    def _send(self, spec: str) -> None:
        path, mode = sync.parse_send_spec(spec)
        try:
            host = self.fs.writable_host_path(path)
            host.parent.mkdir(parents=True, exist_ok=True)
            if host.is_dir():
                raise FsError(errno.EISDIR, path)
        except OSError as exc:  # FsError included
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
                    ident, length = sync.read_header(self.stream.read_exact)
                    if ident == sync.DONE:
                        mtime = length
                        break
                    if ident != sync.DATA or length > sync.MAX_DATA_BYTES:
                        raise ConnectionClosed()
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
        except ConnectionClosed:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            self._fail(f"write failed: {exc.strerror or exc.args[0]}")
            return
        self.stream.write(sync.header(sync.OKAY, 0))

    def _recv(self, path: str) -> None:
        node = self.fs.resolve(path)
        fh: BinaryIO
        try:
            if node.host_path is not None and node.host_path.is_file():
                fh = open(node.host_path, "rb")  # noqa: SIM115 - closed below
            else:
                fh = io.BytesIO(self.fs.read_bytes(path))
        except OSError as exc:  # FsError included
            self._fail(f"{exc.strerror or exc}")
            return
        frame_bytes = sync.MAX_DATA_BYTES + sync.HEADER_BYTES
        budget = max(frame_bytes, self.stream.conn.max_payload)
        with fh:
            out = bytearray()
            while chunk := fh.read(sync.MAX_DATA_BYTES):
                out += sync.packet(sync.DATA, chunk)
                if len(out) + frame_bytes > budget:
                    self.stream.write(bytes(out))
                    out.clear()
            out += sync.header(sync.DONE, 0)
            self.stream.write(bytes(out))
