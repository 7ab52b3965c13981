"""One epoch of training and one pass of evaluation, as plain functions (torchvision references style).

``train_one_epoch`` runs the optimizer over one epoch's loader and returns the epoch's sums; when a
stop signal arrives it returns early with the step to resume at, and the caller saves the state.
``validate`` runs a model over a loader and returns the classification metrics plus the mean loss.
Nothing here saves files, picks devices or builds models.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from training import distributed
from training.config import TrainConfig
from training.metrics import classification_metrics
from training.preemption import stop_requested
from training.qat import QatSettings, agreement, distillation_loss


class Progress:
    """A rich progress bar on an interactive terminal (rank 0), nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                console=Console(stderr=True), transient=True)

    def __enter__(self) -> Progress:
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.bar:
            self.bar.__exit__(exc_type, exc, tb)

    def start(self, description: str, total: int, completed: int = 0) -> Any:
        return self.bar.add_task(description, total=total, completed=completed, info="") if self.bar else None

    def advance(self, task: Any, info: str) -> None:
        if self.bar and task is not None:
            self.bar.update(task, advance=1, info=info)

    def stop(self, task: Any) -> None:
        if self.bar and task is not None:
            self.bar.remove_task(task)


@dataclass(frozen=True)
class EpochSums:
    """This rank's running sums over an epoch's steps (``loss_sum`` is summed per image).

    The counts are floats once summed over ranks (``reduce_sums``), ints in one process.
    """

    loss_sum: float = 0.0
    seen: float = 0
    correct: float = 0

    def as_list(self) -> list[float]:
        return [self.loss_sum, self.seen, self.correct]


@dataclass(frozen=True)
class EpochResult:
    """What ``train_one_epoch`` did: the sums, and the step to resume at when a stop signal cut it short."""

    sums: EpochSums
    stopped_at_step: int | None = None


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, config: TrainConfig,
               use_amp: bool, *, teacher: nn.Module | None = None,
               distill: QatSettings | None = None) -> tuple[float, torch.Tensor]:
    """One optimizer step on a batch (mixup, autocast, gradient clipping as ``config`` says).

    With a ``teacher`` (QAT), the loss is ``training.qat.distillation_loss`` against its logits on the
    same (mixed) batch, weighted by ``distill``; the hard-label part mixes targets as usual.

    Returns:
        The batch's loss and the (detached) logits.
    """
    mixing = config.mixup_alpha > 0 and x.shape[0] > 1
    if mixing:
        lam = float(torch.distributions.Beta(config.mixup_alpha, config.mixup_alpha).sample())
        perm = torch.randperm(x.shape[0], device=x.device)
        x = lam * x + (1 - lam) * x[perm]
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
        logits = model(x)

        def label_loss() -> torch.Tensor:  # the labels' loss, mixed as the inputs were
            return criterion(logits, y) if not mixing else lam * criterion(logits, y) + (1 - lam) * criterion(logits, y[perm])

        if teacher is not None and distill is not None:
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = distillation_loss(logits, teacher_logits, label_loss, distill)
        else:
            loss = label_loss()
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if config.grad_clip_norm:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach()), logits.detach()


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    device: torch.device,
    *,
    config: TrainConfig,
    epoch: int,
    steps: int,
    scaler: torch.amp.GradScaler,
    use_amp: bool,
    dist: distributed.DistInfo,
    skip_steps: int = 0,
    rng_state: torch.Tensor | None = None,
    sums: EpochSums = EpochSums(),  # noqa: B008 - frozen
    progress: Progress | None = None,
    on_step: Callable[[int, int], None] | None = None,
    teacher: nn.Module | None = None,
    distill: QatSettings | None = None,
) -> EpochResult:
    """Train ``model`` over the first ``steps`` batches of ``loader``.

    Args:
        skip_steps: resume mid-epoch: the loader is replayed (no model work) up to this step, where the
            torch RNG state ``rng_state`` saved at the stop is restored, so the rest of the epoch draws
            the same random numbers as an uninterrupted run.
        sums: the sums the interrupted epoch had reached (resuming), else zeros.
        on_step: called as ``on_step(epoch, step)`` after every optimizer step.
        teacher, distill: QAT's distillation (see ``train_step``).

    Returns:
        The epoch's sums, and ``stopped_at_step`` (the step to resume at) when a stop signal arrived on
        any rank before the last step; the caller saves the state then.
    """
    model.train()
    task = progress.start(f"{config.arch} epoch {epoch + 1}/{config.epochs}", steps, completed=skip_steps) \
        if progress is not None else None
    loss_sum, seen, correct = sums.loss_sum, sums.seen, sums.correct
    for step, (x, y) in enumerate(loader):
        if step >= steps:
            break
        if step < skip_steps:  # replay the loader (and its RNG use) up to where the saved run stopped
            if step == skip_steps - 1 and rng_state is not None:
                torch.set_rng_state(rng_state)
            continue
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        loss, logits = train_step(model, x, y, criterion, optimizer, scaler, config, use_amp,
                                  teacher=teacher, distill=distill)
        loss_sum += loss * y.numel()
        seen += y.numel()
        correct += int((logits.argmax(1) == y).sum())
        if progress is not None:
            progress.advance(task, f"loss {loss:.3f}")
        if on_step is not None:
            on_step(epoch, step)
        if distributed.any_rank(dist, stop_requested()) and step + 1 < steps:
            return EpochResult(EpochSums(loss_sum, seen, correct), stopped_at_step=step + 1)
    if progress is not None:
        progress.stop(task)
    return EpochResult(EpochSums(loss_sum, seen, correct))


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


def validate(model: nn.Module, loader: DataLoader, device: torch.device, class_names: Sequence[str], *,
             amp: bool = False, dist: distributed.DistInfo | None = None,
             reference: Sequence[int] | None = None) -> dict[str, Any]:
    """``classification_metrics`` of ``model`` over the loader's dataset, plus ``loss`` (mean cross-entropy).

    With ``reference`` (another model's top-1 classes over the same images, in dataset order), also
    ``agreement``: the share of images where ``model`` gives the same class (QAT vs its FP32 teacher).
    """
    y_true, y_pred, loss = run_inference(model, loader, device, amp=amp, dist=dist)
    metrics = classification_metrics(y_true, y_pred, class_names)
    metrics["loss"] = loss
    if reference is not None:
        metrics["agreement"] = agreement(y_pred, list(reference))
    return metrics


def reduce_sums(dist: distributed.DistInfo, device: torch.device, values: list[float]) -> list[float]:
    """Element-wise sums of ``values`` over all ranks (the values themselves in one process)."""
    if not dist.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device if dist.backend == "nccl" else "cpu")
    torch.distributed.all_reduce(t)
    return t.tolist()
