"""The real AOSP adb client against the virtual device, with an isolated adb server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from android_bench.device import AdbServerDevice, connect, list_server_devices
from android_bench.virtual import VirtualDevice
from tests.conftest import require_tool

pytestmark = pytest.mark.system
TMP = "/data/local/tmp"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def adb_server(tmp_path, monkeypatch):
    """An adb server of our own: HOME and ANDROID_ADB_SERVER_PORT point away from the user's."""
    adb = require_tool("adb")
    home = tmp_path / "adb-home"
    home.mkdir()
    port = _free_port()
    env = {**os.environ, "HOME": str(home), "ANDROID_ADB_SERVER_PORT": str(port)}
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))

    def run(*args, check=True, **kw):
        result = subprocess.run([adb, *args], env=env, capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL, **kw)
        if check and result.returncode != 0:
            raise AssertionError(f"adb {args} -> {result.returncode}: {result.stdout} {result.stderr}")
        return result

    run("start-server")
    try:
        yield run, home / ".android" / "adbkey"
    finally:
        run("kill-server", check=False)
        # If kill-server failed, stop the server we started by its pid (never by name).
        ss = shutil.which("ss")
        out = subprocess.run([ss, "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout if ss else ""
        for pid in {int(p) for p in re.findall(r"pid=(\d+)", out)}:
            os.kill(pid, signal.SIGTERM)


def test_real_adb_client_and_server_transport(adb_server, tmp_path):
    run, adb_key = adb_server
    with VirtualDevice(tmp_path / "root", authorized_keys=Path(str(adb_key) + ".pub")) as vd:
        assert "connected to" in run("connect", vd.address).stdout
        assert f"{vd.serial}\tdevice" in run("devices").stdout
        shell = run("-s", vd.serial, "shell", "echo out; echo err >&2; exit 7", check=False)
        assert (shell.returncode, shell.stdout, shell.stderr) == (7, "out\n", "err\n")
        assert "virtual" in run("-s", vd.serial, "shell", "getprop", "ro.product.model").stdout
        data = os.urandom(3_000_000)
        src = tmp_path / "f.bin"
        src.write_bytes(data)
        run("-s", vd.serial, "push", str(src), f"{TMP}/f.bin")
        assert (vd.root / "f.bin").read_bytes() == data
        run("-s", vd.serial, "pull", f"{TMP}/f.bin", str(tmp_path / "g.bin"))
        assert (tmp_path / "g.bin").read_bytes() == data
        failed = run("-s", vd.serial, "push", str(src), "/system/f.bin", check=False)
        assert failed.returncode != 0 and "Read-only file system" in failed.stderr + failed.stdout

        # The harness's adb-server transport reaches the same device through that real server.
        assert (vd.serial, "device") in list_server_devices()
        with connect(f"adb:{vd.serial}") as dev:
            assert isinstance(dev, AdbServerDevice) and dev.shell_protocol == "v2"
            r = dev.shell("echo via-server; echo e >&2; exit 4", check=False)
            assert (r.stdout, r.stderr, r.exit_status) == ("via-server\n", "e\n", 4)
            dev.push(src, f"{TMP}/h.bin")  # sha256-checked on the device
            dev.pull(f"{TMP}/h.bin", tmp_path / "h.bin")
            assert (tmp_path / "h.bin").read_bytes() == data
            assert dev.info().is_virtual
        run("disconnect", vd.address)


def test_real_adb_with_unknown_key_is_refused(adb_server, tmp_path):
    run, _ = adb_server
    other = tmp_path / "other_keys"
    other.write_text("")
    with VirtualDevice(tmp_path / "root", authorized_keys=other) as vd:
        run("connect", vd.address, check=False)
        state = run("devices").stdout
        assert f"{vd.serial}\tdevice" not in state
        assert run("-s", vd.serial, "shell", "echo", "x", check=False).returncode != 0
