"""Optimisation: the optimizer and the learning-rate schedule a config asks for.

Weight decay applies to weight matrices and convolution kernels only; biases and normalisation
parameters (anything of one dimension) are not decayed.
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import TrainConfig

Scheduler = torch.optim.lr_scheduler.LRScheduler


def create_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD (Nesterov momentum) over ``model``'s trainable parameters, as ``config.optimizer`` says."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)


def create_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Scheduler | None:
    """The per-epoch schedule: cosine annealing to ``min_lr``, step decay, or none (constant rate)."""
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.min_lr)
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size_epochs, gamma=config.gamma)
    return None
