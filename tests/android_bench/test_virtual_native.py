"""The virtual device runs real executables: emobench's native runner under the real adb client and the harness."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from android_bench.device import DeviceTimeoutError
from tests.conftest import require_tool

TMP = "/data/local/tmp"
_ITERATION = re.compile(r"^I \d\d:\d\d:\d\d\.\d{6} executorch:executor_runner\.cpp:\d+\] Iteration 3 of 3: "
                        r"\d+\.\d+ ms$", re.M)

_PROBE_SOURCE = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
// probe: prints its cwd and args on stdout, "err" on stderr; "sleep" sleeps; "write P" writes P; "exit N".
int main(int argc, char** argv) {
  char cwd[4096];
  std::printf("cwd=%s\n", getcwd(cwd, sizeof cwd) ? cwd : "?");
  for (int i = 1; i < argc; ++i) std::printf("arg=%s\n", argv[i]);
  std::fflush(stdout);
  std::fprintf(stderr, "err\n");
  if (argc > 1 && !std::strcmp(argv[1], "sleep")) { std::printf("sleeping\n"); std::fflush(stdout); sleep(600); }
  if (argc > 2 && !std::strcmp(argv[1], "write")) {
    FILE* f = std::fopen(argv[2], "w");
    if (!f) { std::perror("fopen"); return 3; }
    std::fputs("x", f); std::fclose(f);
  }
  if (argc > 2 && !std::strcmp(argv[1], "exit")) return std::atoi(argv[2]);
  return 0;
}
"""


@pytest.fixture(scope="session")
def probe(tmp_path_factory, native_runner) -> Path:
    """A tiny host executable compiled once per session (native_runner already required the compiler)."""
    folder = tmp_path_factory.mktemp("probe")
    (folder / "probe.cpp").write_text(_PROBE_SOURCE)
    subprocess.run([require_tool("c++", "g++"), "-O0", "-o", str(folder / "probe"), str(folder / "probe.cpp")],
                   check=True, timeout=120)
    return folder / "probe"


def _push_exec(device, local: Path, remote: str) -> None:
    device.push(local, remote, mode=0o755)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["bwrap", "path-mapping"])
def confinement(request, monkeypatch):
    """Both ways a host process is confined: bubblewrap where installed, else argument path mapping."""
    if request.param == "bwrap":
        require_tool("bwrap")
        monkeypatch.delenv("EMOBENCH_NO_BWRAP", raising=False)
    else:
        monkeypatch.setenv("EMOBENCH_NO_BWRAP", "1")
    return request.param


def test_real_adb_runs_the_native_runner_end_to_end(native_runner, foreign_pte, tmp_path):
    """`runner build`, `adb push` runner + .pte + input to `emobench device serve`, `adb shell` runs it, pull."""
    adb = require_tool("adb")
    home = tmp_path / "home"
    home.mkdir()
    port = _free_port()
    env = {**os.environ, "HOME": str(home), "ANDROID_ADB_SERVER_PORT": str(port), "ANDROID_USER_HOME": ""}
    env.pop("ANDROID_USER_HOME")

    def adb_run(*args, check=True):
        result = subprocess.run([adb, *args], env=env, capture_output=True, text=True, timeout=120,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"adb {args} -> {result.returncode}: {result.stdout} {result.stderr}")
        return result

    built = subprocess.run([sys.executable, "-m", "emobench", "runner", "build"], capture_output=True, text=True,
                           timeout=600, check=True)
    binary = Path(built.stdout.strip().splitlines()[-1])
    assert binary == native_runner.binary and binary.is_file()
    adb_run("start-server")
    server = None
    try:
        pub = home / ".android" / "adbkey.pub"
        assert pub.is_file()
        server = subprocess.Popen([sys.executable, "-m", "emobench", "device", "serve", "--root", str(tmp_path / "dev"),
                                   "--authorized-keys", str(pub)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        address = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not re.fullmatch(r"127\.0\.0\.1:\d+", address):
            address = (server.stdout.readline() or "").strip()  # type: ignore[union-attr]
        assert re.fullmatch(r"127\.0\.0\.1:\d+", address), address
        adb_run("connect", address)
        serial = address
        adb_run("-s", serial, "push", str(binary), f"{TMP}/executor_runner")
        adb_run("-s", serial, "push", str(foreign_pte["pte"]), f"{TMP}/net.pte")
        adb_run("-s", serial, "push", str(foreign_pte["input"]), f"{TMP}/input.bin")
        adb_run("-s", serial, "shell", "chmod", "755", f"{TMP}/executor_runner")
        shell = adb_run("-s", serial, "shell", f"cd {TMP} && ./executor_runner --model_path {TMP}/net.pte "
                        f"--inputs {TMP}/input.bin --output_file {TMP}/out --num_executions 3 --print_output none",
                        check=False)
        assert shell.returncode == 0, shell.stdout + shell.stderr
        assert _ITERATION.search(shell.stderr), shell.stderr
        # The legacy shell (adb shell -x: no shell v2) streams the same process, stderr merged into stdout.
        legacy = adb_run("-s", serial, "shell", "-x", f"{TMP}/executor_runner --model_path {TMP}/net.pte "
                         f"--inputs {TMP}/input.bin --num_executions 3 --print_output none", check=False)
        assert _ITERATION.search(legacy.stdout.replace("\r\n", "\n")), legacy.stdout
        adb_run("-s", serial, "pull", f"{TMP}/out-0.bin", str(tmp_path / "out-0.bin"))
        got = np.fromfile(tmp_path / "out-0.bin", dtype="<f4")
        np.testing.assert_allclose(got, np.load(foreign_pte["expected"]).reshape(-1), atol=1e-3, rtol=0)
        adb_run("disconnect", address, check=False)
    finally:
        adb_run("kill-server", check=False)
        if server is not None:
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def test_streams_status_and_cwd_through_the_harness(probe, device, virtual_device, confinement):
    _push_exec(device, probe, f"{TMP}/bin/probe")
    result = device.shell(f"cd {TMP}/bin && ./probe exit 5 {TMP}/bin/x,{TMP}/y", check=False)
    assert result.exit_status == 5
    assert result.stderr == "err\n"
    lines = result.stdout.splitlines()
    if confinement == "bwrap":  # the process sees device paths
        assert lines[0] == f"cwd={TMP}/bin"
        assert lines[-1] == f"arg={TMP}/bin/x,{TMP}/y"
    else:  # paths mapped into the sandbox folder on the host
        root = os.path.realpath(virtual_device.root)
        assert os.path.realpath(lines[0].removeprefix("cwd=")) == os.path.join(root, "bin")
        assert lines[-1] == f"arg={virtual_device.root}/bin/x,{virtual_device.root}/y"


def test_a_device_served_from_a_relative_folder_runs_the_native_runner(native_runner, foreign_pte, adb_key,
                                                                       confinement, tmp_path, monkeypatch):
    """`emobench demo` serves its device from demo_out/...: a relative sandbox must work in both confinements."""
    from android_bench.device import connect
    from android_bench.virtual import VirtualDevice

    monkeypatch.chdir(tmp_path)
    with VirtualDevice(Path("demo_out") / "virtual-device", authorized_keys=Path(f"{adb_key}.pub")) as vd, \
            connect(vd.address, adb_key=adb_key) as dev:
        dev.push(native_runner.binary, f"{TMP}/executor_runner", mode=0o755)
        dev.push(foreign_pte["pte"], f"{TMP}/net.pte")
        run = dev.shell(f"cd {TMP} && ./executor_runner --model_path net.pte --num_executions 3 --print_output none",
                        check=False)
    assert run.exit_status == 0, run.stderr
    assert _ITERATION.search(run.stderr), run.stderr


def test_no_path_outside_the_sandbox_is_reachable(probe, device, virtual_device, confinement, tmp_path):
    _push_exec(device, probe, f"{TMP}/probe")
    outside = tmp_path / "outside.txt"
    result = device.shell(f"{TMP}/probe write {outside}", check=False)
    assert result.exit_status != 0
    assert not outside.exists()
    escape = device.shell(f"cd {TMP} && ./probe write ../../../{outside.name}", check=False)
    assert escape.exit_status != 0
    if confinement == "path-mapping":
        assert "only paths under /data/local/tmp" in escape.stderr
    inside = device.shell(f"cd {TMP} && ./probe write {TMP}/inside.txt", check=False)
    assert inside.exit_status == 0 and (virtual_device.root / "inside.txt").read_text() == "x"


def test_a_foreign_machine_elf_is_refused_like_a_phone(device, virtual_device, tmp_path):
    import platform

    machine = 62 if platform.machine() in ("aarch64", "arm64") else 183  # x86-64 on arm, arm64 elsewhere
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4], header[5], header[6] = 2, 1, 1
    header[16:18] = (2).to_bytes(2, "little")
    header[18:20] = machine.to_bytes(2, "little")
    fake = tmp_path / "arm_runner"
    fake.write_bytes(bytes(header) + b"\0" * 256)
    device.push(fake, f"{TMP}/arm_runner", mode=0o755)
    result = device.shell(f"{TMP}/arm_runner --model_path x.pte", check=False)
    assert result.exit_status == 126
    assert f"{TMP}/arm_runner: not executable: 64-bit ELF file" in result.stderr


def _processes_running(path_fragment: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if path_fragment in cmdline and "pytest" not in cmdline:
                found.append(int(entry.name))
    return found


def test_a_hung_process_is_killed_when_the_command_times_out(probe, device, virtual_device, confinement):
    name = f"probe_{confinement.replace('-', '_')}"
    _push_exec(device, probe, f"{TMP}/{name}")
    started = time.monotonic()
    with pytest.raises(DeviceTimeoutError):
        device.shell(f"{TMP}/{name} sleep", timeout_s=1.5)
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 15
    while _processes_running(f"{name} sleep") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_running(f"{name} sleep") == []


def test_the_native_runner_reports_its_own_statuses_on_the_device(native_runner, foreign_pte, device):
    device.push(native_runner.binary, f"{TMP}/executor_runner", mode=0o755)
    device.push(foreign_pte["pte"], f"{TMP}/net.pte")
    bad_flag = device.shell(f"{TMP}/executor_runner --bogus", check=False)
    assert bad_flag.exit_status == 1 and "unknown command line flag 'bogus'" in bad_flag.stderr
    missing = device.shell(f"{TMP}/executor_runner --model_path {TMP}/absent.pte", check=False)
    assert missing.exit_status == 134 and "FileDataLoader::from() failed" in missing.stderr
    pinned = device.shell(f"taskset 1 {TMP}/executor_runner --model_path {TMP}/net.pte --print_output none",
                          check=False)
    assert pinned.exit_status == 0
    assert "Resetting threadpool with num threads = 1" in pinned.stderr  # -1 = the cores taskset allowed
