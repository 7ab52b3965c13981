"""A real single-node Slurm runs the unmodified job scripts (environment variables only).

- the Phase 1 array script trains all five architectures and the selection table comes out;
- the Phase 2 script, sent Slurm's warning signal, checkpoints, requeues itself and resumes;
- the QAT script does the same for `emobench train qat`, and its weights equal an uninterrupted QAT run's.

One cluster (munged, slurmctld, slurmd) serves the module: scripts/slurm/local-cluster.sh starts it in a
temp folder on free ports and it is stopped by pid, even when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.slurm_cluster import jobcomp, local_slurm, wait_until
from tests.training._helpers import tiny_config
from training.checkpoint import load_checkpoint, load_checkpoint_dict
from training.models import PHASE1_ARCHS
from training.select import select_best
from training.train import train

REPO = Path(__file__).resolve().parents[2]
PHASE1_SCRIPT = REPO / "training" / "slurm" / "train.emotion_phase1.slurm"
PHASE2_SCRIPT = REPO / "training" / "slurm" / "train.emotion_phase2.slurm"
QAT_SCRIPT = REPO / "training" / "slurm" / "train.emotion_qat.slurm"
# one local Slurm cluster at a time (each test module starts its own): pinned to one xdist worker
pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.xdist_group("slurm")]


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """One cluster for every test of this module; yields its slurm.conf (jobcomp.txt lies next to it)."""
    with local_slurm(tmp_path_factory.mktemp("slurm")) as conf:
        yield conf


def _job_env(conf: Path, data_dir: Path | None, out: Path, **extra: str) -> dict[str, str]:
    """The environment a user would set to submit a job script to the local cluster (tiny CPU settings)."""
    env = {
        **os.environ, "SLURM_CONF": str(conf), "OUT_DIR": str(out),
        "PARTITION": "debug", "CPUS_PER_TASK": "1", "EMOBENCH": str(Path(sys.executable).with_name("emobench")),
        "PYTHONPATH": str(REPO), "IMAGE_SIZE": "32", "WORKERS": "0", "PRETRAINED": "false", **extra,
    }
    env.pop("DATA_DIR", None)
    if data_dir is not None:
        env["DATA_DIR"] = str(data_dir)
    return env


def _submit(script: Path, env: dict[str, str], cwd: Path) -> str:
    submitted = subprocess.run(["bash", str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    assert job_id.isdigit(), submitted.stdout
    return job_id


def _job_field(job_id: str, env: dict[str, str], field: str) -> str:
    shown = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
    match = re.search(rf"\b{field}=(\S+)", shown)
    return match.group(1) if match else ""


def test_phase1_array_trains_all_five_and_selects(slurm_cluster, tiny_sample, tmp_path):
    out = tmp_path / "runs"
    # Tiny settings: 1 epoch at 32 px on 12 images, no pretrained weights (no internet here).
    env = _job_env(slurm_cluster, tiny_sample["fer2013"], out, GPUS_PER_TASK="0", EPOCHS="1",
                   LIMIT_TRAIN_IMAGES="12", EXTRA_ARGS="--set limit_eval_images=12 --set tensorboard=false --batch-size 6")
    jobcomp_before = len(jobcomp(slurm_cluster))
    job_id = _submit(PHASE1_SCRIPT, env, tmp_path)

    deadline = time.monotonic() + 170
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", job_id], env=env, capture_output=True, text=True).stdout
        if not queued.strip():
            break
        time.sleep(1)
    logs = sorted((out / "logs").glob(f"phase1-{job_id}_*.log"))
    log_text = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in logs)
    assert not queued.strip(), f"array job still queued/running after the deadline\n{log_text}"

    finished = jobcomp(slurm_cluster)[jobcomp_before:]
    states = re.findall(r"JobState=(\w+).*?ExitCode=(\d+:\d+)", finished)
    assert len(states) == 5 and all(s == ("COMPLETED", "0:0") for s in states), f"{finished}\n{log_text}"
    assert len(logs) == 5  # one log per array task
    runs = sorted((out / "phase1").glob(f"slurm{job_id}-*"))
    assert sorted(r.name.split("-", 1)[1] for r in runs) == sorted(PHASE1_ARCHS)
    for run in runs:
        assert (run / "checkpoint.pt").is_file() and (run / "metrics.json").is_file()

    selection = select_best([out / "phase1"], metric="accuracy", out_dir=out / "phase1")
    assert selection.winner["arch"] in PHASE1_ARCHS and len(selection.rows) == 5
    assert f"Winner: **{selection.winner['arch']}**" in selection.markdown_path.read_text()
    assert selection.csv_path.read_text().count("\n") == 6 and selection.png_path.stat().st_size > 1000


def _preempt_requeue_resume(conf: Path, job_id: str, env: dict[str, str], run_dir: Path, log_path: Path,
                            epochs: int, jobcomp_before: int) -> None:
    """Preempt a running training job the way Slurm warns it, and check it saves, requeues and resumes to the end.

    Slurm's warning signal reaches the batch shell only; the script forwards it, the trainer saves its state
    and exits 75, the script requeues the job, and the second start resumes where the first stopped.
    """
    def log_text() -> str:
        return log_path.read_text() if log_path.is_file() else "(no log yet)"

    # 1. Running, with a finished epoch on disk.
    wait_until(lambda: _job_field(job_id, env, "JobState") == "RUNNING" and (run_dir / "last.pt").is_file(),
                90, "the job to run and write last.pt", log_text)
    # 2. The warning the way Slurm sends it for --signal=B:USR1@120: to the batch shell only.
    signalled = subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=env, capture_output=True,
                               text=True)
    assert signalled.returncode == 0, signalled.stderr
    # 3. Saved, exit 75, requeued (pending again, one restart counted).
    wait_until(lambda: _job_field(job_id, env, "Restarts") == "1" and _job_field(job_id, env, "JobState") == "PENDING",
                60, "the job to be requeued", log_text)
    first = log_text()
    assert "received SIGUSR1" in first, f"the batch shell did not forward the signal to the trainer\n{first}"
    stopped = re.search(r"Preempted: stopped by a signal at epoch (\d+), step (\d+)", first)
    assert stopped, first
    assert "trainer saved its state (exit 75): requeueing job" in first, first
    stop_epoch, stop_step = int(stopped.group(1)), int(stopped.group(2))
    assert 1 < stop_epoch < epochs, first  # stopped mid-run, after the first epoch
    saved = load_checkpoint_dict(run_dir / "last.pt")
    assert (saved["epoch"], saved["step_in_epoch"], saved["finished"]) == (stop_epoch - 1, stop_step, False)
    assert [row["epoch"] for row in saved["history"]] == list(range(1, stop_epoch))

    # Slurm keeps a requeued job pending for about two minutes (EligibleTime); shorten that to a few
    # seconds. Not to zero: slurmd revokes the first start's credential with one-second resolution, and
    # a restart within the same second is refused ("Job credential revoked").
    released = subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now+3"], env=env,
                              capture_output=True, text=True)
    assert released.returncode == 0, released.stderr
    wait_until(lambda: _job_field(job_id, env, "JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"),
                120, "the requeued job to end", log_text)
    assert _job_field(job_id, env, "JobState") == "COMPLETED", log_text()

    # 4. The second start resumed where the first stopped, and finished the run.
    second = log_text()[len(first):]
    assert f"resuming {run_dir} at epoch {stop_epoch}, step {stop_step}" in second, second
    assert "starting a new one" not in second and "finished with exit code 0" in second, second
    assert _job_field(job_id, env, "Restarts") == "1" and _job_field(job_id, env, "ExitCode") == "0:0"
    records = re.findall(rf"JobId={job_id} .*?JobState=(\w+)", jobcomp(conf)[jobcomp_before:])
    assert records == ["PENDING", "COMPLETED"], records  # the requeued start, then the finished one

    # 5. One run folder, its history continuous across the restart.
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["latest", run_dir.name]
    history = load_checkpoint(run_dir / "checkpoint.pt").raw["history"]
    assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == list(range(1, epochs + 1))
    assert metrics["epochs_run"] == epochs and not metrics["stopped_early"]


def _assert_same_as_reference(reference: subprocess.Popen, ref_dir: Path, run_dir: Path) -> None:
    """Resuming mid-epoch in a new process continued the very same computation as the uninterrupted run."""
    reference_log = reference.communicate(timeout=180)[0]
    assert reference.returncode == 0, reference_log
    losses, ref_losses = ([r["train_loss"] for r in json.loads((d / "metrics.json").read_text())["history"]]
                          for d in (run_dir, ref_dir))
    assert losses == ref_losses
    state, ref_state = (load_checkpoint(d / "checkpoint.pt").model_state for d in (run_dir, ref_dir))
    assert ref_state.keys() == state.keys()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state), "weights differ from the reference"


def _preempted_job_matches_reference(conf: Path, script: Path, phase: str, env: dict[str, str], tmp_path: Path,
                                     epochs: int, reference_args: list[str]) -> Path:
    """Submit ``script``, preempt, requeue and resume it (``_preempt_requeue_resume``), and check it ends bit for
    bit where the same training run uninterrupted outside Slurm ends. Returns the job's run folder."""
    # The reference, one thread as the job's OMP_NUM_THREADS; both runs train test_efficientnet.
    reference = subprocess.Popen(
        [env["EMOBENCH"], "train", phase, *reference_args, "--out", str(tmp_path / "reference"), "--run-name", "ref",
         "--epochs", str(epochs), "--workers", "0", *env["EXTRA_ARGS"].split()],
        env={**env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    jobcomp_before = len(jobcomp(conf))
    job_id = _submit(script, env, tmp_path)
    out = Path(env["OUT_DIR"])
    run_dir = out / phase / f"slurm{job_id}-test_efficientnet"
    _preempt_requeue_resume(conf, job_id, env, run_dir, out / "logs" / f"{phase}-{job_id}.log", epochs, jobcomp_before)
    _assert_same_as_reference(reference, tmp_path / "reference" / phase / "ref-test_efficientnet", run_dir)
    return run_dir


def test_phase2_preempted_by_warning_signal_requeues_and_resumes(slurm_cluster, tiny_sample, tmp_path):
    """The Phase 2 script, preempted by Slurm's warning signal, requeues itself and resumes bit for bit."""
    epochs = 20  # ~0.2 s each here: the run is still training long after the first epoch's last.pt appears
    extra = ("--arch test_efficientnet --batch-size 8 --set tensorboard=false --set progress=false "
             "--set early_stopping_patience=1000")  # every epoch runs: the history's length is known
    env = _job_env(slurm_cluster, tiny_sample["rafdb"], tmp_path / "runs", GPUS="0", EPOCHS=str(epochs),
                   EXTRA_ARGS=extra)
    _preempted_job_matches_reference(slurm_cluster, PHASE2_SCRIPT, "phase2", env, tmp_path, epochs,
                                     ["--data", env["DATA_DIR"], "--image-size", "32", "--no-pretrained"])


def test_qat_preempted_by_warning_signal_requeues_and_resumes(slurm_cluster, tiny_sample, tmp_path):
    """The QAT script on a finished FP32 run: preempted, requeued, resumed, and bit for bit the uninterrupted
    QAT run; on the FP32 run's own data (no DATA_DIR), its checkpoint a QAT one whose teacher is that run."""
    fp32 = train(tiny_config(tiny_sample["rafdb"], tmp_path / "fp32", epochs=1, limit_train_images=None))
    epochs = 16  # ~0.5 s each here (19 steps of fake INT8 and the teacher): time to signal mid-run
    # early stopping off: every epoch runs; the ranges freeze after the likely stop, so the resumed run applies
    # the QAT schedule itself
    extra = ("--set tensorboard=false --set progress=false --set early_stopping_patience=1000 "
             "--set qat.freeze_observers_after=8")
    env = _job_env(slurm_cluster, None, tmp_path / "runs", GPUS="0", INIT_FROM=str(fp32.run_dir),
                   EPOCHS=str(epochs), EXTRA_ARGS=extra)
    run_dir = _preempted_job_matches_reference(slurm_cluster, QAT_SCRIPT, "qat", env, tmp_path, epochs,
                                               ["--init-from", str(fp32.run_dir)])

    final = load_checkpoint(run_dir / "checkpoint.pt")
    assert final.qat is not None and final.qat["init_from"] == str(fp32.checkpoint_path)
    teacher = load_checkpoint(fp32.checkpoint_path).model_state
    assert all(torch.equal(teacher[k], final.raw["fp32_model_state"][k]) for k in teacher)
    assert final.config["data_root"] == str(tiny_sample["rafdb"])  # the FP32 run's data, without DATA_DIR
