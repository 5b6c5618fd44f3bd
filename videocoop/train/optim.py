"""The optimiser and the learning-rate schedule (CoOp's recipe)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..utils.errors import VideoCoopError
from .config import OPTIMIZERS, TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainable parameters, with weight decay on matrices only: not on biases, norms or
    the temporal module's position embedding (the usual convention; decaying a LayerNorm
    gain or a position table toward zero only hurts). The context vectors are decayed, as
    in CoOp. Empty groups are left out (the context alone is one group, as before)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith("pos_embedding") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (CoOp) or AdamW over the trainable parameters only (:func:`param_groups`)."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise VideoCoopError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """CoOp's schedule, stepped per batch: ``warmup_epochs`` at a constant ``warmup_lr``,
    then a cosine from ``lr`` to 0 over the remaining epochs."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = max(cfg.epochs * steps_per_epoch - warmup, 1)
    warm_factor = cfg.warmup_lr / cfg.lr if cfg.lr > 0 else 0.0

    def factor(step: int) -> float:
        if step < warmup:
            return warm_factor
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total) / total))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


__all__ = ["make_optimizer", "make_scheduler", "param_groups"]
