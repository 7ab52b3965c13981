"""emobench's native executor_runner: built once per session, run directly on a model emobench did not export."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import IN_CI

_PREFIX = re.compile(r"^I \d\d:\d\d:\d\d\.\d{6} executorch:executor_runner\.cpp:\d+\] ")


def _run(binary: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_runner_matches_eager_and_logs_like_executorch(native_runner, foreign_pte, tmp_path):
    proc = _run(native_runner.binary, f"--model_path={foreign_pte['pte']}", "--inputs", str(foreign_pte["input"]),
                "--output_file", "out", "--num_executions=3", "--print_output=none", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    iterations = [ln for ln in lines if "Iteration" in ln]
    assert len(iterations) == 3
    assert all(_PREFIX.match(ln) for ln in iterations), iterations
    assert re.search(r"\] Iteration 3 of 3: \d+\.\d+ ms$", iterations[-1])
    assert any(re.search(r"\] Model loaded in \d+\.\d+ ms\.$", ln) for ln in lines)
    assert any(re.search(r"\] Model executed successfully 3 time\(s\) in \d+\.\d+ ms\.$", ln) for ln in lines)
    got = np.frombuffer((tmp_path / "out-0.bin").read_bytes(), dtype=np.float32)
    expected = np.load(foreign_pte["expected"]).reshape(-1)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)
    assert proc.stdout == ""  # --print_output=none


def test_print_output_summary_and_all(native_runner, foreign_pte, tmp_path):
    expected = np.load(foreign_pte["expected"]).reshape(-1)
    summary = _run(native_runner.binary, "--model_path", str(foreign_pte["pte"]), "--inputs",
                   str(foreign_pte["input"]), cwd=tmp_path)
    assert summary.returncode == 0
    match = re.fullmatch(r"OutputX 0: tensor\(sizes=\[1, 5\], \[(.*)\]\)\n", summary.stdout)
    assert match, summary.stdout
    np.testing.assert_allclose([float(v) for v in match.group(1).split(",")], expected, atol=1e-3)
    every = _run(native_runner.binary, "--model_path", str(foreign_pte["pte"]), "--inputs",
                 str(foreign_pte["input"]), "--print_output", "all", cwd=tmp_path)
    values = re.findall(r"^Output\[0\]\[(\d)\]: \(float\) (\S+)$", every.stdout, re.M)
    assert [int(i) for i, _ in values] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([float(v) for _, v in values], expected, atol=1e-3)


def test_bad_flags_and_bad_files_exit_like_executor_runner(native_runner, foreign_pte, tmp_path):
    unknown = _run(native_runner.binary, "--no_such_flag=1", cwd=tmp_path)
    assert unknown.returncode == 1 and "unknown command line flag 'no_such_flag'" in unknown.stderr
    bad_int = _run(native_runner.binary, "--num_executions=two", cwd=tmp_path)
    assert bad_int.returncode == 1 and "illegal value 'two'" in bad_int.stderr
    bad_mode = _run(native_runner.binary, "--model_path", str(foreign_pte["pte"]), "--print_output=some",
                    cwd=tmp_path)
    assert bad_mode.returncode == 1 and "Unknown --print_output mode 'some'" in bad_mode.stderr
    missing = _run(native_runner.binary, "--model_path", str(tmp_path / "absent.pte"), cwd=tmp_path)
    assert missing.returncode == -6  # ET_CHECK_MSG aborts (a shell reports 134)
    assert "FileDataLoader::from() failed" in missing.stderr
    not_pte = tmp_path / "junk.pte"
    not_pte.write_bytes(b"definitely not a flatbuffer" * 10)
    junk = _run(native_runner.binary, "--model_path", str(not_pte), cwd=tmp_path)
    assert junk.returncode == 1 and "Failed to parse model file" in junk.stderr
    short = tmp_path / "short.bin"
    short.write_bytes(b"\0" * 12)
    wrong_size = _run(native_runner.binary, "--model_path", str(foreign_pte["pte"]), "--inputs", str(short),
                      cwd=tmp_path)
    assert wrong_size.returncode == -6
    assert f"input size (12) and tensor size ({3 * 20 * 20 * 4}) mismatch!" in wrong_size.stderr


def test_etdump_is_written_only_when_asked_and_inspector_reads_it(native_runner, foreign_pte, tmp_path):
    assert native_runner.event_tracer
    plain = _run(native_runner.binary, "--model_path", str(foreign_pte["pte"]), "--print_output=none", cwd=tmp_path)
    assert plain.returncode == 0 and not (tmp_path / "model.etdump").exists()
    dump = tmp_path / "net.etdump"
    traced = _run(native_runner.binary, "--model_path", str(foreign_pte["pte"]), "--num_executions=2",
                  f"--etdump_path={dump}", "--print_output=none", cwd=tmp_path)
    assert traced.returncode == 0 and dump.stat().st_size > 0
    from executorch.devtools import Inspector

    frame = Inspector(etdump_path=str(dump)).to_dataframe()
    execute = frame[frame["event_block_name"] == "Execute"]
    names = set(execute["event_name"])
    assert any(n.startswith("Convolution") for n in names), names
    assert "Method::execute" in names
    assert all(len(raw) == 2 for raw in execute["raw"])  # one timing per execution


def test_second_build_is_cached_and_instant(native_runner):
    from android_bench.native import build_runner

    start = time.perf_counter()
    again = build_runner()
    assert again.cached and again.binary == native_runner.binary and again.sha256 == native_runner.sha256
    assert time.perf_counter() - start < 1.0


def test_runner_build_cli_prints_the_binary_last(native_runner):
    from click.testing import CliRunner

    from emobench import cli

    result = CliRunner().invoke(cli, ["runner", "build"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(native_runner.binary)


def test_missing_cmake_is_one_error_naming_the_package(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from emobench import cli

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: neither cmake nor a compiler
    result = CliRunner().invoke(cli, ["runner", "build", "--out", str(tmp_path / "cache")])
    assert result.exit_code == 1
    assert "cmake not found" in result.output and "apt-get install cmake" in result.output
    assert "Traceback" not in result.output


def test_missing_compiler_names_gpp(tmp_path, monkeypatch):
    from android_bench.native import RunnerBuildError, build_runner

    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("cmake missing under CI") if IN_CI else pytest.skip("cmake is not installed")
    (tmp_path / "cmake").symlink_to(cmake)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(RunnerBuildError) as err:
        build_runner(tmp_path / "cache")
    assert "C++ compiler not found" in err.value.message and "apt-get install g++" in (err.value.hint or "")


def _find_ndk() -> Path | None:
    for var in ("ANDROID_NDK", "ANDROID_NDK_HOME", "ANDROID_NDK_ROOT"):
        value = os.environ.get(var)
        if value and (Path(value) / "build" / "cmake" / "android.toolchain.cmake").is_file():
            return Path(value)
    return None


def test_android_cross_build_with_the_ndk(tmp_path):
    ndk = _find_ndk()
    prefix = os.environ.get("EXECUTORCH_ANDROID_PREFIX")
    if ndk is None or not prefix:
        pytest.skip("no Android NDK (ANDROID_NDK) and ExecuTorch Android install (EXECUTORCH_ANDROID_PREFIX) "
                    "here; tests never download one")
    from android_bench.native import build_runner

    built = build_runner(tmp_path / "cache", android_ndk=ndk, executorch_prefix=prefix)
    header = built.binary.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2 and int.from_bytes(header[18:20], "little") == 183  # AArch64


def test_android_build_refuses_a_folder_that_is_not_an_ndk(tmp_path):
    if shutil.which("cmake") is None:
        pytest.fail("cmake missing under CI") if IN_CI else pytest.skip("cmake is not installed")
    from android_bench.native import RunnerBuildError, build_runner

    with pytest.raises(RunnerBuildError, match="is not an Android NDK"):
        build_runner(tmp_path / "cache", android_ndk=tmp_path, executorch_prefix=tmp_path)
    with pytest.raises(RunnerBuildError, match="go together"):
        build_runner(tmp_path / "cache", android_ndk=tmp_path)
