"""adb's shell protocol v2 framing, shared by the device client and the virtual device.

Each packet is a 1-byte id (0 stdin, 1 stdout, 2 stderr, 3 exit, 4 close-stdin, 5 window size),
a little-endian u32 length, then the data.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

STDIN, STDOUT, STDERR, EXIT, CLOSE_STDIN, WINDOW_SIZE = range(6)


def pack(kind: int, data: bytes) -> bytes:
    """One packet of ``kind`` carrying ``data``."""
    return bytes([kind]) + struct.pack("<I", len(data)) + data


def take_packets(buf: bytearray) -> Iterator[tuple[int, bytes]]:
    """Yield the complete packets at the start of ``buf``, removing them; a partial one stays."""
    while len(buf) >= 5:
        kind, length = buf[0], struct.unpack("<I", buf[1:5])[0]
        if len(buf) < 5 + length:
            return
        payload = bytes(buf[5:5 + length])
        del buf[:5 + length]
        yield kind, payload
