"""The ``shell:``, ``shell,v2,...:`` and ``exec:`` services: one command line run by the virtual shell.

Legacy shell and ``exec:`` streams carry raw bytes both ways (stdout and stderr merged in one
buffer so their order is kept); shell v2 frames stdin, stdout, stderr and the exit status with
:mod:`android_bench.shell_v2`. A closed stream or a dropped connection cancels the running command.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from android_bench import shell_v2
from android_bench.virtual.shell import Shell, Stdin
from android_bench.virtual.state import DeviceState
from android_bench.virtual.streams import BufferedWriter, Stream


def serve_shell(stream: Stream, cmd: str, state: DeviceState, *, v2: bool, pty: bool) -> None:
    """Run ``cmd`` on ``state``'s shell, with ``stream`` as its standard input and output."""
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
        out = BufferedWriter(packet(shell_v2.STDOUT))
        err = BufferedWriter(packet(shell_v2.STDERR)) if not pty else out
    else:
        out = err = BufferedWriter(stream.write)  # one buffer keeps stdout/stderr order in a merged stream
    cancel = threading.Event()
    watcher_stop = threading.Event()

    def watch() -> None:
        while not watcher_stop.is_set():
            if stream.closed.wait(0.2) or stream.conn.dead.is_set():
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
