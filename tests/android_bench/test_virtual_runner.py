"""The virtual device's executor_runner: flags, log formats (stderr / logcat / none), files, exit codes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from android_bench.device import DeviceTimeoutError, connect
from android_bench.virtual import FaultPlan, VirtualDevice

TMP = "/data/local/tmp"
POSIX_LINE = re.compile(r"^[IEFWD] \d\d:\d\d:\d\d\.\d{6} executorch:executor_runner\.cpp:\d+\] (.*)$")


def _run(dev, *extra, check=False):
    return dev.shell([f"{TMP}/executor_runner", f"--model_path={TMP}/tiny.pte", *extra], check=check)


@pytest.fixture
def loaded(device, tiny_pte, tmp_path):
    device.push(tiny_pte, f"{TMP}/tiny.pte")
    x = np.arange(8, dtype=np.float32).reshape(1, 8) / 8
    raw = tmp_path / "input.raw"
    raw.write_bytes(x.tobytes())
    device.push(raw, f"{TMP}/input.raw")
    model = torch.nn.Linear(8, 3)
    model.load_state_dict({k.removeprefix("fc."): v for k, v in
                           torch.load(tiny_pte.with_suffix(".pt"), weights_only=True).items()})
    expected = torch.relu(model(torch.from_numpy(x))).detach().numpy()
    return device, expected


def test_stderr_logging_iterations_outputs_and_files(loaded, tmp_path):
    dev, expected = loaded
    r = _run(dev, f"--inputs={TMP}/input.raw", "--num_executions", "3", f"--output_file={TMP}/out",
             "--cpu_threads=1", "--print_output=none")
    assert r.exit_status == 0, r.stderr
    lines = r.stderr.splitlines()
    messages = [POSIX_LINE.match(ln).group(1) for ln in lines]  # every line has the posix prefix
    iterations = [m for m in messages if m.startswith("Iteration")]
    assert [re.match(r"Iteration (\d) of 3: (\d+\.\d{6}) ms", m).group(1) for m in iterations] == ["1", "2", "3"]
    done = [m for m in messages if m.startswith("Model executed successfully")]
    assert re.fullmatch(r"Model executed successfully 3 time\(s\) in \d+\.\d{6} ms\.", done[0])
    assert f"Writing output to file: {TMP}/out-0.bin" in messages
    dev.pull(f"{TMP}/out-0.bin", tmp_path / "out-0.bin")
    got = np.frombuffer((tmp_path / "out-0.bin").read_bytes(), dtype=np.float32).reshape(1, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert r.stdout == ""


def test_print_output_modes(loaded):
    dev, expected = loaded
    summary = _run(dev, f"--inputs={TMP}/input.raw")
    assert summary.stdout.startswith("OutputX 0: tensor(sizes=[1, 3], [")
    full = _run(dev, f"--inputs={TMP}/input.raw", "--print_output=all")
    values = [float(v) for v in re.findall(r"Output\[0\]\[\d\]: \(float\) (-?\d+\.\d+)", full.stdout)]
    np.testing.assert_allclose(values, expected.reshape(-1), atol=1e-5)


def test_logcat_only_logging(tiny_pte, tmp_path, adb_key):
    with VirtualDevice(tmp_path / "r", authorized_keys=adb_key.with_name("adbkey.pub"),
                       runner_logging="logcat") as vd, connect(vd.address, adb_key=adb_key) as dev:
        dev.push(tiny_pte, f"{TMP}/tiny.pte")
        dev.shell(["logcat", "-c"])
        r = _run(dev, "--num_executions=2", check=True)
        assert r.stderr == "" and "OutputX 0" in r.stdout
        log = dev.shell(["logcat", "-d", "-s", "ExecuTorch", "-v", "brief"]).stdout
        lines = log.splitlines()
        assert any(re.fullmatch(r"I/ExecuTorch\(\s*\d+\): Iteration 2 of 2: \d+\.\d{6} ms", ln) for ln in lines)
        assert all("executor_runner.cpp" not in ln for ln in lines)  # no posix prefix in logcat
        threadtime = dev.shell(["logcat", "-d", "-v", "threadtime", "ExecuTorch:I", "*:S"]).stdout
        assert re.search(r"^\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\s+\d+\s+\d+ I ExecuTorch: Model executed successfully "
                         r"2 time\(s\)", threadtime, re.MULTILINE)
        dev.shell(["logcat", "-c"])
        assert dev.shell(["logcat", "-d"]).stdout == ""


def test_no_logging_mode_prints_no_timings(tiny_pte, tmp_path, adb_key):
    with VirtualDevice(tmp_path / "r", authorized_keys=adb_key.with_name("adbkey.pub"),
                       runner_logging="none") as vd, connect(vd.address, adb_key=adb_key) as dev:
        dev.push(tiny_pte, f"{TMP}/tiny.pte")
        r = _run(dev, "--num_executions=2", check=True)
        assert r.stderr == "" and "Iteration" not in r.stdout
        assert "Iteration" not in dev.shell(["logcat", "-d"]).stdout


def test_exit_codes_match_the_real_runner(loaded, tmp_path):
    dev, _ = loaded
    assert _run(dev, "--bogus_flag=1").exit_status == 1
    extra = _run(dev, "stray")
    assert extra.exit_status == 1 and "Extra commandline args: stray" in extra.stderr
    missing = dev.shell([f"{TMP}/executor_runner", f"--model_path={TMP}/none.pte"], check=False)
    assert missing.exit_status == 134 and "FileDataLoader::from() failed: 0x22" in missing.stderr
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"not a program" * 10)
    dev.push(bad, f"{TMP}/bad.pte")
    parse = dev.shell([f"{TMP}/executor_runner", f"--model_path={TMP}/bad.pte"], check=False)
    assert parse.exit_status == 1 and f"Failed to parse model file {TMP}/bad.pte" in parse.stderr
    short = tmp_path / "short.raw"
    short.write_bytes(b"\0" * 12)
    dev.push(short, f"{TMP}/short.raw")
    size = _run(dev, f"--inputs={TMP}/short.raw")
    assert size.exit_status == 134 and "input size (12) and tensor size (32) mismatch!" in size.stderr
    noinput = _run(dev, f"--inputs={TMP}/absent.raw")
    assert noinput.exit_status == 134 and f"Failed to open input file: {TMP}/absent.raw" in noinput.stderr


def test_runner_crash_and_hang_faults(loaded, virtual_device):
    dev, _ = loaded
    virtual_device.faults = FaultPlan(runner_fault="crash")
    assert _run(dev).exit_status == 139
    virtual_device.faults = FaultPlan(runner_fault="hang")
    with pytest.raises(DeviceTimeoutError):
        dev.shell([f"{TMP}/executor_runner", f"--model_path={TMP}/tiny.pte"], timeout_s=2)
    virtual_device.faults = FaultPlan()
    assert _run(dev, "--print_output=none").exit_status == 0


def test_taskset_and_path_invocation(loaded):
    dev, _ = loaded
    r = dev.shell(f"cd {TMP} && taskset f0 ./executor_runner --model_path tiny.pte --print_output=none")
    assert "Model executed successfully 1 time(s)" in r.stderr
