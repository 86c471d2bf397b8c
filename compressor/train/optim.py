"""Optimizer, learning-rate schedule and weight EMA.

The schedule is a pure function of the global step (a callable object, so its state is plain
numbers in the checkpoint) which is what makes resume exact: step k gets the same learning rate
whether or not the run was interrupted before it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
from torch import nn

from compressor.train.config import TrainConfig


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Decay conv/linear weights only: decaying BN scales and biases only hurts small models."""
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(cfg: TrainConfig, modules: Iterable[nn.Module]) -> torch.optim.Optimizer:
    groups = param_groups(modules, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


class LrFactor:
    """Multiplier of the base learning rate at a global step: linear warm-up from 10% of the
    base, then cosine / linear decay to `final`, or constant."""

    def __init__(self, total_steps: int, warmup_steps: int, kind: str, final: float) -> None:
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.kind = kind
        self.final = float(final)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return 0.1 + 0.9 * step / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "linear":
            return 1.0 - (1.0 - self.final) * progress
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> LrFactor:
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), max(0, total - 1))
    return LrFactor(total, warmup, cfg.lr_schedule, cfg.lr_final)


def build_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch))


def refresh_schedule(
    scheduler: torch.optim.lr_scheduler.LambdaLR, cfg: TrainConfig, steps_per_epoch: int
) -> None:
    """After loading a scheduler state (which restores the saved factor's fields), follow the
    current config instead, e.g. a resumed run given more epochs. Sets the lr of the next step."""
    factor = lr_factor(cfg, steps_per_epoch)
    scheduler.lr_lambdas = [factor] * len(scheduler.optimizer.param_groups)
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]


class ModelEMA:
    """Exponential moving average of the weights (and float buffers such as BN statistics).

    The decay ramps up as `decay * (1 - exp(-updates / tau))`, so in short runs the average
    follows the recent weights instead of averaging in the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float, tau: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.tau = float(tau)
        self.updates = 0

    def current_decay(self) -> float:
        if self.tau <= 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[name].detach().to(value.dtype), alpha=1.0 - d)
            else:
                value.copy_(source[name])

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
