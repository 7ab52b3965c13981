"""train_one_epoch and validate as plain functions: the sums, the stop signal, the metrics."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from torch.utils.data import TensorDataset

from tests.training._helpers import tiny_config
from training import distributed
from training.engine import EpochSums, train_one_epoch, validate
from training.loaders import make_loader, stratified_indices
from training.models import create_model
from training.optim import create_optimizer
from training.preemption import stop_on_signals


def _setup(tmp_path):
    config = tiny_config(tmp_path, tmp_path, mixup_alpha=0.0, classes=("angry", "happy", "sad"))
    torch.manual_seed(0)
    x = torch.randn(24, 3, 32, 32)
    y = torch.arange(24) % 3
    loader = make_loader(TensorDataset(x, y), batch_size=8, shuffle=True, dist=distributed.DistInfo(), seed=0,
                         epoch=0, workers=0, pin_memory=False)
    model = create_model("test_efficientnet", num_classes=3)
    return config, loader, model, create_optimizer(model, config)


def test_an_epoch_adds_up_and_a_stop_signal_ends_it_at_the_next_step(tmp_path):
    config, loader, model, optimizer = _setup(tmp_path)
    common = dict(config=config, epoch=0, scaler=torch.amp.GradScaler("cuda", enabled=False), use_amp=False,
                  dist=distributed.DistInfo())
    criterion = torch.nn.CrossEntropyLoss()
    steps: list[int] = []
    done = train_one_epoch(model, criterion, optimizer, loader, torch.device("cpu"), steps=3,
                           on_step=lambda e, s: steps.append(s), **common)
    assert done.stopped_at_step is None and steps == [0, 1, 2]
    assert done.sums.seen == 24 and 0 <= done.sums.correct <= 24 and done.sums.loss_sum > 0
    # Resuming at step 2 with the sums of steps 0-1: only step 2 runs, and its images add to those sums.
    resumed = train_one_epoch(model, criterion, optimizer, loader, torch.device("cpu"), steps=3, skip_steps=2,
                              sums=EpochSums(1.0, 16, 5), **common)
    assert resumed.sums.seen == 24 and resumed.sums.correct >= 5
    with stop_on_signals():
        stopped = train_one_epoch(model, criterion, optimizer, loader, torch.device("cpu"), steps=3,
                                  on_step=lambda e, s: os.kill(os.getpid(), signal.SIGUSR1), **common)
    assert stopped.stopped_at_step == 1 and stopped.sums.seen == 8


def test_validate_gives_the_metrics_of_the_whole_split(tmp_path):
    config, loader, model, _ = _setup(tmp_path)
    metrics = validate(model, loader, torch.device("cpu"), config.classes)
    assert metrics["num_samples"] == 24
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0
    assert sum(map(sum, metrics["confusion_matrix"])) == 24


@pytest.mark.parametrize("count", [3, 7, 30])
def test_stratified_indices_take_every_class_in_turn(count):
    labels = [0] * 10 + [1] * 5 + [2] * 2
    picked = stratified_indices(labels, count, seed=1)
    assert picked == sorted(set(picked)) and len(picked) == min(count, len(labels))
    by_class = [sum(1 for i in picked if labels[i] == c) for c in range(3)]
    assert by_class == {3: [1, 1, 1], 7: [3, 2, 2], 30: [10, 5, 2]}[count]
    assert stratified_indices(labels, count, seed=1) == picked
