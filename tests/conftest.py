"""Shared fixtures: tiny generated data, and the rule for tests that need a system tool.

On a laptop a test whose system tool (adb, slurmctld, chromium...) is missing is skipped with the
reason; under CI (CI=true) it fails, so a missing install step can never pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.reliability.tally import TALLY
from training.sample import SampleConfig, generate_sample

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# A suite started as a background job of a non-interactive shell (`make test &`, `nohup ... &`) inherits
# SIGINT ignored, and so would every process it starts: the tests that press Ctrl-C on a server or an
# ablation (test_device_cli, test_faults) then wait for a process that never hears it. Their children
# must see the default disposition, as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# A small sample: 7 classes x (24 + 8) RAF-DB, 7 x (12 + 4 + 4) FER, 7 x 6 custom images.
TINY_SAMPLE = SampleConfig(
    seed=0, rafdb_train_per_class=24, rafdb_test_per_class=8, fer_train_per_class=12,
    fer_val_per_class=4, fer_test_per_class=4, custom_per_class=6,
)


def require_tool(*names: str) -> str:
    """Return the path of the first tool found; skip (or fail under CI) when none is installed."""
    for name in names:
        path = shutil.which(name) or next(
            (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None
        )
        if path:
            return path
    reason = f"system tool {' or '.join(names)} is not installed"
    if IN_CI:
        pytest.fail(f"{reason}; .ci/run must install it")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory) -> dict[str, Path]:
    """The sample dataset at TINY_SAMPLE size, generated once per test session."""
    return generate_sample(tmp_path_factory.mktemp("sample"), TINY_SAMPLE)


@pytest.fixture(scope="session", autouse=True)
def _no_real_adb_keys(tmp_path_factory):
    """Point adb's default key folder (``ANDROID_USER_HOME``) at a temporary one for the whole session,
    so no test, and no subprocess a test starts, can create or read the user's ~/.android/adbkey."""
    previous = os.environ.get("ANDROID_USER_HOME")
    os.environ["ANDROID_USER_HOME"] = str(tmp_path_factory.mktemp("android-user-home"))
    yield
    if previous is None:
        os.environ.pop("ANDROID_USER_HOME", None)
    else:
        os.environ["ANDROID_USER_HOME"] = previous


@pytest.fixture(scope="session", autouse=True)
def _runner_cache(tmp_path_factory):
    """One native-runner build cache per test session (never the user's ~/.cache): the first test that
    needs emobench's native executor_runner builds it, every later one reuses it."""
    previous = os.environ.get("EMOBENCH_CACHE_DIR")
    os.environ["EMOBENCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("emobench-cache"))
    yield
    if previous is None:
        os.environ.pop("EMOBENCH_CACHE_DIR", None)
    else:
        os.environ["EMOBENCH_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def native_runner(_runner_cache):
    """emobench's native executor_runner, built once per session (skips, or fails under CI, without cmake/g++)."""
    require_tool("cmake")
    require_tool("c++", "g++", "clang++")
    from android_bench.native import build_runner

    return build_runner()


# The reliability suite's per-category counts (tests/reliability/tally.py). Under pytest-xdist the tests run
# in worker processes: each hands its counts to the controller when it finishes, and the controller, which
# prints the summary, adds them up.
def pytest_sessionfinish(session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["reliability_tally"] = TALLY.to_dict()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    counts = getattr(node, "workeroutput", {}).get("reliability_tally")
    if counts:
        TALLY.merge(counts)


def pytest_terminal_summary(terminalreporter) -> None:
    lines = TALLY.lines()
    if lines:
        terminalreporter.section("reliability")
        for line in lines:
            terminalreporter.write_line(line)
