"""The learning-rate schedules: `amc` as AMC-grounding's Pretrain.py drives timm's cosine scheduler,
and the default warm-up + per-step cosine."""

from __future__ import annotations

import math

import pytest
import torch

from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.optim import make_scheduler

# AMC configs/Pretrain.yaml: lr 1e-5, min_lr 1e-6, warmup_lr 1e-6, warmup_epochs 20; Pretrain.py step_size 100.
AMC = dict(learning_rate=1e-5, min_learning_rate=1e-6, warmup_lr=1e-6, warmup_epochs=20, warmup_step_size=100,
           schedule="amc")


def rates(config: TrainConfig, steps_per_epoch: int) -> list[float]:
    """The rate each optimizer step runs at, stepping the scheduler after each step as training does."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=config.learning_rate)
    scheduler = make_scheduler(config, optimizer, steps_per_epoch)
    seen = []
    for _ in range(config.max_steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def cosine(epoch: int, epochs: int = 30) -> float:
    return 1e-6 + 0.5 * (1e-5 - 1e-6) * (1 + math.cos(math.pi * epoch / epochs))


@pytest.mark.parametrize("step, expected", [
    (0, 1e-6),  # constructed at warmup_lr
    (100, 1e-6),  # iteration 100 still runs at t = 0: the step to t = 1 comes after its update
    (101, 1e-6 + 1 * 9e-6 / 20),
    (1000, 1e-6 + 9 * 9e-6 / 20),
    (2000, 1e-6 + 19 * 9e-6 / 20),
    (2001, 1e-5),  # t = warmup_epochs: the top of the cosine
    (2499, 1e-5),  # the rest of epoch 0 stays there
    (2500, cosine(1)),  # epoch 1: scheduler.step(1 + 20)
    (2500 * 15 + 7, cosine(15)),  # constant through an epoch
    (2500 * 29 + 2499, cosine(29)),  # the last epoch
])
def test_amc_schedule_gives_pretrain_py_rates_at_chosen_steps(step, expected):
    config = TrainConfig(**AMC, max_steps=30 * 2500)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=config.learning_rate)
    scheduler = make_scheduler(config, optimizer, steps_per_epoch=2500)
    optimizer.step()  # no gradient: a no-op, but the scheduler expects one before its own steps
    for _ in range(step):
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9)


def test_amc_schedule_follows_the_official_loop_step_for_step():
    """Pretrain.py's loop written out (scheduler stepped at the epoch start and every step_size
    iterations of epoch 0), with timm's rule for t: the schedule matches it at every step, including
    an epoch 0 too short to finish the warm-up."""
    steps_per_epoch, epochs, warmup, step_size = 7, 5, 4, 2
    config = TrainConfig(learning_rate=1e-3, min_learning_rate=1e-5, warmup_lr=1e-4, warmup_epochs=warmup,
                         warmup_step_size=step_size, schedule="amc", max_steps=steps_per_epoch * epochs)

    def timm(t: int) -> float:  # CosineLRScheduler._get_lr, warmup_prefix, one cycle
        if t < warmup:
            return 1e-4 + t * (1e-3 - 1e-4) / warmup
        return 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * (t - warmup) / epochs))

    expected, lr = [], timm(0)
    for epoch in range(epochs):
        if epoch > 0:
            lr = timm(epoch + warmup)
        for i in range(steps_per_epoch):
            expected.append(lr)
            if epoch == 0 and i % step_size == 0 and i <= warmup * step_size:
                lr = timm(i // step_size)
    assert rates(config, steps_per_epoch) == pytest.approx(expected, rel=1e-9)
    assert expected[6] < 1e-3  # epoch 0 ended mid warm-up here, as it can in AMC


def test_default_schedule_warms_up_linearly_then_follows_a_cosine_to_the_floor():
    config = TrainConfig(learning_rate=1e-3, min_learning_rate=1e-5, warmup_steps=4, max_steps=14)
    seen = rates(config, steps_per_epoch=3)
    assert seen[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert seen[9] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(seen[3:], seen[4:]))


def test_an_unknown_schedule_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="schedule must be one of warmup-cosine, amc but is 'cosine'"):
        TrainConfig(schedule="cosine")
