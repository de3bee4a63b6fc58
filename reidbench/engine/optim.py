"""Optimisers with parameter groups, and warmup + multistep/step/cosine schedules.

Schedules are pure functions of the step (epoch or iteration), wrapped in LambdaLR: resuming
restores the step and therefore exactly the same learning rates.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reidbench.errors import ReidbenchError, UnknownNameError
from reidbench.recipes.schema import OptimSection, ScheduleSection

OPTIMIZERS = ("sgd", "adam", "amsgrad")
SCHEDULES = ("multistep", "step", "cosine", "constant")
WARMUP_METHODS = ("linear", "step")


def build_optimizer(model: nn.Module, optim: OptimSection) -> torch.optim.Optimizer:
    if optim.name not in OPTIMIZERS:
        raise UnknownNameError("optimiser", optim.name, OPTIMIZERS)
    weights, biases = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (biases if name.endswith(".bias") else weights).append(param)
    bias_wd = optim.weight_decay if optim.bias_weight_decay is None else optim.bias_weight_decay
    groups = [{"params": weights, "lr": optim.lr, "weight_decay": optim.weight_decay},
              {"params": biases, "lr": optim.lr * optim.bias_lr_factor, "weight_decay": bias_wd}]
    groups = [g for g in groups if g["params"]]
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov)
    return torch.optim.Adam(groups, lr=optim.lr, amsgrad=optim.name == "amsgrad")


def lr_factor(schedule: ScheduleSection, step: int, total: int, steps_per_epoch: int = 1,
              base_lr: float = 1.0) -> float:
    """The learning-rate multiplier at ``step`` (epochs, or iterations when per_iteration)."""
    unit = steps_per_epoch if schedule.per_iteration else 1
    epoch = step / unit
    if schedule.warmup_epochs and epoch < schedule.warmup_epochs:
        if schedule.warmup_method == "step":  # whole epochs, in steps of warmup_step epochs
            warm = min(1.0, (int(epoch) // schedule.warmup_step + 1) * schedule.warmup_step / schedule.warmup_epochs)
        else:
            alpha = epoch / schedule.warmup_epochs
            warm = schedule.warmup_factor * (1 - alpha) + alpha
    else:
        warm = 1.0
    if schedule.name == "multistep":
        decay = schedule.gamma ** sum(epoch >= m for m in schedule.milestones)
    elif schedule.name == "step":
        decay = schedule.gamma ** int(epoch // schedule.step_size)
    elif schedule.name == "cosine":
        floor = schedule.min_lr / base_lr if base_lr else 0.0
        decay = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))
    else:
        decay = 1.0
    return warm * decay


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: ScheduleSection, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    if schedule.name not in SCHEDULES:
        raise UnknownNameError("schedule", schedule.name, SCHEDULES)
    if schedule.warmup_method not in WARMUP_METHODS:
        raise UnknownNameError("schedule.warmup_method", schedule.warmup_method, WARMUP_METHODS)
    if schedule.warmup_method == "step" and schedule.warmup_step < 1:
        raise ReidbenchError(f"schedule.warmup_step: expected a positive number of epochs, got {schedule.warmup_step}")
    total = epochs * (steps_per_epoch if schedule.per_iteration else 1)
    base = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(schedule, step, total, steps_per_epoch, base))
