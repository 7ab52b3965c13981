"""The training loop: ``train(config) -> TrainResult`` on a laptop, a GPU, or many under DDP.

Per epoch: train, evaluate on the validation split, keep the best weights (by ``config.monitor``),
stop early after ``early_stopping_patience`` epochs without improvement. At the end the best
weights are evaluated on the test split. A run folder ``<out_dir>/<phase>/<run_name>-<arch>/`` holds:

- ``config.yaml``: the resolved config;
- ``checkpoint.pt``: the best weights in the checkpoint contract (``training/checkpoint.py``), with
  optimizer/scheduler state, history and the config;
- ``last.pt``: the full state after the last finished epoch (or step, on preemption) for ``--resume``;
- ``metrics.json``, ``confusion_matrix.png``, ``per_class.png``: test-split evaluation;
- ``tensorboard/``: loss, accuracy, macro F1 and learning rate per epoch.

``<out_dir>/<phase>/latest`` points at the newest finished run (``latest_checkpoint`` follows it).

Determinism: every epoch re-seeds from ``seed + epoch`` and the sampler shuffles with its own seeded
generator, so resuming at an epoch boundary continues exactly; a mid-epoch stop (preemption) saves the
torch RNG state and the step, and the resumed run replays the epoch's loader up to that step (no
model work) before restoring the RNG, which reproduces the uninterrupted run bit for bit on CPU.

Preemption: SIGUSR1 or SIGTERM (Slurm's warning signal, ``scancel``, torchrun) sets a flag; at the
next step every rank agrees to stop, rank 0 writes ``last.pt`` and ``train`` raises
``TrainingPreempted``; the CLI exits with ``REQUEUE_EXIT_CODE`` (75) and the Slurm script requeues.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from emobench_common.errors import EmobenchError
from emobench_common.fileio import atomic_write_json
from training import distributed
from training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_checkpoint_dict,
    make_checkpoint_dict,
    save_checkpoint,
)
from training.config import ConfigError, TrainConfig, save_config
from training.metrics import classification_metrics
from training.models import PHASE1_ARCHS, check_arch, create_model, reset_head

log = logging.getLogger(__name__)

REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; the Slurm scripts requeue on it
LAST_STATE = "last.pt"
BEST_CHECKPOINT = "checkpoint.pt"
METRICS_FILE = "metrics.json"
LATEST_LINK = "latest"


class TrainingError(EmobenchError):
    """A run that cannot start or continue (bad --init-from, nothing to resume, no data)."""


class TrainingPreempted(EmobenchError):
    """The run stopped on a signal after saving its state; start it again with --resume to continue."""

    exit_code = REQUEUE_EXIT_CODE

    def __init__(self, message: str, *, run_dir: Path, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.run_dir = run_dir


class NoRunError(EmobenchError):
    """No finished run (checkpoint) where one was expected."""


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    checkpoint_path: Path
    metrics: dict[str, Any]  # test-split metrics of the best weights, plus best_epoch, history, ...
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False


# ---------------------------------------------------------------------------------------------
# Runs folder helpers
# ---------------------------------------------------------------------------------------------


def _is_finished(run_dir: Path) -> bool:
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
    found = [c for c in p.glob(f"*/{BEST_CHECKPOINT}") if _is_finished(c.parent)]
    found += [c for c in p.glob(f"*/*/{BEST_CHECKPOINT}") if _is_finished(c.parent)]
    if not found:
        raise NoRunError(f"no finished training run under {p}",
                         hint="train one with `emobench train phase2 --data ...`, or give a checkpoint path")
    return max(found, key=lambda c: c.stat().st_mtime).resolve()


def _point_latest(phase_dir: Path, run_dir: Path) -> None:
    """Atomically repoint ``<phase_dir>/latest`` at ``run_dir`` (a relative symlink)."""
    link = phase_dir / LATEST_LINK
    tmp = phase_dir / f".{LATEST_LINK}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(run_dir.name, tmp)
    os.replace(tmp, link)


def _resolve_run_dir(config: TrainConfig) -> tuple[Path, Path | None]:
    """(run folder, state file to resume from or None)."""
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
                                 and not _is_finished(d) and not d.is_symlink()), key=lambda d: d.name)
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


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


class _View(Dataset):
    """Some samples of an ``EmotionDataset`` with a transform of their own."""

    def __init__(self, base, indices: Sequence[int], transform: Callable | None) -> None:
        self.base = base
        self.indices = list(indices)
        self.transform = transform
        self.class_names = base.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = self.indices[i]
        image = self.base.load_image(j)
        return (self.transform(image) if self.transform else image), self.base.samples[j].label

    @property
    def targets(self) -> list[int]:
        return [self.base.samples[j].label for j in self.indices]


def _stratified(labels: Sequence[int], count: int, seed: int) -> list[int]:
    """``count`` indices taken round-robin over classes from seeded per-class shuffles (sorted)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    queues = [list(rng.permutation(v)) for _, v in sorted(by_class.items())]
    out: list[int] = []
    while len(out) < min(count, len(labels)):
        for q in queues:
            if q and len(out) < count:
                out.append(int(q.pop()))
    return sorted(out)


def _load_splits(config: TrainConfig, mean, std) -> tuple[_View, _View, _View]:
    from training.datasets import create_dataset, detect_layout
    from training.transforms import EvalTransform, TrainTransform

    if not config.data_root:
        raise ConfigError("no data root: give --data PATH (or data_root in the config)",
                          hint="`emobench data sample --out data` writes a small sample dataset to try")
    root = Path(config.data_root)
    kind = detect_layout(root) if config.dataset_kind == "auto" else config.dataset_kind
    train_tf = (TrainTransform(image_size=config.image_size, mean=mean, std=std) if config.augment
                else EvalTransform(image_size=config.image_size, mean=mean, std=std))
    eval_tf = EvalTransform(image_size=config.image_size, mean=mean, std=std)
    bad = {"skip_bad": config.skip_bad, "verify_images": config.skip_bad}
    train_ds = create_dataset(root, kind=kind, split="train", class_names=config.classes, **bad)
    train_idx = list(range(len(train_ds)))
    val_ds = None
    val_split = config.val_split
    if val_split == "auto":
        if kind == "fer2013_csv":
            val_split = "val"
        elif kind in ("fer2013_folder", "rafdb_folder"):
            probe = create_dataset(root, kind=kind, split="val", class_names=config.classes, allow_empty_classes=True,
                                   **bad)
            val_split = "val" if probe.split == "val" else "holdout"
        else:
            val_split = "holdout"
    if val_split == "holdout":
        held = set(_stratified(train_ds.targets, max(len(config.classes), round(config.val_fraction * len(train_ds))),
                               config.seed + 1))
        val_ds, val_idx = train_ds, sorted(held)
        train_idx = [i for i in train_idx if i not in held]
        log.info("validation: %d images held out of %s's train split (%.0f%%, stratified)", len(val_idx), root,
                 100 * config.val_fraction)
    else:
        val_ds = create_dataset(root, kind=kind, split=val_split, class_names=config.classes, allow_empty_classes=True,
                                **bad)
        val_idx = list(range(len(val_ds)))
    test_ds = create_dataset(root, kind=kind, split=config.test_split, class_names=config.classes,
                             allow_empty_classes=True, **bad)
    test_idx = list(range(len(test_ds)))
    if config.limit_train_images:
        train_idx = [train_idx[i] for i in _stratified([train_ds.samples[j].label for j in train_idx],
                                                        config.limit_train_images, config.seed)]
    if config.limit_eval_images:
        val_idx = [val_idx[i] for i in _stratified([val_ds.samples[j].label for j in val_idx],
                                                    config.limit_eval_images, config.seed)]
        test_idx = [test_idx[i] for i in _stratified([test_ds.samples[j].label for j in test_idx],
                                                      config.limit_eval_images, config.seed)]
    return _View(train_ds, train_idx, train_tf), _View(val_ds, val_idx, eval_tf), _View(test_ds, test_idx, eval_tf)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loader(dataset: Dataset, *, batch_size: int, shuffle: bool, dist: distributed.DistInfo, seed: int,
            epoch: int, workers: int, pin_memory: bool, drop_last: bool = False) -> DataLoader:
    # A DistributedSampler even in one process: the shuffle order then equals DDP's union of shards.
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=shuffle,
                                 seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=drop_last, worker_init_fn=_seed_worker,
                      generator=torch.Generator().manual_seed(seed + epoch), persistent_workers=False)


# ---------------------------------------------------------------------------------------------
# Model, optimizer, state
# ---------------------------------------------------------------------------------------------


def _device(config: TrainConfig, dist: distributed.DistInfo) -> torch.device:
    if config.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={config.device!r} but CUDA is not available here", hint="use --set device=cpu")
    if device.type == "cuda" and dist.enabled and device.index is None:
        device = torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    return device


def _model_kwargs(config: TrainConfig) -> dict[str, Any]:
    return {"drop_rate": config.drop_rate, **config.model_kwargs}


def _build_model(config: TrainConfig, *, resuming: bool) -> nn.Module:
    check_arch(config.arch)
    fresh_weights = not resuming and not config.init_from
    model = create_model(config.arch, num_classes=len(config.classes),
                         pretrained=config.pretrained and fresh_weights,
                         pretrained_file=config.pretrained_file if fresh_weights else None, **_model_kwargs(config))
    if config.init_from and not resuming:
        _init_from(model, config)
    return model


def _init_from(model: nn.Module, config: TrainConfig) -> None:
    """Start from another run's weights; a different class count gets a new head (shared classes keep their rows)."""
    path = Path(config.init_from)
    if path.is_dir():
        path = latest_checkpoint(path)
    ckpt = load_checkpoint(path)
    if ckpt.arch != config.arch:
        raise TrainingError(
            f"--init-from {path} holds a {ckpt.arch} model but this run trains {config.arch}",
            hint=f"use a {config.arch} checkpoint, or --set arch={ckpt.arch}",
        )
    if dict(ckpt.model_kwargs) != _model_kwargs(config) and {k: v for k, v in ckpt.model_kwargs.items()
                                                           if k != "drop_rate"} != dict(config.model_kwargs):
        raise TrainingError(f"--init-from {path} was built with model_kwargs {dict(ckpt.model_kwargs)}, "
                            f"this run with {_model_kwargs(config)}")
    source = ckpt.build_model()  # raises CheckpointError when the weights do not fit its own arch/classes
    if ckpt.num_classes != len(config.classes):
        old_head = {k: v.clone() for k, v in source.get_classifier().state_dict().items()}
        reset_head(source, len(config.classes))
        new_head = source.get_classifier()
        shared = [c for c in config.classes if c in ckpt.class_names]
        with torch.no_grad():
            for name in shared:
                src, dst = ckpt.class_names.index(name), config.classes.index(name)
                new_head.weight[dst] = old_head["weight"][src]
                if new_head.bias is not None and "bias" in old_head:
                    new_head.bias[dst] = old_head["bias"][src]
        log.info("--init-from %s: head rebuilt for %d classes (%d -> %d; rows of %s kept)", path,
                 len(config.classes), ckpt.num_classes, len(config.classes), ", ".join(shared) or "none")
    elif tuple(ckpt.class_names) != tuple(config.classes):
        raise TrainingError(
            f"--init-from {path} has classes {', '.join(ckpt.class_names)} but this run {', '.join(config.classes)}",
            hint="use the same classes in the same order, or a checkpoint with a different class count (head rebuilt)",
        )
    model.load_state_dict(source.state_dict())


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.min_lr)
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size_epochs, gamma=config.gamma)
    return None


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------

_STOP = threading.Event()
_STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGUSR1", None), signal.SIGTERM) if s is not None)


def _on_signal(signum, frame) -> None:  # noqa: ARG001
    if not _STOP.is_set():
        log.warning("received %s: saving the state at the next step, then exiting for a requeue",
                    signal.Signals(signum).name)
    _STOP.set()


@contextlib.contextmanager
def _stop_on_signals():
    _STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------------------------------------
# Inference (shared with evaluate.py)
# ---------------------------------------------------------------------------------------------


def run_inference(model: nn.Module, loader: DataLoader, device: torch.device, *, amp: bool = False,
                  dist: distributed.DistInfo | None = None) -> tuple[list[int], list[int], float]:
    """(y_true, y_pred, mean cross-entropy) over the loader's dataset, gathered across ranks.

    Under DDP each rank runs its shard (``DistributedSampler`` pads shards with repeats); the
    predictions are gathered and de-duplicated by dataset index, so the metrics are exactly those of
    one process over the whole split.
    """
    dist = dist or distributed.DistInfo()
    model.eval()
    indices = list(iter(loader.sampler)) if loader.sampler is not None else list(range(len(loader.dataset)))
    preds: list[int] = []
    trues: list[int] = []
    losses: list[float] = []
    with torch.inference_mode():
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp and device.type == "cuda"):
                logits = model(x)
            losses += nn.functional.cross_entropy(logits.float(), y, reduction="none").tolist()
            preds += logits.argmax(1).tolist()
            trues += y.tolist()
    merged: dict[int, tuple[int, int, float]] = {}
    for part in distributed.all_gather_objects(dist, list(zip(indices, trues, preds, losses, strict=True))):
        for i, t, p, loss in part:
            merged[i] = (t, p, loss)
    order = sorted(merged)
    y_true = [merged[i][0] for i in order]
    y_pred = [merged[i][1] for i in order]
    mean_loss = float(np.mean([merged[i][2] for i in order])) if order else math.nan
    return y_true, y_pred, mean_loss


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


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _better(value: float, best: float | None, monitor: str) -> bool:
    if best is None:
        return True
    return value < best if monitor == "loss" else value > best


class _Progress:
    """A rich progress bar on an interactive terminal (rank 0), nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                console=Console(stderr=True), transient=True)

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)

    def start(self, description: str, total: int, completed: int = 0):
        return self.bar.add_task(description, total=total, completed=completed, info="") if self.bar else None

    def advance(self, task, info: str) -> None:
        if self.bar and task is not None:
            self.bar.update(task, advance=1, info=info)

    def stop(self, task) -> None:
        if self.bar and task is not None:
            self.bar.remove_task(task)


def train(config: TrainConfig, *, on_step: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train one model as ``config`` says; see the module docstring for what the run folder holds.

    Args:
        config: the resolved training config.
        on_step: called as ``on_step(epoch, step)`` after every optimizer step (tests, instrumentation).

    Returns:
        The run folder, the best checkpoint and its test-split metrics.

    Raises:
        ConfigError, DatasetError, UnknownArchError, PretrainedWeightsError, TrainingError: bad input.
        TrainingPreempted: a stop signal arrived; the state is saved and ``--resume`` continues.
    """
    device_type = "cuda" if (config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())) else "cpu"
    dist = distributed.init(device_type)
    try:
        with _stop_on_signals():
            return _train(config, dist, on_step)
    finally:
        distributed.close(dist)


def _train(config: TrainConfig, dist: distributed.DistInfo, on_step) -> TrainResult:
    t_start = time.perf_counter()
    check_arch(config.arch)
    device = _device(config, dist)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    use_amp = config.amp and device.type == "cuda"

    run_dir, resume_state = distributed.broadcast_object(dist, _resolve_run_dir(config) if dist.is_main else None)
    phase_dir = run_dir.parent
    state = load_checkpoint_dict(resume_state) if resume_state else None
    if state is not None and state.get("finished"):
        log.info("run %s already finished; nothing to resume", run_dir)
        return _finished_result(run_dir)
    if state is not None and state.get("arch") != config.arch:
        raise TrainingError(f"cannot resume {resume_state}: it trains {state.get('arch')}, the config says {config.arch}")

    _seed_all(config.seed)
    model = _build_model(config, resuming=state is not None)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean") or (0.485, 0.456, 0.406))
    std = tuple(cfg.get("std") or (0.229, 0.224, 0.225))
    train_ds, val_ds, test_ds = _load_splits(config, mean, std)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        log.info("run %s: %s on %s, %d train / %d val / %d test images, %d classes, device %s x%d",
                 run_dir, config.arch, config.data_root, len(train_ds), len(val_ds), len(test_ds),
                 len(config.classes), device, dist.world_size)

    model.to(device)
    optimizer = _optimizer(model, config)
    scheduler = _scheduler(optimizer, config)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict[str, Any]] = []
    start_epoch, start_step = 0, 0
    best_metric: float | None = None
    best_epoch, bad_epochs = -1, 0
    best_state: dict[str, torch.Tensor] | None = None
    rng_state = None
    if state is not None:
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        if scheduler is not None and state.get("scheduler_state"):
            scheduler.load_state_dict(state["scheduler_state"])
        if state.get("scaler_state"):
            scaler.load_state_dict(state["scaler_state"])
        history = list(state.get("history") or [])
        start_epoch, start_step = int(state["epoch"]), int(state.get("step_in_epoch") or 0)
        best_metric, best_epoch = state.get("best_metric"), int(state.get("best_epoch", -1))
        bad_epochs = int(state.get("epochs_without_improvement") or 0)
        rng_state = state.get("torch_rng_state")
        if (run_dir / BEST_CHECKPOINT).is_file():
            best_state = load_checkpoint(run_dir / BEST_CHECKPOINT).model_state  # type: ignore[assignment]
        log.info("resuming %s at epoch %d, step %d", run_dir, start_epoch + 1, start_step)

    if dist.enabled:
        if config.sync_batchnorm and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    workers = config.workers
    pin = device.type == "cuda"
    per_rank = math.ceil(len(train_ds) / dist.world_size)
    drop_last = per_rank > config.batch_size  # never a ragged last batch (BatchNorm on one image fails)
    writer = None
    if dist.is_main and config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))

    def snapshot(epoch: int, step: int, *, finished: bool = False, partial=(0.0, 0, 0)) -> dict[str, Any]:
        return make_checkpoint_dict(
            model=model, arch=config.arch, class_names=config.classes,
            input_size=(3, config.image_size, config.image_size), mean=mean, std=std,
            model_kwargs=_model_kwargs(config), optimizer_state=optimizer.state_dict(),
            scheduler_state=scheduler.state_dict() if scheduler is not None else None,
            scaler_state=scaler.state_dict() if use_amp else None, epoch=epoch, best_metric=best_metric,
            best_metric_name=f"val_{config.monitor}", history=history, config=config.to_dict(),
            extra={"step_in_epoch": step, "best_epoch": best_epoch, "epochs_without_improvement": bad_epochs,
                   "torch_rng_state": torch.get_rng_state(), "finished": finished, "world_size": dist.world_size,
                   "epoch_partial_sums": list(partial)},
        )

    def preempt(epoch: int, step: int, partial=(0.0, 0, 0)) -> TrainingPreempted:
        partial = _reduce_sums(dist, device, list(partial))  # every rank gets here together
        if dist.is_main:
            save_checkpoint(run_dir / LAST_STATE, snapshot(epoch, step, partial=partial))
        distributed.barrier(dist)
        return TrainingPreempted(
            f"stopped by a signal at epoch {epoch + 1}, step {step}; state saved to {run_dir / LAST_STATE}",
            run_dir=run_dir, hint=f"continue with --resume {run_dir}",
        )

    stopped_early = False
    with _Progress(config.progress and dist.is_main) as progress:
        for epoch in range(start_epoch, config.epochs):
            t_epoch = time.perf_counter()
            _seed_all(config.seed + epoch + 1000 * dist.rank)
            loader = _loader(train_ds, batch_size=config.batch_size, shuffle=True, dist=dist, seed=config.seed,
                             epoch=epoch, workers=workers, pin_memory=pin, drop_last=drop_last)
            steps = len(loader) if config.max_steps_per_epoch is None else min(len(loader), config.max_steps_per_epoch)
            skip = start_step if epoch == start_epoch else 0
            model.train()
            task = progress.start(f"{config.arch} epoch {epoch + 1}/{config.epochs}", steps, completed=skip)
            loss_sum, seen, correct = 0.0, 0, 0
            if skip and state is not None and dist.is_main:  # all ranks' sums of the interrupted epoch
                loss_sum, seen, correct = state.get("epoch_partial_sums") or (0.0, 0, 0)
            for step, (x, y) in enumerate(loader):
                if step >= steps:
                    break
                if step < skip:  # replay the loader (and its RNG use) up to where the saved run stopped
                    if step == skip - 1 and rng_state is not None:
                        torch.set_rng_state(rng_state)
                    continue
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                loss, logits = _train_step(model, x, y, criterion, optimizer, scaler, config, use_amp)
                loss_sum += loss * y.numel()
                seen += y.numel()
                correct += int((logits.argmax(1) == y).sum())
                progress.advance(task, f"loss {loss:.3f}")
                if on_step is not None:
                    on_step(epoch, step)
                if distributed.any_rank(dist, _STOP.is_set()) and step + 1 < steps:
                    raise preempt(epoch, step + 1, (loss_sum, seen, correct))
            progress.stop(task)
            if scheduler is not None:
                scheduler.step()
            totals = _reduce_sums(dist, device, [loss_sum, seen, correct])
            val_true, val_pred, val_loss = run_inference(model, _loader(
                val_ds, batch_size=config.batch_size * 2, shuffle=False, dist=dist, seed=config.seed, epoch=0,
                workers=workers, pin_memory=pin), device, amp=use_amp, dist=dist)
            val = classification_metrics(val_true, val_pred, config.classes)
            val["loss"] = val_loss
            row = {
                "epoch": epoch + 1,
                "train_loss": totals[0] / max(totals[1], 1), "train_accuracy": totals[2] / max(totals[1], 1),
                "val_loss": val_loss, "val_accuracy": val["accuracy"], "val_f1_macro": val["f1_macro"],
                "val_f1_weighted": val["f1_weighted"], "lr": optimizer.param_groups[0]["lr"],
                "time_s": time.perf_counter() - t_epoch,
            }
            history.append(row)
            improved = _better(val[config.monitor], best_metric, config.monitor)
            if improved:
                best_metric, best_epoch, bad_epochs = float(val[config.monitor]), epoch + 1, 0
                best_state = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
            else:
                bad_epochs += 1
            patience = config.early_stopping_patience
            stopped_early = patience is not None and bad_epochs >= patience and epoch + 1 < config.epochs
            if dist.is_main:
                log.info("%s epoch %d/%d: train loss %.4f acc %.3f | val loss %.4f acc %.3f macro-F1 %.3f%s (%.1f s)",
                         config.arch, epoch + 1, config.epochs, row["train_loss"], row["train_accuracy"], val_loss,
                         val["accuracy"], val["f1_macro"], " *" if improved else "", row["time_s"])
                if writer is not None:
                    for key, value in row.items():
                        if key != "epoch":
                            writer.add_scalar(key.replace("_", "/", 1), value, epoch + 1)
                    writer.flush()
                if improved:
                    save_checkpoint(run_dir / BEST_CHECKPOINT, snapshot(epoch + 1, 0))
                save_checkpoint(run_dir / LAST_STATE, snapshot(epoch + 1, 0))
            distributed.barrier(dist)
            if stopped_early:
                log.info("early stopping: no val %s improvement for %d epochs (best %.4f at epoch %d)",
                         config.monitor, bad_epochs, best_metric, best_epoch)
                break
            if distributed.any_rank(dist, _STOP.is_set()) and epoch + 1 < config.epochs:
                raise preempt(epoch + 1, 0)

    if writer is not None:
        writer.close()
    if best_state is None:
        raise TrainingError(f"run {run_dir} finished no epoch", hint="check epochs and the data")
    _unwrap(model).load_state_dict(best_state)
    test_true, test_pred, test_loss = run_inference(model, _loader(
        test_ds, batch_size=config.batch_size * 2, shuffle=False, dist=dist, seed=config.seed, epoch=0,
        workers=workers, pin_memory=pin), device, amp=use_amp, dist=dist)
    metrics = classification_metrics(test_true, test_pred, config.classes)
    metrics.update({
        "loss": test_loss, "split": config.test_split, "arch": config.arch, "phase": config.phase,
        "data_root": str(config.data_root), "image_size": config.image_size, "best_epoch": best_epoch,
        f"best_val_{config.monitor}": best_metric, "epochs_run": len(history), "stopped_early": stopped_early,
        "train_images": len(train_ds), "val_images": len(val_ds), "world_size": dist.world_size,
        "train_time_s": time.perf_counter() - t_start, "history": history,
    })
    checkpoint_path = run_dir / BEST_CHECKPOINT
    if dist.is_main:
        best = load_checkpoint_dict(checkpoint_path)
        best.update({"history": history, "test_metrics": {k: v for k, v in metrics.items() if k != "history"}})
        save_checkpoint(checkpoint_path, best)
        write_evaluation(metrics, run_dir, title=f"{config.arch} [{config.test_split}]")
        save_checkpoint(run_dir / LAST_STATE, snapshot(len(history), 0, finished=True))
        _point_latest(phase_dir, run_dir)
        log.info("%s: test accuracy %.4f, macro F1 %.4f (best epoch %d) -> %s", config.arch, metrics["accuracy"],
                 metrics["f1_macro"], best_epoch, checkpoint_path)
    distributed.barrier(dist)
    return TrainResult(run_dir=run_dir, checkpoint_path=checkpoint_path, metrics=metrics, history=history,
                       best_epoch=best_epoch, stopped_early=stopped_early)


def _train_step(model, x, y, criterion, optimizer, scaler, config: TrainConfig, use_amp: bool) -> tuple[float, torch.Tensor]:
    mixing = config.mixup_alpha > 0 and x.shape[0] > 1
    if mixing:
        lam = float(torch.distributions.Beta(config.mixup_alpha, config.mixup_alpha).sample())
        perm = torch.randperm(x.shape[0], device=x.device)
        x = lam * x + (1 - lam) * x[perm]
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
        logits = model(x)
        loss = criterion(logits, y) if not mixing else lam * criterion(logits, y) + (1 - lam) * criterion(logits, y[perm])
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if config.grad_clip_norm:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach()), logits.detach()


def _reduce_sums(dist: distributed.DistInfo, device: torch.device, values: list[float]) -> list[float]:
    if not dist.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device if dist.backend == "nccl" else "cpu")
    torch.distributed.all_reduce(t)
    return t.tolist()


def _finished_result(run_dir: Path) -> TrainResult:
    import json

    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    return TrainResult(run_dir=run_dir, checkpoint_path=run_dir / BEST_CHECKPOINT, metrics=metrics,
                       history=metrics.get("history", []), best_epoch=int(metrics.get("best_epoch", 0)),
                       stopped_early=bool(metrics.get("stopped_early")))


def phase1_archs(config: TrainConfig, only: str | int | None = None) -> list[str]:
    """The Phase 1 candidates to train: all of ``config.archs`` (default the five), or one by index or name."""
    archs = list(config.archs or PHASE1_ARCHS)
    if only is None or only == "":
        return archs
    if isinstance(only, int) or str(only).isdigit():
        i = int(only)
        if not 0 <= i < len(archs):
            raise ConfigError(f"--only {i}: Phase 1 has {len(archs)} models (index 0..{len(archs) - 1})",
                              hint=f"the models: {', '.join(archs)}")
        return [archs[i]]
    if only not in archs:
        check_arch(str(only))
        raise ConfigError(f"--only {only}: not one of this config's Phase 1 models ({', '.join(archs)})")
    return [str(only)]


def train_phase1(config: TrainConfig, *, only: str | int | None = None) -> list[TrainResult]:
    """Train the Phase 1 candidates one after another (or just ``only``); every run shares one name prefix."""
    archs = phase1_archs(config, only)
    for arch in archs:
        check_arch(arch)
    prefix = config.run_name or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return [train(config.replace(arch=arch, run_name=prefix)) for arch in archs]


__all__ = [
    "REQUEUE_EXIT_CODE", "CheckpointError", "NoRunError", "TrainResult", "TrainingError", "TrainingPreempted",
    "latest_checkpoint", "phase1_archs", "run_inference", "train", "train_phase1", "write_evaluation",
]
