"""The fine-tuning objective `itc-itm-amc`: ITC + ITM (in-batch hard negatives) + AMC, one module
(BLIP's and the shapes world's; ALBEF's default is `amc`, grounding/amc.py).

- ITC: image-text contrastive loss over the global batch (every rank's samples) with its own
  learnable temperature (the BLIP retrieval model has none); several texts may match one image, so
  targets are spread over all positives (same image or same phrase), as in BLIP's retrieval
  fine-tuning.
- ITM: matched pairs against one hard negative text per image and one hard negative image per
  text, sampled in proportion to the ITC similarity (ALBEF).
- AMC (attention mask consistency): on the GradCAM map and the box mask of each pair,
  L_mean = max(0, mean(cam outside) - mean(cam inside) + 0.1), means pooled over the whole batch,
  L_max  = mean over samples of max(0, max(cam outside) - max(cam inside) + 0.5).

`GroundingObjective(model, batch, generator)` is one training step's losses; `TrainingModule`
joins model and an objective into the one module DistributedDataParallel wraps.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import synground_assets.grounding.distributed as distributed
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.gradcam import cross_attention_gradcam, upsample_cam
from synground_assets.grounding.loader import LoadedBatch
from synground_assets.grounding.model import GroundingModel

INITIAL_TEMPERATURE = 0.07  # ALBEF / BLIP
TEMPERATURE_RANGE = (0.001, 0.5)  # ALBEF clamps its temperature to this range


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE with a learnable temperature (stored as its log, clamped on use)."""

    def __init__(self, temperature: float = INITIAL_TEMPERATURE):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    @property
    def temperature(self) -> torch.Tensor:
        low, high = TEMPERATURE_RANGE
        return self.log_temperature.exp().clamp(low, high)

    def forward(
        self,
        image_feat: torch.Tensor,
        text_feat: torch.Tensor,
        positives: torch.Tensor,
        all_image_feat: torch.Tensor | None = None,
        all_text_feat: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_feat, text_feat: (b, E) L2-normalised, this rank's samples; all_image_feat,
        all_text_feat: (B, E), the global batch (default: this rank's, B = b); positives: (b, B)
        bool, True where sample i matches sample j of the global batch (a symmetric relation, the
        diagonal at least). Each local image is contrasted with every text of the global batch and
        each local text with every image (ALBEF / BLIP's global negatives). Returns (loss, this
        rank's image-to-text logits (b, B))."""
        all_image_feat = image_feat if all_image_feat is None else all_image_feat
        all_text_feat = text_feat if all_text_feat is None else all_text_feat
        logits_i2t = image_feat @ all_text_feat.t() / self.temperature  # (b, B)
        logits_t2i = text_feat @ all_image_feat.t() / self.temperature  # (b, B)
        targets = positives.to(logits_i2t.dtype)
        targets = targets / targets.sum(dim=1, keepdim=True)
        loss_i2t = -(F.log_softmax(logits_i2t, dim=1) * targets).sum(dim=1).mean()
        loss_t2i = -(F.log_softmax(logits_t2i, dim=1) * targets).sum(dim=1).mean()
        return (loss_i2t + loss_t2i) / 2, logits_i2t


def sample_hard_negatives(
    logits_i2t: torch.Tensor, positives: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image a negative text, for each text a negative image, drawn with probability
    softmax(similarity) over the non-matching ones. Returns two (B,) index tensors.

    A row with no non-matching candidate (every text of the batch matches) falls back to any
    other sample, so the batch keeps its shape.
    """
    with torch.no_grad():
        batch = logits_i2t.shape[0]
        if batch < 2:
            raise ValueError(f"hard negatives need a batch of at least 2 but it is {batch}")
        others = ~torch.eye(batch, dtype=torch.bool, device=logits_i2t.device)
        candidates = ~positives
        candidates = torch.where(candidates.any(dim=1, keepdim=True), candidates, others)
        candidates_t2i = ~positives.t()
        candidates_t2i = torch.where(candidates_t2i.any(dim=1, keepdim=True), candidates_t2i, others)
        weights_i2t = F.softmax(logits_i2t.float(), dim=1) * candidates
        weights_t2i = F.softmax(logits_i2t.t().float(), dim=1) * candidates_t2i
        # A softmax can underflow to zero on every candidate; then draw uniformly among them.
        weights_i2t = torch.where(weights_i2t.sum(1, keepdim=True) > 0, weights_i2t, candidates.float())
        weights_t2i = torch.where(weights_t2i.sum(1, keepdim=True) > 0, weights_t2i, candidates_t2i.float())
        negative_texts = torch.multinomial(weights_i2t, 1, generator=generator).squeeze(1)  # (B,)
        negative_images = torch.multinomial(weights_t2i, 1, generator=generator).squeeze(1)  # (B,)
    return negative_texts, negative_images


def itm_loss(positive_logits: torch.Tensor, negative_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, 2) matched-pair logits (label 1) and (N, 2) negative logits (label 0)."""
    logits = torch.cat([positive_logits, negative_logits], dim=0)
    labels = torch.cat([
        torch.ones(len(positive_logits), dtype=torch.long, device=logits.device),
        torch.zeros(len(negative_logits), dtype=torch.long, device=logits.device),
    ])
    return F.cross_entropy(logits, labels)


def attention_mask_consistency(
    cam: torch.Tensor,
    mask: torch.Tensor,
    mean_margin: float = 0.1,
    max_margin: float = 0.5,
    sum_over_batch: Callable[[torch.Tensor], torch.Tensor] = lambda sums: sums,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_mean, L_max) for maps `cam` (B, H, W) in [0, 1] and 0/1 box masks `mask` (B, H, W).

    Max-inside and max-outside are taken on cam * mask and cam * (1 - mask), as AMC does: the map
    is non-negative, so this is the masked maximum, and 0 on an empty side. L_mean pools its sums
    over the batch; `sum_over_batch` adds the other ranks' sums (differentiably) when the batch is
    split over ranks, so L_mean is the global batch's.
    """
    if cam.shape != mask.shape:
        raise ValueError(f"cam {tuple(cam.shape)} and mask {tuple(mask.shape)} must have one shape")
    mask = mask.to(cam.dtype)
    inside, outside = cam * mask, cam * (1 - mask)  # (B, H, W)
    sums = sum_over_batch(torch.stack([inside.sum(), mask.sum(), outside.sum(), (1 - mask).sum()]))
    mean_inside = sums[0] / sums[1].clamp(min=1)
    mean_outside = sums[2] / sums[3].clamp(min=1)
    loss_mean = F.relu(mean_outside - mean_inside + mean_margin)
    max_inside = inside.flatten(1).amax(dim=1)  # (B,)
    max_outside = outside.flatten(1).amax(dim=1)  # (B,)
    loss_max = F.relu(max_outside - max_inside + max_margin).mean()
    return loss_mean, loss_max


def pad_text(ids: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, T) -> (b, length) with pad id 0 and mask 0: every rank's text the same width, to gather."""
    extra = length - ids.shape[1]
    return F.pad(ids, (0, extra)), F.pad(mask, (0, extra))


class GroundingObjective(nn.Module):
    """The losses of one step, with the loss's own parameters (the ITC temperature) and weights."""

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config
        self.contrastive = ContrastiveLoss()

    @property
    def temperature(self) -> float:
        return self.contrastive.temperature.item()

    def forward(self, model: GroundingModel, batch: LoadedBatch, generator: torch.Generator,
                forward_index: int = 0) -> dict[str, torch.Tensor]:
        """The losses of this rank's share of a global batch; "loss" is their weighted sum. Across
        ranks: ITC features and ITM negatives are gathered with gradient, L_mean's sums are summed.
        (`forward_index`, the run's count of forward passes, is what other objectives schedule by.)"""
        config, inputs = self.config, batch.inputs
        # 0. Text padded to the global batch's longest, so rows can be gathered from other ranks.
        width = int(distributed.gather(torch.tensor([inputs.input_ids.shape[1]], device=inputs.input_ids.device)).max())
        ids, text_mask = pad_text(inputs.input_ids, inputs.attention_mask, width)  # (b, T)
        inputs = dataclasses.replace(inputs, input_ids=ids, attention_mask=text_mask)
        # 1. Matched pairs through the fusion encoder, with the GradCAM map when AMC is on.
        if config.uses_amc:
            explained = cross_attention_gradcam(model, inputs, config.gradcam_layer, create_graph=True)
            image_embeds, positive_logits, cam = explained.image_embeds, explained.itm_logits, explained.cam
        else:
            image_embeds = model.encode_image(inputs.pixel_values)  # (b, 1+P, D)
            positive_logits, _ = model.itm_logits(image_embeds, ids, text_mask)  # (b, 2)
        # 2. ITC on the unimodal features, against the global batch.
        image_feat, text_feat = model.contrastive_features(image_embeds, ids, text_mask)  # (b, E) x 2
        all_image_feat, all_text_feat = (distributed.gather_with_grad(image_feat),
                                         distributed.gather_with_grad(text_feat))  # (B, E)
        image_ids, phrase_keys = distributed.gather(batch.image_ids), distributed.gather(batch.phrase_keys)  # (B,)
        positives = (image_ids[:, None] == image_ids[None]) | (phrase_keys[:, None] == phrase_keys[None])  # (B, B)
        local = slice(distributed.rank() * len(ids), (distributed.rank() + 1) * len(ids))  # this rank's rows
        loss_itc, _ = self.contrastive(image_feat, text_feat, positives[local], all_image_feat, all_text_feat)
        # 3. ITM: (image i, its hard negative text) and (the hard negative image of text j, text j),
        # drawn from the global batch with one generator state on every rank, so the draws agree.
        with torch.no_grad():
            global_logits = all_image_feat @ all_text_feat.t() / self.contrastive.temperature  # (B, B)
        negative_texts, negative_images = sample_hard_negatives(global_logits, positives, generator)  # (B,) x 2
        negative_texts, negative_images = negative_texts[local], negative_images[local]  # (b,) x 2
        all_ids, all_text_mask = distributed.gather(ids), distributed.gather(text_mask)  # (B, T)
        all_image_embeds = distributed.gather_with_grad(image_embeds)  # (B, 1+P, D)
        negative_logits, _ = model.itm_logits(
            torch.cat([image_embeds, all_image_embeds[negative_images]]),  # (2b, 1+P, D)
            torch.cat([all_ids[negative_texts], ids]),  # (2b, T)
            torch.cat([all_text_mask[negative_texts], text_mask]),
        )
        loss_itm = itm_loss(positive_logits, negative_logits)
        losses = {"itc": loss_itc, "itm": loss_itm}
        total = config.itc_weight * loss_itc + config.itm_weight * loss_itm
        # 4. AMC on the map upsampled to the input resolution, where the box masks are.
        if config.uses_amc:
            cam = upsample_cam(cam.float(), tuple(batch.masks.shape[-2:]))  # (b, H, W)
            loss_mean, loss_max = attention_mask_consistency(
                cam, batch.masks, config.amc_mean_margin, config.amc_max_margin, distributed.sum_with_grad)
            losses |= {"amc_mean": loss_mean, "amc_max": loss_max}
            total = total + config.amc_mean_weight * loss_mean + config.amc_max_weight * loss_max
        return {"loss": total, **losses}


class TrainingModule(nn.Module):
    """Model + objective as one module whose forward is a training step, so DistributedDataParallel
    sees one forward per backward (the GradCAM map's inner autograd.grad stays inside it)."""

    def __init__(self, model: GroundingModel, objective: nn.Module):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch: LoadedBatch, generator: torch.Generator,
                forward_index: int = 0) -> dict[str, torch.Tensor]:
        return self.objective(self.model, batch, generator, forward_index)
