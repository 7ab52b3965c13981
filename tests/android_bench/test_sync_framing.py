"""adb's sync framing, shared by the device client and the virtual device's sync service."""

from __future__ import annotations

import io

import pytest

from android_bench import sync_framing as sync


def test_header_and_packet_bytes() -> None:
    assert sync.header(sync.DONE, 1_700_000_000) == b"DONE" + (1_700_000_000).to_bytes(4, "little")
    assert sync.packet(sync.DATA, b"abc") == b"DATA\x03\x00\x00\x00abc"
    assert sync.request(sync.RECV, "/data/local/tmp/é") == b"RECV\x12\x00\x00\x00/data/local/tmp/\xc3\xa9"
    assert sync.fail("no space") == b"FAIL\x08\x00\x00\x00no space"


def test_parse_header_round_trip_and_wrong_size() -> None:
    assert sync.parse_header(sync.header(sync.OKAY, 0)) == (b"OKAY", 0)
    assert sync.parse_header(b"DATA\xff\xff\xff\xff") == (b"DATA", 0xFFFFFFFF)
    with pytest.raises(ValueError, match="8 bytes, not 7"):
        sync.parse_header(b"DATA\x00\x00\x00")


def test_send_spec_round_trip() -> None:
    spec = sync.send_spec("/data/local/tmp/runner,v2", 0o755)
    assert spec == "/data/local/tmp/runner,v2,33261"  # S_IFREG | 0755; the last comma splits
    assert sync.parse_send_spec(spec) == ("/data/local/tmp/runner,v2", 0o755)
    assert sync.parse_send_spec("/data/local/tmp/x") == ("/data/local/tmp/x", 0o644)
    assert sync.parse_send_spec("/data/local/tmp/x,abc") == ("/data/local/tmp/x", 0o644)
    assert sync.parse_send_spec("/data/local/tmp/x,32768") == ("/data/local/tmp/x", 0o644)  # no permission bits


def test_read_request_sequence() -> None:
    wire = io.BytesIO(sync.request(sync.STAT, "/sdcard") + sync.request(sync.SEND, "/a,33188")
                      + sync.header(sync.QUIT, 0))

    def read_exact(n: int) -> bytes:
        data = wire.read(n)
        assert len(data) == n
        return data

    assert sync.read_request(read_exact) == (b"STAT", "/sdcard")
    assert sync.read_request(read_exact) == (b"SEND", "/a,33188")
    assert sync.read_request(read_exact) == (b"QUIT", "")


def test_read_request_refuses_a_long_path_without_reading_it() -> None:
    wire = io.BytesIO(sync.header(sync.RECV, sync.MAX_PATH_BYTES + 1) + b"x" * 10)
    with pytest.raises(sync.SyncRequestError, match="path too long"):
        sync.read_request(wire.read)
    assert wire.tell() == sync.HEADER_BYTES
