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

The parts: ``training.runs`` (run folders, ``latest_checkpoint``), ``training.loaders`` (splits,
seeded loaders), ``training.optim`` (optimizer, schedule), ``training.preemption`` (signals),
``training.engine`` (``train_one_epoch``, ``validate``); this module wires them into ``train``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader

from training import distributed
from training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_checkpoint_dict,
    make_checkpoint_dict,
    save_checkpoint,
)
from training.config import ConfigError, TrainConfig, save_config
from training.engine import EpochSums, Progress, reduce_sums, run_inference, train_one_epoch, validate
from training.loaders import DatasetView, load_splits, make_loader, seed_all
from training.models import PHASE1_ARCHS, check_arch, create_model, reset_head
from training.optim import Scheduler, create_optimizer, create_scheduler
from training.preemption import REQUEUE_EXIT_CODE, TrainingPreempted, stop_on_signals, stop_requested
from training.qat import QUANTIZER, QatModel, build_qat_model, prepare_qat
from training.runs import (
    BEST_CHECKPOINT,
    LAST_STATE,
    METRICS_FILE,
    NoRunError,
    TrainingError,
    latest_checkpoint,
    point_latest,
    resolve_run_dir,
    write_evaluation,
)

log = logging.getLogger(__name__)


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
# Device and model
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
    if config.phase == "qat":
        raise TrainingError("internal: a QAT run builds its model with _build_qat_models")
    fresh_weights = not resuming and not config.init_from
    model = create_model(config.arch, num_classes=len(config.classes),
                         pretrained=config.pretrained and fresh_weights,
                         pretrained_file=config.pretrained_file if fresh_weights else None, **_model_kwargs(config))
    if config.init_from and not resuming:
        _init_from(model, config, Path(config.init_from))
    return model


def _init_from(model: nn.Module, config: TrainConfig, path: Path) -> None:
    """Start from another run's weights; a different class count gets a new head (shared classes keep their rows)."""
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
        old_head = {k: v.clone() for k, v in _classifier(source).state_dict().items()}
        reset_head(source, len(config.classes))
        new_head = _classifier(source)
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


def _build_qat_models(config: TrainConfig, *, resuming: bool) -> tuple[QatModel, nn.Module]:
    """The QAT phase's student (the prepared graph) and teacher (the FP32 model of ``init_from``, frozen).

    Both start from the ``init_from`` weights; resuming, the student's state comes from ``last.pt`` next.
    """
    assert config.init_from
    teacher = create_model(config.arch, num_classes=len(config.classes), pretrained=False, **_model_kwargs(config))
    _init_from(teacher, config, Path(config.init_from))
    shape = (3, config.image_size, config.image_size)
    if resuming:  # a prepared graph with sized observers, for last.pt's state to be loaded into
        student = build_qat_model(teacher, shape)
    else:
        student = prepare_qat(copy.deepcopy(teacher), shape)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


def _init_qat_ranges(student: QatModel, teacher: nn.Module, train_ds: DatasetView, val_ds: DatasetView,
                     config: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Calibrate the QAT graph's activation ranges on ``qat.init_images`` training images (eval transform).

    The images are spread evenly over the train split and preprocessed like the validation images (no
    augmentation), as export's static calibration does; every rank computes the same ranges.
    """
    from training.quant_observers import OBSERVERS

    settings = config.qat
    count = min(settings.init_images, len(train_ds))
    chosen = [train_ds.indices[int(i * len(train_ds) / count)] for i in range(count)]
    calibration = DatasetView(train_ds.base, chosen, val_ds.transform)
    images = torch.stack([calibration[i][0] for i in range(len(calibration))]).to(device)
    observers = OBSERVERS if settings.init_observer == "auto" else (settings.init_observer,)
    started = time.perf_counter()
    record = student.init_ranges(teacher, images, tuple(observers))
    log.info("QAT ranges initialised by calibration: %s observer (%s), %d images, %.1f s", record["observer"],
             ", ".join(f"{t['observer']} {t['top1_agreement']:.3f}" for t in record["trials"]), count,
             time.perf_counter() - started)
    return record


def _classifier(model: nn.Module) -> Any:
    """The classification head of a timm model (``get_classifier`` is timm's, not ``nn.Module``'s)."""
    return cast(Any, model).get_classifier()


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (the model itself when not wrapped)."""
    return cast(nn.Module, model.module) if hasattr(model, "module") else model


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _better(value: float, best: float | None, monitor: str) -> bool:
    if best is None:
        return True
    return value < best if monitor == "loss" else value > best


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
        with stop_on_signals():
            return _train(config, dist, on_step)
    finally:
        distributed.close(dist)


def _train(config: TrainConfig, dist: distributed.DistInfo,
           on_step: Callable[[int, int], None] | None) -> TrainResult:
    t_start = time.perf_counter()
    check_arch(config.arch)
    qat = config.phase == "qat"
    if qat:  # the qat section says how QAT trains; fake quantization stays in float32 (no AMP)
        config = config.replace(epochs=config.qat.epochs, lr=config.qat.lr, amp=False)
    device = _device(config, dist)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    use_amp = config.amp and device.type == "cuda"

    run_dir, resume_state = distributed.broadcast_object(dist, resolve_run_dir(config) if dist.is_main else None)
    state = load_checkpoint_dict(resume_state) if resume_state else None
    if state is not None and state.get("finished"):
        log.info("run %s already finished; nothing to resume", run_dir)
        return _finished_result(run_dir)
    if state is not None and state.get("arch") != config.arch:
        raise TrainingError(f"cannot resume {resume_state}: it trains {state.get('arch')}, the config says {config.arch}")

    seed_all(config.seed)
    teacher: nn.Module | None = None
    model: nn.Module
    if qat:
        model, teacher = _build_qat_models(config, resuming=state is not None)
        cfg = getattr(teacher, "pretrained_cfg", None) or {}
    else:
        model = _build_model(config, resuming=state is not None)
        cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean") or (0.485, 0.456, 0.406))
    std = tuple(cfg.get("std") or (0.229, 0.224, 0.225))
    train_ds, val_ds, test_ds = load_splits(config, mean, std)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        log.info("run %s: %s on %s, %d train / %d val / %d test images, %d classes, device %s x%d",
                 run_dir, config.arch, config.data_root, len(train_ds), len(val_ds), len(test_ds),
                 len(config.classes), device, dist.world_size)

    model.to(device)
    optimizer = create_optimizer(model, config)
    loop = _Loop(config, dist, device, run_dir, model, optimizer, create_scheduler(optimizer, config),
                 torch.amp.GradScaler("cuda", enabled=use_amp), use_amp, mean, std)
    if teacher is not None:
        loop.teacher = teacher.to(device)
    if state is not None:
        loop.restore(state)
    elif qat and config.qat.init_observer != "none":
        loop.range_init = _init_qat_ranges(cast(QatModel, model), cast(nn.Module, loop.teacher), train_ds,
                                           val_ds, config, device)
    if dist.enabled:
        if config.sync_batchnorm and device.type == "cuda":
            loop.model = nn.SyncBatchNorm.convert_sync_batchnorm(loop.model)
        loop.model = nn.parallel.DistributedDataParallel(
            loop.model, device_ids=[device.index] if device.type == "cuda" else None)

    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    loader_args: dict[str, Any] = {"dist": dist, "seed": config.seed, "workers": config.workers,
                                   "pin_memory": device.type == "cuda"}
    drop_last = math.ceil(len(train_ds) / dist.world_size) > config.batch_size  # never a ragged last batch
    writer = _tensorboard(run_dir) if dist.is_main and config.tensorboard else None
    stopped_early = False
    val_loader = make_loader(val_ds, batch_size=config.batch_size * 2, shuffle=False, epoch=0, **loader_args)
    with Progress(config.progress and dist.is_main) as progress:
        for epoch in range(loop.start_epoch, config.epochs):
            t_epoch = time.perf_counter()
            if qat:
                cast(QatModel, _unwrap(loop.model)).apply_schedule(config.qat, epoch)
            seed_all(config.seed + epoch + 1000 * dist.rank)
            loader = make_loader(train_ds, batch_size=config.batch_size, shuffle=True, epoch=epoch,
                                 drop_last=drop_last, **loader_args)
            steps = len(loader) if config.max_steps_per_epoch is None else min(len(loader), config.max_steps_per_epoch)
            resumed = epoch == loop.start_epoch and loop.start_step > 0  # the epoch a preempted run stopped in
            done = train_one_epoch(loop.model, criterion, loop.optimizer, loader, device, config=config, epoch=epoch,
                                   steps=steps, scaler=loop.scaler, use_amp=use_amp, dist=dist,
                                   skip_steps=loop.start_step if resumed else 0, rng_state=loop.rng_state,
                                   sums=loop.start_sums if resumed else EpochSums(), progress=progress,
                                   on_step=on_step, teacher=loop.teacher,
                                   distill=config.qat if loop.teacher is not None else None)
            if done.stopped_at_step is not None:
                raise loop.preempt(epoch, done.stopped_at_step, done.sums)
            if loop.scheduler is not None:
                loop.scheduler.step()
            totals = reduce_sums(dist, device, done.sums.as_list())
            val = validate(loop.model, val_loader, device, config.classes, amp=use_amp, dist=dist,
                           reference=loop.teacher_predictions(val_loader))
            stopped_early = loop.end_epoch(epoch, totals, val, time.perf_counter() - t_epoch, writer)
            if stopped_early:
                break
            if distributed.any_rank(dist, stop_requested()) and epoch + 1 < config.epochs:
                raise loop.preempt(epoch + 1, 0)

    if writer is not None:
        writer.close()
    metrics = loop.test(make_loader(test_ds, batch_size=config.batch_size * 2, shuffle=False, epoch=0, **loader_args))
    if qat:
        metrics["qat"] = {**config.qat.to_dict(), "range_init": loop.range_init, "init_from": str(config.init_from),
                          "quantizer": QUANTIZER}
    metrics.update({
        "split": config.test_split, "arch": config.arch, "phase": config.phase,
        "data_root": str(config.data_root), "image_size": config.image_size, "best_epoch": loop.best_epoch,
        f"best_val_{config.monitor}": loop.best_metric, "epochs_run": len(loop.history),
        "stopped_early": stopped_early, "train_images": len(train_ds), "val_images": len(val_ds),
        "world_size": dist.world_size, "train_time_s": time.perf_counter() - t_start, "history": loop.history,
    })
    loop.finish(metrics)
    return TrainResult(run_dir=run_dir, checkpoint_path=run_dir / BEST_CHECKPOINT, metrics=metrics,
                       history=loop.history, best_epoch=loop.best_epoch, stopped_early=stopped_early)


def _tensorboard(run_dir: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / "tensorboard"))


@dataclass
class _Loop:
    """What a run carries from epoch to epoch: the model and its optimiser, the history and the best so far.

    ``snapshot`` is what ``last.pt`` (and ``checkpoint.pt``) hold; ``restore`` reads it back on ``--resume``.
    """

    config: TrainConfig
    dist: distributed.DistInfo
    device: torch.device
    run_dir: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    scaler: torch.amp.GradScaler
    use_amp: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    start_step: int = 0
    start_sums: EpochSums = field(default_factory=EpochSums)
    rng_state: torch.Tensor | None = None
    best_metric: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    teacher: nn.Module | None = None  # QAT: the FP32 model whose answers the student learns
    range_init: dict[str, Any] | None = None  # QAT: how the activation ranges were calibrated
    _teacher_preds: dict[int, list[int]] = field(default_factory=dict)

    def teacher_predictions(self, loader: DataLoader) -> list[int] | None:
        """QAT: the teacher's top-1 classes over ``loader``'s dataset (computed once per loader), else None."""
        if self.teacher is None:
            return None
        key = id(loader.dataset)
        if key not in self._teacher_preds:
            _, preds, _ = run_inference(self.teacher, loader, self.device, dist=self.dist)
            self._teacher_preds[key] = preds
        return self._teacher_preds[key]

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a saved state: weights, optimiser, schedule, history, and where the run stopped."""
        _unwrap(self.model).load_state_dict(state["model_state"])  # QatModel's own load keeps observer versions
        self.optimizer.load_state_dict(state["optimizer_state"])
        if self.scheduler is not None and state.get("scheduler_state"):
            self.scheduler.load_state_dict(state["scheduler_state"])
        if state.get("scaler_state"):
            self.scaler.load_state_dict(state["scaler_state"])
        self.history = list(state.get("history") or [])
        self.start_epoch, self.start_step = int(state["epoch"]), int(state.get("step_in_epoch") or 0)
        if self.dist.is_main:  # all ranks' sums of the interrupted epoch
            self.start_sums = EpochSums(*(state.get("epoch_partial_sums") or (0.0, 0, 0)))
        self.best_metric, self.best_epoch = state.get("best_metric"), int(state.get("best_epoch", -1))
        self.bad_epochs = int(state.get("epochs_without_improvement") or 0)
        self.rng_state = state.get("torch_rng_state")
        self.range_init = (state.get("qat") or {}).get("range_init")
        if (self.run_dir / BEST_CHECKPOINT).is_file():
            self.best_state = dict(load_checkpoint(self.run_dir / BEST_CHECKPOINT).model_state)
        log.info("resuming %s at epoch %d, step %d", self.run_dir, self.start_epoch + 1, self.start_step)

    def snapshot(self, epoch: int, step: int, *, finished: bool = False,
                 partial: EpochSums = EpochSums()) -> dict[str, Any]:  # noqa: B008 - frozen
        config = self.config
        return make_checkpoint_dict(
            model=self.model, arch=config.arch, class_names=config.classes,
            input_size=(3, config.image_size, config.image_size), mean=self.mean, std=self.std,
            model_kwargs=_model_kwargs(config), optimizer_state=self.optimizer.state_dict(),
            scheduler_state=self.scheduler.state_dict() if self.scheduler is not None else None,
            scaler_state=self.scaler.state_dict() if self.use_amp else None, epoch=epoch,
            best_metric=self.best_metric, best_metric_name=f"val_{config.monitor}", history=self.history,
            config=config.to_dict(),
            extra={"step_in_epoch": step, "best_epoch": self.best_epoch, "epochs_without_improvement": self.bad_epochs,
                   "torch_rng_state": torch.get_rng_state(), "finished": finished,
                   "world_size": self.dist.world_size, "epoch_partial_sums": partial.as_list(),
                   **self._qat_fields()},
        )

    def _qat_fields(self) -> dict[str, Any]:
        """A QAT checkpoint's own fields: the FP32 teacher's weights and how the run quantizes."""
        if self.teacher is None:
            return {}
        from emobench_common.fileio import sha256_file

        init = Path(str(self.config.init_from))
        init_file = latest_checkpoint(init) if init.is_dir() else init
        return {"fp32_model_state": {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()},
                "qat": {"settings": self.config.qat.to_dict(), "range_init": self.range_init,
                        "init_from": str(init_file),
                        "init_from_sha256": sha256_file(init_file), "quantizer": QUANTIZER,
                        "input_shape": [3, self.config.image_size, self.config.image_size]}}

    def preempt(self, epoch: int, step: int, sums: EpochSums = EpochSums()) -> TrainingPreempted:  # noqa: B008
        """Save the state to resume at (epoch, step) and return the error to raise; every rank calls it."""
        partial = EpochSums(*reduce_sums(self.dist, self.device, sums.as_list()))
        if self.dist.is_main:
            save_checkpoint(self.run_dir / LAST_STATE, self.snapshot(epoch, step, partial=partial))
        distributed.barrier(self.dist)
        return TrainingPreempted(
            f"stopped by a signal at epoch {epoch + 1}, step {step}; state saved to {self.run_dir / LAST_STATE}",
            run_dir=self.run_dir, hint=f"continue with --resume {self.run_dir}",
        )

    def end_epoch(self, epoch: int, totals: list[float], val: dict[str, Any], seconds: float, writer: Any) -> bool:
        """Record an epoch: history, best weights, log, TensorBoard, checkpoints. Returns whether to stop early."""
        config = self.config
        row = {
            "epoch": epoch + 1,
            "train_loss": totals[0] / max(totals[1], 1), "train_accuracy": totals[2] / max(totals[1], 1),
            "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_f1_macro": val["f1_macro"],
            "val_f1_weighted": val["f1_weighted"], "lr": self.optimizer.param_groups[0]["lr"], "time_s": seconds,
        }
        if "agreement" in val:
            row["val_agreement"] = val["agreement"]
        self.history.append(row)
        improved = _better(val[config.monitor], self.best_metric, config.monitor)
        if improved:
            self.best_metric, self.best_epoch, self.bad_epochs = float(val[config.monitor]), epoch + 1, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in _unwrap(self.model).state_dict().items()}
        else:
            self.bad_epochs += 1
        patience = config.early_stopping_patience
        stop = patience is not None and self.bad_epochs >= patience and epoch + 1 < config.epochs
        if self.dist.is_main:
            agree = f" agreement with FP32 {val['agreement']:.3f}" if "agreement" in val else ""
            log.info("%s epoch %d/%d: train loss %.4f acc %.3f | val loss %.4f acc %.3f macro-F1 %.3f%s%s (%.1f s)",
                     config.arch, epoch + 1, config.epochs, row["train_loss"], row["train_accuracy"], val["loss"],
                     val["accuracy"], val["f1_macro"], agree, " *" if improved else "", row["time_s"])
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch":
                        writer.add_scalar(key.replace("_", "/", 1), value, epoch + 1)
                writer.flush()
            if improved:
                save_checkpoint(self.run_dir / BEST_CHECKPOINT, self.snapshot(epoch + 1, 0))
            save_checkpoint(self.run_dir / LAST_STATE, self.snapshot(epoch + 1, 0))
        distributed.barrier(self.dist)
        if stop:
            log.info("early stopping: no val %s improvement for %d epochs (best %.4f at epoch %d)",
                     config.monitor, self.bad_epochs, self.best_metric, self.best_epoch)
        return stop

    def test(self, loader: DataLoader) -> dict[str, Any]:
        """The best weights' metrics over ``loader`` (the test split)."""
        if self.best_state is None:
            raise TrainingError(f"run {self.run_dir} finished no epoch", hint="check epochs and the data")
        _unwrap(self.model).load_state_dict(self.best_state)
        return validate(self.model, loader, self.device, self.config.classes, amp=self.use_amp,
                        dist=self.dist, reference=self.teacher_predictions(loader))

    def finish(self, metrics: dict[str, Any]) -> None:
        """Rank 0 adds the test metrics to the best checkpoint, writes the evaluation, marks the run finished."""
        config, checkpoint_path = self.config, self.run_dir / BEST_CHECKPOINT
        if self.dist.is_main:
            best = load_checkpoint_dict(checkpoint_path)
            best.update({"history": self.history,
                         "test_metrics": {k: v for k, v in metrics.items() if k != "history"}})
            save_checkpoint(checkpoint_path, best)
            write_evaluation(metrics, self.run_dir, title=f"{config.arch} [{config.test_split}]")
            save_checkpoint(self.run_dir / LAST_STATE, self.snapshot(len(self.history), 0, finished=True))
            point_latest(self.run_dir.parent, self.run_dir)
            log.info("%s: test accuracy %.4f, macro F1 %.4f (best epoch %d) -> %s", config.arch, metrics["accuracy"],
                     metrics["f1_macro"], self.best_epoch, checkpoint_path)
        distributed.barrier(self.dist)


def _finished_result(run_dir: Path) -> TrainResult:
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
