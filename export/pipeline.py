"""``export_all``: checkpoint -> every requested artifact, each verified, plus ``manifest.json``.

Order of work: load the checkpoint; check the output folder; read the verification (and calibration)
images, so bad data fails before minutes of exporting; run the eager model once; then for each format
x precision x mode export into a private staging folder, verify in the artifact's own runtime, and
only then move the file (``os.replace``) under its final name. A failing artifact is recorded in the
manifest with the exporter's reason and the others still complete; the manifest is written last,
atomically, and lists only verified files.

``ExportConfig.jobs`` (1, or a single group of jobs: all in this process) runs independent groups of
jobs in parallel worker processes (``export.parallel``); events, moves and the manifest stay here,
and the manifest is the same either way apart from timings.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emobench_common import quiet
from emobench_common.fileio import sha256_file
from export.artifact import EXTENSIONS, Artifact
from export.config import ExportConfig
from export.context import ExportContext
from export.data import ImageSet, load_image_set
from export.errors import ExportConfigError, ManifestError, OutputFolderError, VerificationDataError
from export.jobs import export_verified, failure_reason, format_module
from export.manifest import MANIFEST_NAME, Failure, Manifest, Skipped, load_manifest, write_manifest
from export.parallel import (
    JobResult,
    WorkerData,
    WorkerPool,
    WorkerSetup,
    group_jobs,
    usable_cores,
    worker_count,
)
from export.quant_report import with_size_ratio

log = logging.getLogger(__name__)

# ExportConfig fields that change how the export runs, not what it writes.
_EXECUTION_SETTINGS = frozenset({"jobs"})


@dataclass(frozen=True)
class ExportEvent:
    """Progress of one step, for a progress display: ``kind`` is 'plan', 'start' or 'done'."""

    kind: str
    label: str
    total_steps: int = 0
    ok: bool = True
    seconds: float = 0.0
    message: str = ""


EventCallback = Callable[[ExportEvent], None]


def plan_jobs(config: ExportConfig) -> tuple[list[tuple[str, str, str | None]], list[Skipped]]:
    """The (format, precision, mode) jobs to run, FP32 first, and the combinations a format lacks."""
    jobs, skipped = [], []
    for fmt in config.formats:
        modes = format_module(fmt).MODES
        for precision in config.precisions:
            wanted = (None,) if precision == "fp32" else config.int8_modes
            for mode in wanted:
                if mode in modes.get(precision, ()):
                    jobs.append((fmt, precision, mode))
                else:
                    skipped.append(Skipped(fmt, precision, mode, reason=(
                        f"{fmt} offers {precision} modes {', '.join(str(m) for m in modes.get(precision, ()))} "
                        f"only in emobench")))
    jobs.sort(key=lambda j: (j[0], j[1] != "fp32"))
    return jobs, skipped


def export_all(checkpoint_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
               config: ExportConfig = ExportConfig(), *, on_event: EventCallback | None = None) -> Manifest:
    """Export a checkpoint to every requested format x precision x mode, verify each, write the manifest.

    Args:
        checkpoint_path: an emobench checkpoint (architecture, classes, input size and normalisation
            all come from it).
        out_dir: the export folder; created if needed.
        config: what to export (see ``ExportConfig``).
        on_event: called with ``ExportEvent``s for a progress display.

    Returns:
        The manifest written to ``out_dir/manifest.json``; ``manifest.failures`` lists artifacts that failed.

    Raises:
        CheckpointError: not a readable emobench checkpoint.
        OutputFolderError: ``out_dir`` holds a different export and ``config.overwrite`` is False.
        VerificationDataError / ExportConfigError: no real images to verify or calibrate with.
    """
    from training.checkpoint import load_checkpoint

    emit = on_event or (lambda _event: None)
    checkpoint_path = Path(checkpoint_path)
    out_dir = Path(out_dir)
    checkpoint = load_checkpoint(checkpoint_path)
    checkpoint_sha = sha256_file(checkpoint_path)
    _prepare_out_dir(out_dir, checkpoint_sha, checkpoint.arch, config)
    jobs, skipped = plan_jobs(config)
    emit(ExportEvent("plan", "export", total_steps=len(jobs)))
    groups = group_jobs(jobs)
    workers = worker_count(config.jobs, len(groups), usable_cores())
    with contextlib.ExitStack() as stack:
        staging = Path(tempfile.mkdtemp(prefix=".emobench-staging-", dir=out_dir))
        stack.callback(shutil.rmtree, staging, ignore_errors=True)  # last: after the workers have stopped
        pool = None
        if workers > 1:  # started now, so the workers import torch and build the model while the images load
            pool = stack.enter_context(WorkerPool(_worker_setup(checkpoint_path, config, workers), workers=workers))
            pool.start()
        verification = _load_verification(checkpoint, config)
        calibration = _load_calibration(checkpoint, config) if config.needs_calibration else None
        model = checkpoint.build_model()
        eager_logits = _eager_logits(model, verification)

        recorder = _JobRecorder(jobs, out_dir, emit)
        if pool is None:  # everything in this process, one job after another
            ctx = ExportContext(checkpoint=checkpoint, model=model, config=config, staging_dir=staging,
                                calibration=calibration)
            _export_in_process(ctx, jobs, verification, eager_logits, recorder)
        else:
            pool.run(jobs, groups, WorkerData(verification, eager_logits, calibration), staging_dir=staging,
                     on_start=recorder.start, on_result=recorder.finish)
    artifacts, failures = recorder.in_plan_order()

    manifest = Manifest(
        folder=out_dir,
        created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        versions=_versions(),
        checkpoint={"path": str(checkpoint_path.resolve()), "sha256": checkpoint_sha, "arch": checkpoint.arch,
                    "epoch": checkpoint.epoch},
        arch=checkpoint.arch,
        input_spec=checkpoint.input_spec,
        input_batch_size=config.batch_size,
        output={"name": "logits", "shape": [config.batch_size, checkpoint.num_classes], "dtype": "float32",
                "meaning": "unnormalised class scores in class_names order (softmax for probabilities)"},
        config=config.to_dict(),
        verification_data=verification.describe(),
        calibration_data=calibration.describe() if calibration else None,
        artifacts=tuple(_with_size_ratios(artifacts)),
        failures=tuple(failures),
        skipped=tuple(skipped),
    )
    write_manifest(manifest)
    log.info("wrote %s: %d artifacts, %d failed", manifest.path, len(artifacts), len(failures))
    return manifest


def _export_in_process(ctx: ExportContext, jobs: list[tuple[str, str, str | None]], verification: ImageSet,
                       eager_logits: np.ndarray, recorder: _JobRecorder) -> None:
    for index, (fmt, precision, mode) in enumerate(jobs):
        recorder.start(index)
        try:
            staged = export_verified(ctx, fmt, precision, mode, verification, eager_logits)
        except Exception as exc:  # noqa: BLE001 - any exporter failure is recorded; the other formats go on
            log.debug("%s failed", recorder.label(index), exc_info=True)
            recorder.finish(index, JobResult(error=failure_reason(exc)))
            continue
        recorder.finish(index, JobResult(staged=tuple(staged)))


def _worker_setup(checkpoint_path: Path, config: ExportConfig, workers: int) -> WorkerSetup:
    threads = max(1, usable_cores() // workers)
    log.info("exporting in %d worker processes (%d torch thread(s) each)", workers, threads)
    return WorkerSetup(checkpoint_path=checkpoint_path.resolve(), config=config, threads=threads,
                       log_level=logging.getLogger().getEffectiveLevel(),
                       export_log_level=logging.getLogger("export").level, quiet=quiet.quiet())


class _JobRecorder:
    """Progress events and results of the jobs, kept in plan order whatever order they finish in.

    ``finish`` moves a job's verified files from staging into the output folder (``os.replace``);
    a failure there is the job's failure, as any exporter or verification error is.
    """

    def __init__(self, jobs: list[tuple[str, str, str | None]], out_dir: Path, emit: EventCallback) -> None:
        self.jobs = jobs
        self.out_dir = out_dir
        self.emit = emit
        self.started: dict[int, float] = {}
        self.artifacts: dict[int, list[Artifact]] = {}
        self.failures: dict[int, Failure] = {}

    def label(self, index: int) -> str:
        fmt, precision, mode = self.jobs[index]
        return f"{fmt} {precision}" + (f"-{mode}" if mode else "")

    def start(self, index: int) -> None:
        self.emit(ExportEvent("start", self.label(index), total_steps=len(self.jobs)))
        self.started[index] = time.perf_counter()

    def finish(self, index: int, result: JobResult) -> None:
        label = self.label(index)
        reason = result.error
        if reason is None:
            try:
                self.artifacts[index] = _move_into_place(list(result.staged), self.out_dir)
            except Exception as exc:  # noqa: BLE001 - recorded like an exporter failure
                log.debug("%s failed", label, exc_info=True)
                reason = failure_reason(exc)
        seconds = time.perf_counter() - self.started.get(index, time.perf_counter())
        if reason is not None:
            log.error("%s failed: %s", label, reason)
            fmt, precision, mode = self.jobs[index]
            self.failures[index] = Failure(fmt, precision, mode, error=reason)
            self.emit(ExportEvent("done", label, ok=False, seconds=seconds, message=reason))
        else:
            self.emit(ExportEvent("done", label, ok=True, seconds=seconds))

    def in_plan_order(self) -> tuple[list[Artifact], list[Failure]]:
        artifacts = [a for i in sorted(self.artifacts) for a in self.artifacts[i]]
        return artifacts, [self.failures[i] for i in sorted(self.failures)]


def _move_into_place(verified: list[Artifact], out_dir: Path) -> list[Artifact]:
    final = []
    for artifact in verified:  # every file of this job passed: move them into place
        target = out_dir / artifact.path.name
        os.replace(artifact.path, target)
        etrecord = artifact.details.get("etrecord")
        if etrecord:  # ExecuTorch's ETRecord, written beside the .pte in staging (per-operator profiling)
            os.replace(artifact.path.parent / etrecord["path"], out_dir / etrecord["path"])
        final.append(artifact.with_(path=target))
    return final


def _with_size_ratios(artifacts: list[Artifact]) -> list[Artifact]:
    fp32_sizes = {a.format: a.size_bytes for a in artifacts if a.precision == "fp32"}
    return [a.with_(quantization=with_size_ratio(a.quantization, size_bytes=a.size_bytes,
                                                 fp32_size_bytes=fp32_sizes.get(a.format)))
            if a.quantization else a for a in artifacts]


def _prepare_out_dir(out_dir: Path, checkpoint_sha: str, arch: str, config: ExportConfig) -> None:
    """Refuse a folder holding a different export unless overwriting; clear the old export's files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(f"output {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    entries = [p for p in out_dir.iterdir() if not p.name.startswith(".emobench-staging-")]
    if not entries:
        return
    old = None
    if manifest_path.exists():
        with contextlib.suppress(ManifestError):
            old = load_manifest(manifest_path)
    same = old is not None and old.checkpoint.get("sha256") == checkpoint_sha \
        and _output_settings(old.config) == _output_settings(config.to_dict())
    if old is None and not manifest_path.exists() and all(_is_artifact_name(p, arch) for p in entries):
        same = True  # files an interrupted export of this model left (never listed by a manifest)
    if not same and not config.overwrite:
        what = (f"an export of checkpoint sha256 {old.checkpoint.get('sha256', '?')[:12]}... with other settings"
                if old is not None else f"{len(entries)} file(s) that are not an emobench export")
        raise OutputFolderError(f"output folder {out_dir} already holds {what}",
                                hint="choose another --out, or pass --overwrite to replace it")
    # Same export again, or overwriting: drop the manifest first so nothing lists a file mid-replacement.
    manifest_path.unlink(missing_ok=True)
    if old is not None:
        for artifact in old.artifacts:
            artifact.path.unlink(missing_ok=True)
            etrecord = artifact.details.get("etrecord")
            if etrecord:
                (out_dir / etrecord["path"]).unlink(missing_ok=True)


def _output_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that decide what the files are: how many worker processes made them does not."""
    return {k: v for k, v in config.items() if k not in _EXECUTION_SETTINGS}


def _is_artifact_name(path: Path, arch: str) -> bool:
    return path.is_file() and not path.is_symlink() and path.name.startswith(f"{arch}_") \
        and (path.suffix in EXTENSIONS.values() or path.suffix == ".etrecord")


def _resolve_eval_root(checkpoint: Any, config: ExportConfig) -> Path:
    if config.eval_data is not None:
        return Path(config.eval_data)
    if config.calibration_data is not None:
        return Path(config.calibration_data)
    cfg = checkpoint.config or {}
    nested = cfg.get("data")
    data: Mapping[str, Any] = nested if isinstance(nested, dict) else {}
    for candidate in (cfg.get("eval_data"), cfg.get("data_root"), data.get("eval_root"), data.get("root")):
        if candidate and Path(str(candidate)).exists():
            return Path(str(candidate))
    raise VerificationDataError(
        "no real images to verify the artifacts with: give evaluation data (or calibration data), and the "
        f"checkpoint {checkpoint.path} records no data root that exists here",
        hint="pass --eval-data ROOT (a dataset folder; `emobench data sample --out DIR` writes one)",
    )


def _load_verification(checkpoint: Any, config: ExportConfig) -> ImageSet:
    root = _resolve_eval_root(checkpoint, config)
    split = config.eval_split
    try:
        return _images(checkpoint, root, split, config.eval_images, "evaluation")
    except VerificationDataError:
        if split == "all":
            raise
        log.warning("evaluation data %s has no usable %r split; verifying on all of its images", root, split)
        return _images(checkpoint, root, "all", config.eval_images, "evaluation")


def _load_calibration(checkpoint: Any, config: ExportConfig) -> ImageSet:
    if config.calibration_data is None:
        raise ExportConfigError(
            "static INT8 needs calibration images from the training data, and no calibration data was given",
            hint="pass --calibration-data ROOT, or use --int8-mode dynamic",
        )
    return _images(checkpoint, Path(config.calibration_data), config.calibration_split,
                   config.calibration_images, "calibration")


def _images(checkpoint: Any, root: Path, split: str, count: int, purpose: str) -> ImageSet:
    return load_image_set(root, split=split, count=count, spec=checkpoint.input_spec, purpose=purpose)


def _eager_logits(model, images: ImageSet):
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(images.images.copy())).numpy()


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("emobench", "torch", "executorch", "torchao", "onnx", "onnxruntime", "timm"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            out[dist] = version(dist)
    return out


def find_latest_checkpoint(runs_dir: str | os.PathLike[str]) -> Path:
    """The newest run's ``checkpoint.pt`` under a phase's runs folder (``--latest runs/phase2``).

    Reads the ``latest`` pointer the trainer writes: a ``latest`` symlink to the newest run folder, or a
    ``latest`` text file holding that folder's path (relative to ``runs_dir`` or absolute). Without a
    pointer it defers to ``training.train.latest_checkpoint`` (which also accepts a run folder or the
    runs root and finds the newest finished run).

    Raises:
        ExportConfigError: a pointer naming a folder without ``checkpoint.pt``, or no pointer at all.
        EmobenchError: what ``training.train.latest_checkpoint`` raises when it finds no run.
    """
    runs_dir = Path(runs_dir)
    pointer = runs_dir / "latest"
    if pointer.is_symlink() or pointer.is_dir():
        run = pointer.resolve()
    elif pointer.is_file():
        text = pointer.read_text().strip()
        if not text:
            raise ExportConfigError(f"{pointer} is empty; it should name the newest run folder")
        run = Path(text) if Path(text).is_absolute() else runs_dir / text
        if run.is_file():
            return run
    else:
        try:
            from training.train import latest_checkpoint
        except ImportError:
            raise ExportConfigError(f"{runs_dir} has no 'latest' pointer (symlink or text file)",
                                    hint="train first, or give the checkpoint path instead of --latest") from None
        return Path(latest_checkpoint(runs_dir))
    checkpoint = run / "checkpoint.pt"
    if not checkpoint.is_file():
        raise ExportConfigError(f"{pointer} points to {run}, which holds no checkpoint.pt")
    return checkpoint
