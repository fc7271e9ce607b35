"""The optimizer and learning-rate schedule of a fine-tuning run (AMC: AdamW, cosine to a floor)."""

from __future__ import annotations

import math

import torch
from torch import nn

from synground_assets.grounding.config import TrainConfig


def make_optimizer(config: TrainConfig, model: nn.Module, objective: nn.Module) -> torch.optim.AdamW:
    """AdamW. `amc`: ALBEF's `create_optimizer` grouping (timm's add_weight_decay): only 1-d tensors
    and biases are exempt from weight decay, so the 0-d `temp` decays. `itc-itm-amc`: weight
    matrices only decay (biases, norms and its temperature exempt)."""
    named = [(n, p) for n, p in [*model.named_parameters(), *objective.named_parameters()] if p.requires_grad]
    if config.objective == "amc":
        exempt = {n for n, p in named if p.ndim == 1 or n.endswith(".bias")}
    else:
        exempt = {n for n, p in named if p.ndim < 2}
    groups = [
        {"params": [p for n, p in named if n not in exempt], "weight_decay": config.weight_decay},
        {"params": [p for n, p in named if n in exempt], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the learning rate, then cosine down to the floor at max_steps."""
    floor = config.min_learning_rate / config.learning_rate

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
