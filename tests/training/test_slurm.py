"""A real single-node Slurm runs the unmodified Phase 1 array script; the selection table comes out.

The cluster (munged, slurmctld, slurmd) is started by scripts/slurm/local-cluster.sh in a temp folder
on free ports and stopped by pid, even when the test fails.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool
from training.models import PHASE1_ARCHS
from training.select import select_best

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "scripts" / "slurm" / "local-cluster.sh"
PHASE1_SCRIPT = REPO / "training" / "slurm" / "train.emotion_phase1.slurm"
pytestmark = [pytest.mark.system, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def slurm_cluster(tmp_path):
    for tool in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol"):
        require_tool(tool)
    state = tmp_path / "slurm"
    env = {**os.environ, "SLURM_CPUS": "2", "SLURMCTLD_PORT": str(_free_port()), "SLURMD_PORT": str(_free_port())}
    try:
        started = subprocess.run(["bash", str(CLUSTER), "start", str(state)], env=env, capture_output=True,
                                 text=True, timeout=60)
        assert started.returncode == 0, started.stdout + started.stderr
        yield state / "slurm.conf"
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(state)], env=env, capture_output=True, timeout=60)
        for name in ("slurmd", "slurmctld", "munged"):  # belt and braces: nothing may outlive the test
            pid_file = state / f"{name}.pid"
            if pid_file.is_file() and pid_file.read_text().strip().isdigit():
                try:
                    os.kill(int(pid_file.read_text().strip()), 9)
                except ProcessLookupError:
                    pass


def test_phase1_array_trains_all_five_and_selects(slurm_cluster, tiny_sample, tmp_path):
    out = tmp_path / "runs"
    env = {
        **os.environ, "SLURM_CONF": str(slurm_cluster), "DATA_DIR": str(tiny_sample["fer2013"]), "OUT_DIR": str(out),
        "PARTITION": "debug", "CPUS_PER_TASK": "1", "GPUS_PER_TASK": "0",
        "EMOBENCH": str(Path(sys.executable).with_name("emobench")), "PYTHONPATH": str(REPO),
        # Tiny settings: 1 epoch at 32 px on 12 images, no pretrained weights (no internet here).
        "EPOCHS": "1", "IMAGE_SIZE": "32", "LIMIT_TRAIN_IMAGES": "12", "WORKERS": "0", "PRETRAINED": "false",
        "EXTRA_ARGS": "--set limit_eval_images=12 --set tensorboard=false --batch-size 6",
    }
    submitted = subprocess.run(["bash", str(PHASE1_SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=60)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    assert job_id.isdigit(), submitted.stdout

    deadline = time.monotonic() + 170
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", job_id], env=env, capture_output=True, text=True).stdout
        if not queued.strip():
            break
        time.sleep(1)
    logs = sorted((out / "logs").glob(f"phase1-{job_id}_*.log"))
    log_text = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in logs)
    assert not queued.strip(), f"array job still queued/running after the deadline\n{log_text}"

    jobcomp = (slurm_cluster.parent / "jobcomp.txt").read_text()
    states = re.findall(r"JobState=(\w+).*?ExitCode=(\d+:\d+)", jobcomp)
    assert len(states) == 5 and all(s == ("COMPLETED", "0:0") for s in states), f"{jobcomp}\n{log_text}"
    assert len(logs) == 5  # one log per array task
    runs = sorted((out / "phase1").glob(f"slurm{job_id}-*"))
    assert sorted(r.name.split("-", 1)[1] for r in runs) == sorted(PHASE1_ARCHS)
    for run in runs:
        assert (run / "checkpoint.pt").is_file() and (run / "metrics.json").is_file()

    selection = select_best([out / "phase1"], metric="accuracy", out_dir=out / "phase1")
    assert selection.winner["arch"] in PHASE1_ARCHS and len(selection.rows) == 5
    assert f"Winner: **{selection.winner['arch']}**" in selection.markdown_path.read_text()
    assert selection.csv_path.read_text().count("\n") == 6 and selection.png_path.stat().st_size > 1000
