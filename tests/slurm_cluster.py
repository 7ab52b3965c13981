"""A real single-node Slurm (munged, slurmctld, slurmd on localhost) for the tests of Slurm job scripts.

``local_slurm(state_dir)`` starts one with scripts/slurm/local-cluster.sh on free ports and stops every
daemon by its pid, even when the test fails. Helpers read the jobcomp file and wait for jobs.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "scripts" / "slurm" / "local-cluster.sh"
SLURM_TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_slurm(state: Path, *, cpus: int = 2) -> Iterator[Path]:
    """A started cluster whose state lives in ``state``; yields its slurm.conf (jobcomp.txt lies next to it)."""
    for tool in SLURM_TOOLS:
        require_tool(tool)
    env = {**os.environ, "SLURM_CPUS": str(cpus), "SLURMCTLD_PORT": str(free_port()),
           "SLURMD_PORT": str(free_port())}
    try:
        started = subprocess.run(["bash", str(CLUSTER), "start", str(state)], env=env, capture_output=True,
                                 text=True, timeout=60)
        assert started.returncode == 0, started.stdout + started.stderr
        yield state / "slurm.conf"
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(state)], env=env, capture_output=True, timeout=60)
        for name in ("slurmd", "slurmctld", "munged"):  # belt and braces: nothing may outlive the tests
            pid_file = state / f"{name}.pid"
            if pid_file.is_file() and pid_file.read_text().strip().isdigit():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_file.read_text().strip()), 9)


def jobcomp(conf: Path) -> str:
    """The jobcomp file: one line per finished job or array task."""
    path = conf.parent / "jobcomp.txt"
    return path.read_text() if path.is_file() else ""


def job_states(conf: Path, since: int = 0) -> dict[str, tuple[str, str]]:
    """(JobState, ExitCode) by job id from the jobcomp file, from character ``since`` on."""
    return {m.group(1): (m.group(2), m.group(3)) for m in
            re.finditer(r"JobId=(\d+) .*?JobState=(\w+).*?ExitCode=(\d+:\d+)", jobcomp(conf)[since:])}


def queued(job_ids: list[str], env: dict[str, str]) -> str:
    """What squeue still shows of these jobs (empty when all have left the queue)."""
    shown = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids)], env=env, capture_output=True, text=True)
    return shown.stdout.strip()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str,
               details: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{details()}")
        time.sleep(0.5)
