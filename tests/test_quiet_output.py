"""Quiet output: the known third-party warnings and native log lines stay off the terminal; -v shows them.

A real `emobench latency` run (its own process, so the terminal is real file descriptors) over a tiny
export loads every artifact: torch.jit.load (FutureWarning), executorch.runtime (torchao's
KernelPreference log record, ExperimentalWarning) and XNNPACK's threadpool (cpuinfo_utils.cpp lines).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from emobench_common import quiet
from tests.device_results.tiny_export import build_tiny_export

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("cpuinfo_utils.cpp", "KernelPreference", "`torch.jit.load` is deprecated")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, tiny_sample) -> Path:
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny_export", tiny_sample)


def _user_env() -> dict[str, str]:
    # the warning filters a user's shell has: Python's defaults (FutureWarning shown, DeprecationWarning
    # only from __main__)
    return {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}


def _latency(manifest: Path, *verbose: str) -> subprocess.CompletedProcess[str]:
    env = _user_env()
    return subprocess.run([sys.executable, "-m", "emobench", *verbose, "latency", str(manifest), "--runs", "1",
                           "--warmup", "0", "--threads", "1", "--target", "host-cpu"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_latency_run_prints_no_third_party_noise_and_v_shows_it(manifest):
    result = _latency(manifest)
    assert result.returncode == 0, result.stderr
    assert "executorch-fp32" in result.stdout and "torchscript-fp32" in result.stdout  # it did load them
    for noise in NOISE:
        assert noise not in result.stderr, f"{noise!r} reached stderr:\n{result.stderr}"
    verbose = _latency(manifest, "-v")
    assert verbose.returncode == 0, verbose.stderr
    for noise in NOISE:
        assert noise in verbose.stderr, f"-v should show {noise!r}:\n{verbose.stderr[-3000:]}"


@pytest.mark.slow
def test_export_prints_no_third_party_noise(tmp_path, tiny_sample):
    """`emobench export` (torch.export, torchao's quantizer, XNNPACK lowering, TorchScript tracing, verification)."""
    from tests.export.conftest import make_tiny_checkpoint

    checkpoint = make_tiny_checkpoint(tmp_path / "checkpoint.pt", image_size=32)
    result = subprocess.run(
        [sys.executable, "-m", "emobench", "export", str(checkpoint), "--out", str(tmp_path / "export"),
         "--formats", "executorch,torchscript", "--precisions", "fp32,int8", "--int8-mode", "dynamic",
         "--eval-data", str(tiny_sample["rafdb"]), "--eval-images", "4"],
        cwd=ROOT, env=_user_env(), capture_output=True, text=True, timeout=600,
        check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "export" / "manifest.json").is_file()
    for noise in (*NOISE, "Warning:", "W1"):  # no Python warning line, no torch log line (W<date> ...)
        assert noise not in result.stderr, f"{noise!r} reached stderr:\n{result.stderr}"


def test_native_filter_keeps_every_other_line(capfd):
    quiet.configure(0)
    with quiet.native_log_filter():
        os.write(2, b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n")
        os.write(2, b"[method.cpp:12] a real runtime error\n")
        os.write(2, b"[threadpool.cpp:66] Resetting threadpool to 2 threads.\n")
        os.write(2, b"a line without a newline at the end")
    err = capfd.readouterr().err
    assert err == "[method.cpp:12] a real runtime error\na line without a newline at the end"


def test_verbose_turns_every_filter_off(capfd):
    quiet.configure(1)
    try:
        with quiet.native_log_filter():
            os.write(2, b"[cpuinfo_utils.cpp:71] Reading file x\n")
        with warnings.catch_warnings(record=True) as seen, quiet.known_warnings():
            warnings.simplefilter("always")
            warnings.warn("`torch.jit.load` is deprecated. Please switch to `torch.export`.", FutureWarning,
                          stacklevel=1)
        logger = logging.getLogger("torch.utils._pytree")
        record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "<enum 'KernelPreference'> is an Enum "
                                   "subclass and is now natively supported by torch.compile", (), None)
        assert all(f.filter(record) for f in logger.filters)
    finally:
        quiet.configure(0)
    assert "cpuinfo_utils.cpp" in capfd.readouterr().err and len(seen) == 1
    assert not all(f.filter(record) for f in logger.filters)  # quiet again: the record is dropped
