"""The harness's device code (adb-shell over TCP) against the virtual device."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from android_bench.adb.shell_transport import make_tcp_adb
from android_bench.device import (
    DeviceAuthError,
    DeviceCommandError,
    DeviceError,
    DeviceStorageError,
    DeviceTimeoutError,
    DeviceUnreachableError,
    ShellResult,
    connect,
    elf_machine,
    retry_with_backoff,
)
from android_bench.device_info import read_cpu_freqs_khz, read_temperatures_c
from android_bench.keys import ensure_adb_key, load_signer
from android_bench.virtual import FaultPlan, VirtualDevice

TMP = "/data/local/tmp"


def test_shell_exit_status_and_separate_stderr(device):
    assert device.shell_protocol == "v2"
    r = device.shell("echo out; echo err >&2; exit 3", check=False)
    assert r == ShellResult("out\n", "err\n", 3)
    with pytest.raises(DeviceCommandError, match=r"status 1.*\n.*No such file") as info:
        device.shell(["ls", f"{TMP}/missing"])
    assert info.value.result.exit_status == 1


def test_legacy_shell_recovers_exit_status_with_unforgeable_marker(virtual_device, adb_key):
    with connect(virtual_device.address, adb_key=adb_key, shell_protocol="legacy") as dev:
        assert dev.shell_protocol == "legacy"
        assert dev.shell("printf 'no newline'; exit 7", check=False) == ShellResult("no newline", "", 7)
        assert dev.shell(["echo", "line"]).stdout == "line\n"
        assert dev.shell("printf 'x\\n\\n'").stdout == "x\n\n"
        # A command printing something that looks like a marker cannot fake the status.
        fake = dev.shell("printf '\\nabc:0\\n'; false", check=False)
        assert fake.exit_status == 1 and fake.stdout == "\nabc:0\n"
        assert dev.shell("echo e >&2; exit 2", check=False) == ShellResult("e\n", "", 2)


def test_push_pull_20mb_byte_identical_and_sha256_checked(device, tmp_path, virtual_device):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024))
    device.push(src, f"{TMP}/big.bin")
    assert device.sha256(f"{TMP}/big.bin") == hashlib.sha256(src.read_bytes()).hexdigest()
    assert (virtual_device.root / "big.bin").read_bytes() == src.read_bytes()
    back = tmp_path / "back.bin"
    device.pull(f"{TMP}/big.bin", back)
    assert back.read_bytes() == src.read_bytes()
    assert not list(tmp_path.glob(".back.bin*"))  # no temp file left behind


def test_push_retries_once_then_fails_loudly_on_checksum_mismatch(device, tmp_path, monkeypatch):
    src = tmp_path / "m.bin"
    src.write_bytes(b"model")
    calls = []
    monkeypatch.setattr(type(device), "sha256", lambda self, remote: calls.append(remote) or "0" * 64)
    with pytest.raises(DeviceStorageError, match="after two pushes"):
        device.push(src, f"{TMP}/m.bin")
    assert len(calls) == 2


def test_pull_of_missing_file_fails_and_leaves_nothing(device, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DeviceError, match="does not exist"):
        device.pull(f"{TMP}/nope.bin", out / "nope.bin")
    assert list(out.iterdir()) == []


HOSTILE = ["a b.pte", "it's.pte", 'say "hi".pte', "x; touch PWNED1", "$(touch PWNED2)", "`touch PWNED3`",
           "a&&touch PWNED4", "back\\slash|pipe>redir", "-n"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_names_are_quoted_and_run_nothing(device, tmp_path, virtual_device, name):
    src = tmp_path / "payload.bin"
    src.write_bytes(b"payload")
    remote = f"{TMP}/{name}"
    device.push(src, remote)
    assert device.exists(remote)
    assert device.shell(["cat", remote]).stdout == "payload"
    device.shell(["chmod", "644", remote])
    device.shell(["cp", remote, f"{TMP}/copy"])
    device.shell(["rm", remote])
    assert not device.exists(remote)
    leftovers = sorted(p.name for p in virtual_device.root.iterdir())
    assert not [p for p in leftovers if p.startswith("PWNED")], leftovers
    assert "copy" in leftovers


def test_properties_and_device_info(device):
    props = device.getprop()
    assert props["ro.emobench.virtual"] == "1"
    assert "virtual" in device.getprop("ro.product.model")
    assert device.getprop("no.such.prop") == ""
    info = device.info()
    assert info.is_virtual and info.serial == device.serial
    assert info.abis and info.abi == props["ro.product.cpu.abi"]
    assert info.sdk == int(props["ro.build.version.sdk"])
    assert info.cpu_cores == (os.cpu_count() or 1)
    assert len(info.cpu_max_freq_khz) == info.cpu_cores and all(info.cpu_max_freq_khz)
    assert info.ram_bytes and info.ram_bytes > 10**8
    assert info.battery_level_pct == 100 and info.battery_temp_c == 25.0
    assert info.to_dict()["soc"]
    assert read_temperatures_c(device)
    assert set(read_cpu_freqs_khz(device)) == set(range(info.cpu_cores))


def test_free_bytes_and_storage_full_push(device, virtual_device, tmp_path):
    assert device.free_bytes(TMP) > 0
    virtual_device.set_faults(storage_free_bytes=1000)
    assert device.free_bytes(TMP) <= 1024
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * 200_000)
    with pytest.raises(DeviceStorageError, match="No space left") as info:
        device.push(src, f"{TMP}/big.bin")
    assert "free space" in (info.value.hint or "")
    assert not device.exists(f"{TMP}/big.bin")
    virtual_device.set_faults(storage_free_bytes=None)
    device.push(src, f"{TMP}/big.bin")  # the connection is still usable


def test_no_auth_device(tmp_path, adb_key):
    with VirtualDevice(tmp_path / "r", auth=False) as vd, connect(vd.address, adb_key=adb_key) as dev:
        assert dev.shell(["echo", "ok"]).stdout == "ok\n"


def test_unknown_key_is_refused_quickly(virtual_device, tmp_path):
    stranger = ensure_adb_key(tmp_path / "stranger" / "adbkey", create=True)
    t0 = time.monotonic()
    with pytest.raises(DeviceAuthError) as info:
        connect(virtual_device.address, adb_key=stranger, auth_timeout_s=20)
    assert time.monotonic() - t0 < 10
    assert "accept" in info.value.hint and "adbkey" in info.value.hint


def test_accept_new_keys_policy(tmp_path, adb_key):
    other = tmp_path / "keys"
    other.write_text("")
    with VirtualDevice(tmp_path / "r", authorized_keys=other, accept_new_keys=True) as vd:
        with connect(vd.address, adb_key=adb_key) as dev:
            assert dev.shell(["true"]).exit_status == 0


def test_unreachable_address(adb_key):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeviceUnreachableError):
        connect(f"127.0.0.1:{port}", adb_key=adb_key, timeout_s=2)


def test_server_listens_on_loopback_only(virtual_device):
    # Exactly one listening socket, bound to 127.0.0.1 - not 0.0.0.0 or an external address.
    assert virtual_device.listen_address == ("127.0.0.1", virtual_device.port)
    addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    for address in addresses - {"127.0.0.1", "127.0.1.1"}:
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(1)
            s.connect((address, virtual_device.port))


def test_timeout_then_reconnect(device, virtual_device):
    with pytest.raises(DeviceTimeoutError):
        device.shell(["sleep", "30"], timeout_s=0.5)
    assert device.shell(["echo", "back"]).stdout == "back\n"


def test_dropped_connection_is_reported_and_reconnect_works(device, virtual_device):
    virtual_device.set_faults(close_after_commands=1)
    device.shell(["true"])
    with pytest.raises(DeviceUnreachableError):
        device.shell(["true"])
    assert device.shell(["echo", "again"]).stdout == "again\n"
    (virtual_device.root / "big.txt").write_bytes(b"y" * 500_000)
    virtual_device.faults = FaultPlan(close_after_bytes=100_000)
    with pytest.raises(DeviceUnreachableError):
        device.shell(["cat", f"{TMP}/big.txt"])
    retry_with_backoff(device.reconnect, attempts=3, initial_delay_s=0.05)
    assert device.shell(["echo", "ok"]).stdout == "ok\n"


def test_reply_delay_fault(device, virtual_device):
    virtual_device.set_faults(reply_delay_s=0.2)
    t0 = time.monotonic()
    assert device.shell(["echo", "slow"]).stdout == "slow\n"
    assert time.monotonic() - t0 >= 0.2


def test_retry_with_backoff_is_bounded():
    attempts = []

    def flaky():
        attempts.append(time.monotonic())
        raise DeviceUnreachableError("down")

    with pytest.raises(DeviceUnreachableError):
        retry_with_backoff(flaky, attempts=3, initial_delay_s=0.01, max_delay_s=0.02)
    assert len(attempts) == 3


def test_concurrent_commands_on_one_device(device):
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(device.shell(["echo", str(i)]).stdout))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(f"{i}\n" for i in range(8))


def _elf(machine: int) -> bytes:
    return b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HH", 2, machine) + b"\0" * 40


@pytest.mark.parametrize("machine,abi", [(183, "arm64-v8a"), (62, "x86_64"), (40, "armeabi-v7a"), (3, "x86")])
def test_elf_machine(tmp_path, machine, abi):
    path = tmp_path / "runner"
    path.write_bytes(_elf(machine))
    assert elf_machine(path) == abi


def test_elf_machine_rejects_non_elf(tmp_path):
    path = tmp_path / "runner"
    path.write_text("#!/bin/sh\n")
    with pytest.raises(DeviceError, match="not an ELF"):
        elf_machine(path)


def test_virtual_device_refuses_a_pushed_binary_it_cannot_run(device, tmp_path):
    # An ELF header with nothing behind it: the device's shell refuses it as a phone's does (126).
    path = tmp_path / "runner"
    path.write_bytes(_elf(62))
    device.push(path, f"{TMP}/real_runner", mode=0o755)
    r = device.shell([f"{TMP}/real_runner", "--model_path", "x.pte"], check=False)
    assert r.exit_status == 126
    assert f"{TMP}/real_runner: not executable: 64-bit ELF file" in r.stderr


def test_key_is_created_private(tmp_path):
    key = ensure_adb_key(tmp_path / "k" / "adbkey", create=True)
    assert key.stat().st_mode & 0o777 == 0o600
    assert Path(str(key) + ".pub").read_text().split()[0]


def test_exec_service_and_sync_list(virtual_device, adb_key):
    (virtual_device.root / "listed.txt").write_text("abc")
    # adb-shell's own device object: exercise the raw exec: and sync LIST services
    adb = make_tcp_adb("127.0.0.1", virtual_device.port, 10)
    assert adb.connect(rsa_keys=[load_signer(adb_key)], auth_timeout_s=10)
    try:
        assert adb.exec_out("echo raw; echo also-raw >&2") == "raw\nalso-raw\n"
        names = {entry.filename.decode(): entry.size for entry in adb.list(TMP)}
    finally:
        adb.close()
    assert names["listed.txt"] == 3 and "executor_runner" in names


@pytest.mark.parametrize("shell_protocol", ["v2", "legacy"])
def test_silent_command_longer_than_connect_timeout_succeeds(virtual_device, adb_key, shell_protocol):
    """Regression: a runner that prints nothing (a logcat-only build) for longer than the connect
    timeout must not fail with a socket timeout; only the command's own limit counts."""
    with connect(virtual_device.address, adb_key=adb_key, timeout_s=0.5, shell_protocol=shell_protocol) as dev:
        result = dev.shell(["sleep", "1.2"], timeout_s=10)
    assert result.exit_status == 0
