"""`emobench devices`, `emobench device info` and `emobench device serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from emobench import cli


def test_device_info_json_and_table(virtual_device, adb_key):
    runner = CliRunner()
    result = runner.invoke(cli, ["device", "info", virtual_device.address, "--adb-key", str(adb_key), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["is_virtual"] is True and data["abis"] and data["cpu_cores"] >= 1
    table = runner.invoke(cli, ["device", "info", virtual_device.address, "--adb-key", str(adb_key)])
    assert table.exit_code == 0 and "is_virtual" in table.output


def test_devices_lists_connect_targets(virtual_device, adb_key, monkeypatch):
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "1")  # no adb server there
    result = CliRunner().invoke(cli, ["devices", "--connect", virtual_device.address, "--adb-key", str(adb_key),
                                      "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["state"] == "device" and row["virtual"] and row["abi"] and row["android"] == "14"


def test_device_info_unreachable_is_one_line_error(adb_key):
    result = CliRunner().invoke(cli, ["device", "info", "127.0.0.1:1", "--adb-key", str(adb_key)])
    assert result.exit_code == 1 and "cannot reach 127.0.0.1:1" in result.output


def test_serve_prints_address_and_stops_on_ctrl_c(tmp_path, adb_key):
    from android_bench.device import connect

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "emobench", "device", "serve", "--no-auth",
                             "--root", str(tmp_path / "root")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("127.0.0.1:")
        with connect(address, adb_key=adb_key) as dev:
            assert dev.shell(["echo", "served"]).stdout == "served\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert "stopping" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
