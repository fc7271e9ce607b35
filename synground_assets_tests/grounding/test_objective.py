"""ITC, ITM with hard negatives, and the AMC margins, on hand-made inputs."""

from __future__ import annotations

import math

import pytest
import torch

from synground_assets.grounding.objective import (
    ContrastiveLoss,
    attention_mask_consistency,
    itm_loss,
    sample_hard_negatives,
)


def box(height, width, y0, y1, x0, x1):
    mask = torch.zeros(height, width)
    mask[y0:y1, x0:x1] = 1
    return mask


def test_amc_is_zero_when_the_map_sits_inside_the_box_with_margins_met():
    mask = torch.stack([box(4, 4, 0, 2, 0, 2), box(4, 4, 1, 4, 2, 4)])
    loss_mean, loss_max = attention_mask_consistency(mask.clone(), mask)
    assert loss_mean == 0 and loss_max == 0
    # Mass outside but under the margins still costs nothing.
    cam = mask + 0.3 * (1 - mask)
    loss_mean, loss_max = attention_mask_consistency(cam, mask)
    assert loss_mean == 0 and loss_max == 0


def test_amc_known_values_for_a_uniform_map():
    mask = torch.stack([box(4, 4, 0, 2, 0, 2)] * 2)
    loss_mean, loss_max = attention_mask_consistency(torch.full((2, 4, 4), 0.5), mask)
    assert loss_mean.item() == pytest.approx(0.1)
    assert loss_max.item() == pytest.approx(0.5)


def test_amc_mean_pools_over_the_batch_and_max_averages_over_samples():
    # Sample 0: 1 pixel inside (value 1), 3 outside (value 0). Sample 1: 3 inside (0), 1 outside (1).
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]])
    cam = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    loss_mean, loss_max = attention_mask_consistency(cam, mask, mean_margin=0.1, max_margin=0.5)
    # Pooled: inside 1/4, outside 1/4 -> 0.1. (Per-sample means would give mean(0, 1.1) = 0.55.)
    assert loss_mean.item() == pytest.approx(0.1)
    # Max: sample 0 relu(0 - 1 + 0.5) = 0, sample 1 relu(1 - 0 + 0.5) = 1.5 -> 0.75.
    assert loss_max.item() == pytest.approx(0.75)


def test_amc_margins_are_configurable():
    mask = box(2, 2, 0, 1, 0, 2)[None]
    cam = torch.tensor([[[0.8, 0.8], [0.6, 0.6]]])
    loss_mean, loss_max = attention_mask_consistency(cam, mask, mean_margin=0.3, max_margin=0.4)
    assert loss_mean.item() == pytest.approx(0.1)
    assert loss_max.item() == pytest.approx(0.2)


def test_amc_gradient_pulls_the_map_into_the_box():
    mask = torch.stack([box(4, 4, 0, 2, 0, 2)])
    cam = torch.full((1, 4, 4), 0.5, requires_grad=True)
    loss_mean, loss_max = attention_mask_consistency(cam, mask)
    (0.2 * loss_mean + 0.8 * loss_max).backward()
    inside, outside = cam.grad[mask.bool()], cam.grad[~mask.bool()]
    assert (inside <= 0).all() and inside.sum() < 0
    assert (outside >= 0).all() and outside.sum() > 0


def test_amc_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        attention_mask_consistency(torch.zeros(1, 4, 4), torch.zeros(1, 8, 8))


def test_itc_is_low_for_aligned_features_and_trains_its_temperature():
    features = torch.eye(4)
    loss_fn = ContrastiveLoss(temperature=0.05)
    loss, logits = loss_fn(features, features, torch.eye(4, dtype=torch.bool))
    assert logits.shape == (4, 4)
    assert loss.item() == pytest.approx(math.log(1 + 3 * math.exp(-20)), abs=1e-6)
    trainable = ContrastiveLoss(temperature=0.1)
    trainable(features, torch.nn.functional.normalize(features + 0.5, dim=1),
              torch.eye(4, dtype=torch.bool))[0].backward()
    assert trainable.log_temperature.grad is not None and trainable.log_temperature.grad != 0
    shuffled, _ = ContrastiveLoss(temperature=0.05)(features, features.roll(1, dims=0), torch.eye(4, dtype=torch.bool))
    assert shuffled > 10


def test_itc_spreads_targets_over_all_positives():
    features = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    positives = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    loss, _ = ContrastiveLoss(temperature=0.01)(features, features, positives)
    # Rows 0 and 1 split their mass evenly over two identical logits: the loss is ln 2 for them.
    assert loss.item() == pytest.approx(2 / 3 * math.log(2), abs=1e-4)


def test_temperature_is_clamped():
    loss_fn = ContrastiveLoss(temperature=5.0)
    assert loss_fn.temperature.item() == pytest.approx(0.5)


def test_hard_negatives_never_pick_a_positive_and_are_seeded():
    logits = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    positives = torch.eye(6, dtype=torch.bool)
    positives[0, 1] = positives[1, 0] = True  # samples 0 and 1 share an image
    for seed in range(20):
        texts, images = sample_hard_negatives(logits, positives, torch.Generator().manual_seed(seed))
        assert not positives[torch.arange(6), texts].any()
        assert not positives[images, torch.arange(6)].any()
    again = [sample_hard_negatives(logits, positives, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(again[0][0], again[1][0]) and torch.equal(again[0][1], again[1][1])


def test_hard_negatives_prefer_the_most_similar_wrong_text():
    logits = torch.full((3, 3), -30.0)
    logits.fill_diagonal_(30.0)
    logits[0, 2] = 29.0
    texts, _ = sample_hard_negatives(logits, torch.eye(3, dtype=torch.bool), torch.Generator().manual_seed(0))
    assert texts[0] == 2


def test_hard_negatives_fall_back_when_everything_matches():
    texts, images = sample_hard_negatives(torch.zeros(3, 3), torch.ones(3, 3, dtype=torch.bool))
    assert (texts != torch.arange(3)).all() and (images != torch.arange(3)).all()
    with pytest.raises(ValueError, match="at least 2"):
        sample_hard_negatives(torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool))


def test_itm_loss_known_values():
    assert itm_loss(torch.zeros(2, 2), torch.zeros(4, 2)).item() == pytest.approx(math.log(2))
    confident = itm_loss(torch.tensor([[-10.0, 10.0]]), torch.tensor([[10.0, -10.0], [10.0, -10.0]]))
    assert confident.item() == pytest.approx(0.0, abs=1e-6)
