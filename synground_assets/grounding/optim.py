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


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer,
                   steps_per_epoch: int = 1) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of each optimizer step as a function of the step alone (so a resumed run
    continues exactly): `config.schedule`'s rule, `steps_per_epoch` optimizer steps to an epoch."""
    if config.schedule == "amc":
        def factor(step: int) -> float:
            return amc_learning_rate(config, step, steps_per_epoch) / config.learning_rate
    else:
        def factor(step: int) -> float:
            return warmup_cosine_factor(config, step)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_cosine_factor(config: TrainConfig, step: int) -> float:
    """Linear warm-up to the learning rate, then cosine down to the floor at max_steps (a factor of
    the learning rate)."""
    floor = config.min_learning_rate / config.learning_rate
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def amc_learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """AMC-grounding's rate for optimizer step `step` (0-based), as its Pretrain.py drives timm's
    CosineLRScheduler (scheduler/scheduler_factory.py:25-40: t_initial = epochs, lr_min = min_lr,
    warmup_lr_init = warmup_lr, warmup_t = warmup_epochs, cycle_limit 1, t in epochs):
    - epoch 0 starts at `warmup_lr` (cosine_lr.py:63-65 sets it at construction); after the update
      of iteration i, when i % step_size == 0 and i <= warmup_epochs * step_size, the scheduler steps
      to t = i // step_size (Pretrain.py:52-53, 101-102), so iteration i > 0 runs at
      t = min((i - 1) // step_size, warmup_epochs);
    - epoch e > 0 runs at t = e + warmup_epochs (Pretrain.py:180-181).
    The epochs are those `max_steps` spans: ceil(max_steps / steps_per_epoch)."""
    steps_per_epoch = max(1, steps_per_epoch)
    epoch, iteration = divmod(step, steps_per_epoch)
    if epoch == 0:
        t = 0 if iteration == 0 else min((iteration - 1) // config.warmup_step_size, config.warmup_epochs)
    else:
        t = epoch + config.warmup_epochs
    return timm_cosine_learning_rate(config, t, epochs=math.ceil(config.max_steps / steps_per_epoch))


def timm_cosine_learning_rate(config: TrainConfig, t: int, epochs: int) -> float:
    """timm's CosineLRScheduler._get_lr (AMC scheduler/cosine_lr.py:69-96) with warmup_prefix, t_mul 1,
    decay_rate 1 and one cycle: linear from warmup_lr over warmup_epochs, then cosine over `epochs`
    from the learning rate to min_learning_rate, which it keeps after the cycle."""
    if t < config.warmup_epochs:
        return config.warmup_lr + t * (config.learning_rate - config.warmup_lr) / config.warmup_epochs
    t -= config.warmup_epochs
    if t >= epochs:  # past the one cycle (cycle_limit 1)
        return config.min_learning_rate
    floor = config.min_learning_rate
    return floor + 0.5 * (config.learning_rate - floor) * (1 + math.cos(math.pi * t / epochs))
