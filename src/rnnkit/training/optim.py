"""The optimizer and learning-rate schedule a TrainConfig names."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Tuple

import torch
from torch import nn

from .config import TrainConfig


def build_optimizer(params: Iterable[nn.Parameter], c: TrainConfig) -> torch.optim.Optimizer:
    """config.optimizer over `params` (the trainable ones) with its lr, betas/momentum and weight decay."""
    params = list(params)
    if c.optimizer == "adam":
        return torch.optim.Adam(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
    if c.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
    if c.optimizer == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    return torch.optim.RMSprop(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, c: TrainConfig,
                    cosine_factor: Callable[[], float]) -> Tuple[Any, bool]:
    """(scheduler or None, whether it is stepped at epoch ends rather than after every optimizer step).

    `cosine_factor()` is the cosine schedule's lr factor now: it follows whichever budget runs out first,
    steps (max_steps) or time (max_minutes), so a time-limited run ends at lr_min on a fast and on a slow
    machine alike. With max_steps only, this is torch's CosineAnnealingLR curve."""
    S = torch.optim.lr_scheduler
    main = None
    if c.schedule == "cosine":
        main = S.LambdaLR(opt, lambda _: cosine_factor())
    elif c.schedule == "step":
        main = S.StepLR(opt, step_size=c.lr_step_size, gamma=c.lr_gamma)
    elif c.schedule == "plateau":
        return S.ReduceLROnPlateau(opt, factor=c.lr_gamma, patience=c.plateau_patience), False
    elif c.schedule == "epoch_decay":
        gamma, after = c.lr_gamma, c.lr_decay_after_epochs
        # stepped once per epoch: epoch e (0-based) runs at lr · gamma^max(0, e − after + 1)
        return S.LambdaLR(opt, lambda e: gamma ** max(0, e - after + 1)), True
    if c.warmup_steps:
        warm = S.LinearLR(opt, start_factor=1.0 / (c.warmup_steps + 1), end_factor=1.0, total_iters=c.warmup_steps)
        main = main or S.ConstantLR(opt, factor=1.0, total_iters=0)
        return S.SequentialLR(opt, [warm, main], milestones=[c.warmup_steps]), False
    return main, False
