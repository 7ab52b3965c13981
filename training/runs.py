"""Run folders: where a training run lives, how ``--resume`` finds it, and what it leaves behind.

A run folder ``<out_dir>/<phase>/<run_name>-<arch>/`` holds ``config.yaml``, ``checkpoint.pt`` (the
best weights), ``last.pt`` (the state to resume from), ``metrics.json`` and the test-split plots, and
``tensorboard/``. ``<out_dir>/<phase>/latest`` points at the newest finished run.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
from pathlib import Path
from typing import Any

from emobench_common.errors import EmobenchError
from emobench_common.fileio import atomic_write_json
from training.config import TrainConfig

log = logging.getLogger(__name__)

LAST_STATE = "last.pt"
BEST_CHECKPOINT = "checkpoint.pt"
METRICS_FILE = "metrics.json"
LATEST_LINK = "latest"


class TrainingError(EmobenchError):
    """A run that cannot start or continue (bad --init-from, nothing to resume, no data)."""


class NoRunError(EmobenchError):
    """No finished run (checkpoint) where one was expected."""


def is_finished(run_dir: Path) -> bool:
    """Whether a run folder holds a finished run (its test metrics and best checkpoint)."""
    return (run_dir / METRICS_FILE).is_file() and (run_dir / BEST_CHECKPOINT).is_file()


def latest_checkpoint(runs_dir: str | os.PathLike[str]) -> Path:
    """The newest finished checkpoint under ``runs_dir``.

    ``runs_dir`` may be a phase folder (``runs/phase2``: follows its ``latest`` pointer), a run folder,
    a checkpoint file, or the runs root (``runs``: Phase 2's latest, else Phase 1's, else the newest).

    Raises:
        NoRunError: nothing finished there.
    """
    p = Path(runs_dir)
    if p.is_file():
        return p
    for candidate in (p / LATEST_LINK / BEST_CHECKPOINT, p / BEST_CHECKPOINT,
                      p / "phase2" / LATEST_LINK / BEST_CHECKPOINT, p / "phase1" / LATEST_LINK / BEST_CHECKPOINT):
        if candidate.is_file():
            return candidate.resolve()
    found = [c for c in p.glob(f"*/{BEST_CHECKPOINT}") if is_finished(c.parent)]
    found += [c for c in p.glob(f"*/*/{BEST_CHECKPOINT}") if is_finished(c.parent)]
    if not found:
        raise NoRunError(f"no finished training run under {p}",
                         hint="train one with `emobench train phase2 --data ...`, or give a checkpoint path")
    return max(found, key=lambda c: c.stat().st_mtime).resolve()


def point_latest(phase_dir: Path, run_dir: Path) -> None:
    """Atomically repoint ``<phase_dir>/latest`` at ``run_dir`` (a relative symlink)."""
    link = phase_dir / LATEST_LINK
    tmp = phase_dir / f".{LATEST_LINK}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(run_dir.name, tmp)
    os.replace(tmp, link)


def resolve_run_dir(config: TrainConfig) -> tuple[Path, Path | None]:
    """The run folder of ``config`` and the state file to resume from (None for a new run).

    ``config.resume``: a run folder or state file; ``"auto"`` for the run named ``run_name`` or else the
    newest unfinished run of the arch; empty for a new folder (a suffix ``-2``, ``-3`` ... when taken).

    Raises:
        TrainingError: an explicit resume target holds no state.
    """
    phase_dir = Path(config.out_dir) / config.phase
    if config.resume and config.resume != "auto":
        target = Path(config.resume)
        state = target / LAST_STATE if target.is_dir() else target
        if not state.is_file():
            raise TrainingError(f"nothing to resume at {config.resume}: {state} does not exist",
                                hint="give a run folder holding last.pt, or --resume alone for the newest run")
        return state.parent, state
    if config.resume == "auto":
        if config.run_name:
            run_dir = phase_dir / f"{config.run_name}-{config.arch}"
            if (run_dir / LAST_STATE).is_file():
                return run_dir, run_dir / LAST_STATE
        else:
            candidates = sorted((d for d in phase_dir.glob(f"*-{config.arch}") if (d / LAST_STATE).is_file()
                                 and not is_finished(d) and not d.is_symlink()), key=lambda d: d.name)
            if candidates:
                return candidates[-1], candidates[-1] / LAST_STATE
        log.info("--resume: no unfinished %s run of %s under %s; starting a new one", config.phase, config.arch, phase_dir)
    name = config.run_name or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = phase_dir / f"{name}-{config.arch}"
    n = 2
    while run_dir.exists() and any(run_dir.iterdir()):
        run_dir = phase_dir / f"{name}-{config.arch}-{n}"
        n += 1
    return run_dir, None


def write_evaluation(metrics: dict[str, Any], out_dir: Path, *, title: str = "") -> dict[str, Path]:
    """metrics.json, confusion_matrix.png and per_class.png in ``out_dir``."""
    from training.plots import plot_confusion_matrix, plot_per_class

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": atomic_write_json(out_dir / METRICS_FILE, metrics),
        "confusion_matrix": plot_confusion_matrix(metrics["confusion_matrix"], metrics["class_names"],
                                                  out_dir / "confusion_matrix.png",
                                                  title=f"{title} confusion matrix (row-normalised)".strip()),
        "per_class": plot_per_class(metrics, out_dir / "per_class.png", title=f"{title} per-class metrics".strip()),
    }
    return paths
