"""ADB streams on the virtual device's side, with adbd's flow control.

Every WRTE we send waits for the peer's OKAY before the next; a WRTE we receive is acknowledged
when it is consumed (``ack_on_read``, the sync service) or at once (shell stdin). CLSE closes the
stream both ways. ``BufferedWriter`` gathers a command's small writes into fewer, larger WRTEs.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

from android_bench.virtual.wire import A_CLSE, A_OKAY, A_WRTE, ConnectionClosed


class StreamOwner(Protocol):
    """What a stream needs of its connection."""

    max_payload: int
    dead: threading.Event

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"", *, delay: bool = False) -> None: ...

    def forget(self, local_id: int) -> None: ...


class Stream:
    """One opened ADB stream (a service such as ``shell:`` or ``sync:``) on a connection."""

    def __init__(self, conn: StreamOwner, local_id: int, remote_id: int, *, ack_on_read: bool) -> None:
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
                raise ConnectionClosed()
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
                raise ConnectionClosed()
            self.okay.clear()
            self.conn.send(A_WRTE, self.local_id, self.remote_id, bytes(view[start:start + step]), delay=True)
            while not self.okay.wait(1.0):
                if self.conn.dead.is_set():
                    raise ConnectionClosed()

    def close(self) -> None:
        if not self.we_closed:
            self.we_closed = True
            with contextlib.suppress(OSError, ConnectionClosed):
                self.conn.send(A_CLSE, self.local_id, self.remote_id)
        self.conn.forget(self.local_id)


class BufferedWriter:
    """Collects small writes into larger WRTEs (flushed at 32 KiB, after 100 ms, and at the end)."""

    def __init__(self, emit: Callable[[bytes], object]) -> None:
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
