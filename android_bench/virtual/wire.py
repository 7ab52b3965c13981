"""The ADB transport's wire format, as the virtual device's daemon side speaks it.

A message is a 24-byte header of six little-endian u32 (command, arg0, arg1, payload length,
payload checksum, command ^ 0xFFFFFFFF) followed by the payload. Peers of version 0x01000000
(adb-shell among them) expect the checksum (the byte sum of the payload); 0x01000001 skips it.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, NamedTuple

import numpy as np

A_SYNC, A_CNXN, A_OPEN, A_OKAY, A_CLSE, A_WRTE, A_AUTH = (
    0x434E5953, 0x4E584E43, 0x4E45504F, 0x59414B4F, 0x45534C43, 0x45545257, 0x48545541)
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
VERSION_MIN, VERSION_SKIP_CHECKSUM = 0x01000000, 0x01000001
MAX_PAYLOAD = 1024 * 1024
HEADER = struct.Struct("<6I")


class ConnectionClosed(Exception):
    """The peer went away, or sent something that ends the connection (a bad header, too much data)."""


class Message(NamedTuple):
    command: int
    arg0: int
    arg1: int
    data: bytes


def checksum(data: bytes) -> int:
    """adb's payload checksum: the sum of the bytes, modulo 2**32."""
    return int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFFFFFF


def pack_header(command: int, arg0: int, arg1: int, data: bytes, *, version: int) -> bytes:
    """The header for ``data``; the checksum is filled in for peers older than ``VERSION_SKIP_CHECKSUM``."""
    check = checksum(data) if data and version < VERSION_SKIP_CHECKSUM else 0
    return HEADER.pack(command, arg0, arg1, len(data), check, command ^ 0xFFFFFFFF)


def read_message(reader: BinaryIO) -> Message:
    """One message from ``reader``; raises ConnectionClosed at the end of the stream or on a bad header."""
    header = reader.read(HEADER.size)
    if len(header) < HEADER.size:
        raise ConnectionClosed()
    command, arg0, arg1, length, _checksum, magic = HEADER.unpack(header)
    if magic != command ^ 0xFFFFFFFF:
        raise ConnectionClosed()
    if length > MAX_PAYLOAD:
        raise ConnectionClosed()
    data = reader.read(length) if length else b""
    if len(data) < length:
        raise ConnectionClosed()
    return Message(command, arg0, arg1, data)
