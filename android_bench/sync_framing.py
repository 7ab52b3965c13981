"""adb's file sync protocol framing, shared by the device client and the virtual device.

After ``sync:`` is opened, every request and reply starts with an 8-byte header: a 4-byte id
(``SEND``, ``RECV``, ``STAT``, ``LIST``, ``QUIT`` from the client; ``DATA``, ``DONE``, ``OKAY``,
``FAIL``, ``DENT``, ``STAT`` from the device) and a little-endian u32 that is a length (of the path,
the data or the message that follows) or, for ``DONE`` after a ``SEND``, the file's mtime. A
``SEND`` path is ``<remote path>,<st_mode in decimal>``. ``DATA`` chunks carry at most
``MAX_DATA_BYTES``.
"""

from __future__ import annotations

import stat as stat_mod
import struct
from collections.abc import Callable

SEND, RECV, STAT, LIST, QUIT = b"SEND", b"RECV", b"STAT", b"LIST", b"QUIT"
STA2, LST2 = b"STA2", b"LST2"
DATA, DONE, OKAY, FAIL, DENT = b"DATA", b"DONE", b"OKAY", b"FAIL", b"DENT"

HEADER_BYTES = 8
MAX_DATA_BYTES = 64 * 1024
"""The largest ``DATA`` payload adbd accepts (SYNC_DATA_MAX)."""
DEFAULT_FILE_MODE = 0o644

_U32 = struct.Struct("<I")


def header(ident: bytes, value: int) -> bytes:
    """The 8-byte header ``ident`` + u32 ``value`` (a length, or an mtime for ``DONE``)."""
    return ident + _U32.pack(value)


def packet(ident: bytes, data: bytes) -> bytes:
    """``ident``, the length of ``data``, then ``data`` (a request path, a DATA chunk, a FAIL message)."""
    return header(ident, len(data)) + data


def request(ident: bytes, path: str) -> bytes:
    """A client request for ``path`` (``SEND``, ``RECV``, ``STAT``, ``LIST``)."""
    return packet(ident, path.encode())


def fail(message: str) -> bytes:
    """A ``FAIL`` reply carrying ``message``."""
    return packet(FAIL, message.encode())


def parse_header(head: bytes) -> tuple[bytes, int]:
    """``(ident, value)`` from an 8-byte header."""
    if len(head) != HEADER_BYTES:
        raise ValueError(f"a sync header is {HEADER_BYTES} bytes, not {len(head)}")
    return bytes(head[:4]), _U32.unpack(head[4:])[0]


def read_header(read_exact: Callable[[int], bytes]) -> tuple[bytes, int]:
    """Read one header with ``read_exact(n)`` (which returns exactly n bytes or raises)."""
    return parse_header(read_exact(HEADER_BYTES))


def send_spec(remote: str, mode: int) -> str:
    """The ``SEND`` path for writing ``remote`` as a regular file with permission bits ``mode``."""
    return f"{remote},{stat_mod.S_IFREG | mode}"


def parse_send_spec(spec: str) -> tuple[str, int]:
    """``(remote path, permission bits)`` from a ``SEND`` path; no or a bad mode gives 0o644."""
    path, _, mode_text = spec.rpartition(",")
    if not path:
        return spec, DEFAULT_FILE_MODE
    try:
        return path, stat_mod.S_IMODE(int(mode_text)) or DEFAULT_FILE_MODE
    except ValueError:
        return path, DEFAULT_FILE_MODE



MAX_PATH_BYTES = 4096
"""The longest request path a device accepts."""


class SyncRequestError(ValueError):
    """A request the device refuses to read (its message is what the FAIL reply says)."""


def read_request(read_exact: Callable[[int], bytes]) -> tuple[bytes, str]:
    """The next client request as ``(ident, path)``; ``QUIT`` comes back with an empty path.

    Raises:
        SyncRequestError: the path is longer than ``MAX_PATH_BYTES`` (it is left unread).
    """
    ident, length = read_header(read_exact)
    if ident == QUIT:
        return ident, ""
    if length > MAX_PATH_BYTES:
        raise SyncRequestError("path too long")
    return ident, read_exact(length).decode("utf-8", "replace")
