"""Export in parallel worker processes: the same artifacts and manifest as in one process, failures and
dead workers recorded per job, and no worker process outliving ``export_all`` (Ctrl-C included)."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from pathlib import Path

import pytest

from export.config import ExportConfig
from export.manifest import load_manifest
from export.parallel import FAULT_ENV, group_jobs, usable_cores, worker_count
from export.pipeline import ExportEvent, export_all, plan_jobs


def _onnx_and_torchscript(tiny_sample, **kw) -> ExportConfig:
    """Two groups: ONNX (both INT8 artifacts share the FP32 graph) and TorchScript (two files a job)."""
    return ExportConfig(**{"formats": ("onnx", "torchscript"), "precisions": ("fp32", "int8"),
                           "int8_modes": ("dynamic",), "eval_data": tiny_sample["rafdb"], "eval_images": 4, **kw})


def _child_pids() -> set[int]:
    """Processes this test process started that are still there (zombies included), except
    multiprocessing's resource tracker (one per process that spawns, living as long as it)."""
    children: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        children.update(int(p) for p in (task / "children").read_text().split())
    return {pid for pid in children if b"resource_tracker" not in _cmdline(pid)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _comparable(manifest) -> list[dict]:
    """Manifest artifact entries without what differs between any two runs: timings, and the TorchScript
    file bytes (torch.jit.save writes other bytes, even another size, on each run in one process)."""
    out = []
    for artifact in manifest.artifacts:
        entry = artifact.to_dict(relative_to=manifest.folder)
        entry.pop("export_seconds")
        if artifact.format.startswith("torchscript"):
            entry.pop("sha256"), entry.pop("size_bytes")
            if entry["quantization"]:
                entry["quantization"].pop("size_ratio_to_fp32")
        out.append(entry)
    return out


@pytest.fixture
def no_leftover_processes():
    before = _child_pids()
    yield
    assert multiprocessing.active_children() == []
    assert _child_pids() <= before, "an export worker process outlived export_all"


def test_jobs_are_grouped_by_shared_intermediates_longest_group_first():
    jobs = [("executorch", "fp32", None), ("executorch", "int8", "dynamic"), ("executorch", "int8", "static"),
            ("executorch", "int8", "mixed"), ("onnx", "fp32", None), ("onnx", "int8", "dynamic"),
            ("onnx", "int8", "static"), ("torchscript", "fp32", None), ("torchscript", "int8", "dynamic")]
    groups = [[jobs[i] for i in group] for group in group_jobs(jobs)]
    # ExecuTorch's static and mixed INT8 share one calibration; its FP32 and dynamic share nothing.
    assert groups[0] == [("executorch", "int8", "static"), ("executorch", "int8", "mixed")]
    assert [("executorch", "int8", "dynamic")] in groups and [("executorch", "fp32", None)] in groups
    assert [("onnx", "fp32", None), ("onnx", "int8", "dynamic"), ("onnx", "int8", "static")] in groups
    assert [("torchscript", "fp32", None), ("torchscript", "int8", "dynamic")] in groups
    assert sorted(i for group in group_jobs(jobs) for i in group) == list(range(len(jobs)))
    # The QAT artifacts of both formats share the QAT run's converted graph.
    with_qat = [*jobs, ("executorch", "int8", "qat"), ("onnx", "int8", "qat")]
    assert [len(jobs), len(jobs) + 1] in group_jobs(with_qat)
    # A mode the rules do not know (a new ExecuTorch INT8 mode) runs as a group of its own, not with another's.
    extra = [*jobs, ("executorch", "int8", "new")]
    assert [len(extra) - 1] in group_jobs(extra)
    # The demo's export: hybrid INT8 (calibration + four observers measured) takes as long as the rest of
    # the ExecuTorch jobs together, so it is handed out first (last, it left one worker idle for ~40 s).
    demo = [("executorch", "fp32", None), ("executorch", "int8", "dynamic"), ("executorch", "int8", "hybrid"),
            ("onnx", "fp32", None), ("onnx", "int8", "dynamic"), ("torchscript", "fp32", None),
            ("torchscript", "int8", "dynamic")]
    assert group_jobs(demo)[0] == [2]


@pytest.mark.parametrize(("requested", "groups", "cores", "expected"), [
    (None, 5, 2, 2), (None, 1, 8, 1), (None, 3, 8, 3), (1, 5, 8, 1), (4, 2, 8, 2), (3, 5, 2, 3)])
def test_worker_count(requested, groups, cores, expected):
    assert worker_count(requested, groups, cores) == expected


def test_parallel_export_matches_the_in_process_export_failures_included(tmp_path, tiny_checkpoint, tiny_sample,
                                                                         no_leftover_processes):
    import torch

    # ONNX Runtime and TorchScript differ from eager by ~1e-8, so every FP32 artifact fails its verification
    # (in its worker); the INT8 ones, ONNX's built from the same FP32 graph, still complete.
    config = _onnx_and_torchscript(tiny_sample, int8_modes=("dynamic", "static"), fp32_max_abs_diff=1e-12,
                                   calibration_data=tiny_sample["rafdb"], calibration_images=4)
    jobs, _ = plan_jobs(config)
    workers = worker_count(2, len(group_jobs(jobs)), usable_cores())
    assert workers == 2
    # The eager logits here and the exports there with a worker's torch thread count: float sums (the
    # logits, calibrated INT8 ranges) depend on it in their last bits, as they do from machine to machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, usable_cores() // workers))
    events: list[ExportEvent] = []
    try:
        in_process = export_all(tiny_checkpoint, tmp_path / "one", dataclasses.replace(config, jobs=1))
        parallel = export_all(tiny_checkpoint, tmp_path / "two", dataclasses.replace(config, jobs=2), on_event=events.append)
    finally:
        torch.set_num_threads(threads)

    assert [(f.format, f.precision, f.mode) for f in parallel.failures] == [("onnx", "fp32", None),
                                                                          ("torchscript", "fp32", None)]
    for failure in parallel.failures:
        assert failure.error.startswith("ParityError: ") and "max_abs_diff < 1e-12" in failure.error
    assert parallel.failures == in_process.failures  # the exporter's reasons, word for word
    assert [a.key for a in parallel.artifacts] == [
        ("onnx", "int8", "dynamic"), ("onnx", "int8", "static"), ("torchscript", "int8", "dynamic"),
        ("torchscript-lite", "int8", "dynamic")]
    assert _comparable(parallel) == _comparable(in_process)  # same files, order, parity, reports, details
    assert parallel.skipped == in_process.skipped
    assert parallel.verification_data == in_process.verification_data
    assert parallel.calibration_data == in_process.calibration_data
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    reloaded = load_manifest(tmp_path / "two", verify_files=True)
    assert reloaded.artifacts == parallel.artifacts and reloaded.failures == parallel.failures
    # Progress: one plan, then a start and a done for each job, reported in this process.
    assert events[0].kind == "plan" and events[0].total_steps == len(jobs) == 5
    labels = {f"{f} {p}" + (f"-{m}" if m else "") for f, p, m in jobs}
    assert sorted(e.label for e in events if e.kind == "start") == sorted(labels)
    done = {e.label: e for e in events if e.kind == "done"}
    assert sorted(done) == sorted(labels) and all(e.seconds > 0 for e in done.values())
    assert {label: e.ok for label, e in done.items()} == {
        "onnx fp32": False, "onnx int8-dynamic": True, "onnx int8-static": True, "torchscript fp32": False,
        "torchscript int8-dynamic": True}
    assert done["onnx fp32"].message == parallel.failures[0].error
    names = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert not any("fp32" in n or n.startswith(".emobench-staging") for n in names), names


def test_a_worker_that_dies_fails_its_job_and_the_rest_of_its_group_runs_in_a_fresh_one(
        tmp_path, tiny_checkpoint, tiny_sample, monkeypatch, no_leftover_processes):
    # SIGKILL (the OOM killer's way) in the ONNX worker, a hard exit in the TorchScript worker.
    monkeypatch.setenv(FAULT_ENV, "onnx fp32=kill;torchscript int8-dynamic=exit")
    config = _onnx_and_torchscript(tiny_sample, jobs=2)
    manifest = export_all(tiny_checkpoint, tmp_path / "out", config)
    errors = {(f.format, f.precision, f.mode): f.error for f in manifest.failures}
    assert errors == {
        ("onnx", "fp32", None): "WorkerDiedError: the export worker process died (killed by SIGKILL) while "
                                "exporting onnx fp32",
        ("torchscript", "int8", "dynamic"): "WorkerDiedError: the export worker process died (exit status 70) "
                                            "while exporting torchscript int8-dynamic",
    }
    # ONNX INT8 was not started when its worker died: a fresh worker exported it (building the FP32 graph again).
    assert [a.key for a in manifest.artifacts] == [("onnx", "int8", "dynamic"), ("torchscript", "fp32", None),
                                                   ("torchscript-lite", "fp32", None)]
    assert all(a.parity is not None and a.parity.images == 4 for a in manifest.artifacts)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".emobench-staging")]


def test_interrupting_the_export_stops_every_worker(tmp_path, tiny_checkpoint, tiny_sample, no_leftover_processes):
    def interrupt(event: ExportEvent) -> None:
        if event.kind == "start":  # workers are up and exporting: what Ctrl-C would find
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_all(tiny_checkpoint, tmp_path / "out", _onnx_and_torchscript(tiny_sample, jobs=2),
                   on_event=interrupt)
    assert list((tmp_path / "out").iterdir()) == []  # no manifest, no staging folder, no half-moved file



def test_workers_that_cannot_start_fail_every_job_with_their_reason(tmp_path, tiny_checkpoint, tiny_sample,
                                                                    no_leftover_processes):
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(tiny_checkpoint.read_bytes())

    events: list[ExportEvent] = []

    def truncate_after_planning(event: ExportEvent) -> None:
        events.append(event)
        if event.kind == "plan":  # loaded here already; the workers, spawned next, read a broken file
            checkpoint.write_bytes(tiny_checkpoint.read_bytes()[:5000])

    manifest = export_all(checkpoint, tmp_path / "out", _onnx_and_torchscript(tiny_sample, jobs=2),
                          on_event=truncate_after_planning)
    assert not manifest.artifacts and len(manifest.failures) == 4
    assert all(f.error.startswith("CheckpointError: ") and "truncated or corrupt" in f.error
               for f in manifest.failures), manifest.failures
    assert sorted(e.kind for e in events) == ["done"] * 4 + ["plan"] + ["start"] * 4


def test_another_jobs_value_is_the_same_export_of_a_folder(tmp_path, tiny_checkpoint, tiny_sample):
    config = ExportConfig(formats=("onnx",), precisions=("fp32",), eval_data=tiny_sample["rafdb"], eval_images=2,
                          jobs=1)
    first = export_all(tiny_checkpoint, tmp_path / "out", config)
    # One group of jobs: in this process whatever jobs says; redone in place, no --overwrite needed.
    again = export_all(tiny_checkpoint, tmp_path / "out", dataclasses.replace(config, jobs=3))
    assert again.artifacts[0].sha256 == first.artifacts[0].sha256 and again.config["jobs"] == 3
