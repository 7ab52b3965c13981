"""The device-host Slurm script on a real single-node Slurm, virtual devices standing in for phones.

Two host lines (both on node ``localhost``, each with its own virtual device) become two array tasks,
each writing its own database; the merge job, held by ``afterok``, merges them into one database and
writes one report showing both devices.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from android_bench.virtual import VirtualDevice
from device_results.merge import read_origins
from device_results.store import TABLE_ORDER, ResultsStore
from tests.device_results.tiny_export import build_tiny_export
from tests.slurm_cluster import job_states, jobcomp, local_slurm, queued, wait_until

# one local Slurm cluster at a time (each test module starts its own): pinned to one xdist worker
pytestmark = pytest.mark.xdist_group("slurm")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "android_bench" / "slurm" / "device_hosts.slurm"
MODELS = ("executorch-fp32", "executorch-int8-dynamic")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    with local_slurm(tmp_path_factory.mktemp("slurm")) as conf:
        yield conf


@pytest.fixture(scope="module")
def executorch_manifest(tmp_path_factory, tiny_sample) -> Path:
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny_export_executorch", tiny_sample,
                             formats=("executorch",))


def _env(out: Path, hosts: Path, manifest: Path, sample: dict, **extra: str) -> dict[str, str]:
    return {
        **os.environ, "HOSTS_FILE": str(hosts), "OUT_DIR": str(out), "MANIFEST": str(manifest),
        "SEEN": str(sample["rafdb"]), "UNSEEN": str(sample["custom"]), "EXPERIMENTS": "2",
        "EXTRA_ARGS": "--batch-size 2 --repeats 1 --warmup 0 --threads 1 --no-eager "
                      + " ".join(f"--model {m}" for m in MODELS),
        "PARTITION": "debug", "CPUS_PER_TASK": "1", "PYTHONPATH": str(REPO),
        "EMOBENCH": str(Path(sys.executable).with_name("emobench")), **extra,
    }


@pytest.mark.system
@pytest.mark.slow
def test_two_hosts_then_one_merged_database_and_report(slurm_cluster, executorch_manifest, tiny_sample, adb_key,
                                                       tmp_path):
    keys = Path(str(adb_key) + ".pub")
    with VirtualDevice(tmp_path / "phone-a", authorized_keys=keys) as phone_a, \
            VirtualDevice(tmp_path / "phone-b", authorized_keys=keys, profile="android-release-virtual") as phone_b:
        targets = [f"android:{phone_a.address}", f"android:{phone_b.address}"]
        hosts = tmp_path / "hosts.txt"
        hosts.write_text(f"# node    targets\nlocalhost  {targets[0]}\n\nlocalhost  {targets[1]}   # second host\n")
        out = tmp_path / "fleet"
        env = _env(out, hosts, executorch_manifest, tiny_sample, SLURM_CONF=str(slurm_cluster))
        before = len(jobcomp(slurm_cluster))
        submitted = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True,
                                   timeout=60)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        array_id, merge_id = submitted.stdout.strip().split(";")
        assert array_id.isdigit() and merge_id.isdigit(), submitted.stdout

        def logs() -> str:
            return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((out / "logs").glob("*.log")))

        wait_until(lambda: not queued([array_id, merge_id], env), 400, "the array and the merge job to finish", logs)

    states = job_states(slurm_cluster, before)
    assert len(states) == 3 and all(s == ("COMPLETED", "0:0") for s in states.values()), f"{states}\n{logs()}"
    assert states[merge_id] == ("COMPLETED", "0:0")
    task_logs = sorted((out / "logs").glob(f"devices-{array_id}_*.log"))
    assert [p.name for p in task_logs] == [f"devices-{array_id}_0.log", f"devices-{array_id}_1.log"]
    for i, path in enumerate(task_logs):
        assert f"task {i} of job {array_id}" in path.read_text() and "(node localhost)" in path.read_text()

    # one database per host, each with its own device's run
    host_dbs = [out / "hosts" / "0-localhost.db", out / "hosts" / "1-localhost.db"]
    run_ids = []
    for db, target in zip(host_dbs, targets, strict=True):
        with ResultsStore(db) as store:
            (run,) = store.list_runs()
            assert run.status == "complete", run.status_message
            assert [t["target_id"] for t in store.rows(run.run_id, "targets")] == [target]
            assert store.counts(run.run_id)["cells"] == 2 * len(MODELS)
            run_ids.append(run.run_id)

    # the merge job: one database holding both runs, every row, and where each came from
    merged = out / "merged.db"
    with ResultsStore(merged) as store:
        assert sorted(r.run_id for r in store.list_runs()) == sorted(run_ids)
        targets_merged = {t["target_id"] for rid in run_ids for t in store.rows(rid, "targets")}
        assert targets_merged == set(targets)
        origins = read_origins(store)
        assert {origins[rid].source_host for rid in run_ids} == {"localhost"}
        assert {origins[rid].source_db for rid in run_ids} == {str(p.resolve()) for p in host_dbs}
    for table in ("runs", *TABLE_ORDER):
        count = sum(sqlite3.connect(db).execute(f"SELECT count(*) FROM {table}").fetchone()[0] for db in host_dbs)
        assert sqlite3.connect(merged).execute(f"SELECT count(*) FROM {table}").fetchone()[0] == count, table
    assert sqlite3.connect(merged).execute("SELECT count(*) FROM cells").fetchone()[0] == 2 * 2 * len(MODELS)

    # ... and one report of both devices
    html = (out / "report" / "report.html").read_text()
    for target in targets:
        assert target in html


def test_a_host_line_without_targets_is_refused_before_submitting(tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("lab-01 android:R58M1\nlab-02\n")
    env = {**os.environ, "HOSTS_FILE": str(hosts), "MANIFEST": "m.json", "SEEN": "s", "UNSEEN": "u",
           "OUT_DIR": str(tmp_path / "out")}
    env.pop("SLURM_JOB_ID", None)
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert f"{hosts}: host line 2 'lab-02' names no target" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_an_empty_hosts_file_is_refused(tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# nothing here\n\n")
    env = {**os.environ, "HOSTS_FILE": str(hosts), "MANIFEST": "m.json", "SEEN": "s", "UNSEEN": "u"}
    env.pop("SLURM_JOB_ID", None)
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "lists no hosts" in proc.stderr
