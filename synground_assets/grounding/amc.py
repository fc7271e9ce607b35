"""The `amc` objective: AMC-grounding's pretraining loss on ALBEF (uvavision/AMC-grounding
`models/model_pretrain.py`, `Pretrain.py`), written from its conventions:

    L = MLM + ITA + ITM + 0.2 L_mean + 0.8 L_max

- ITA: momentum encoders (ALBEF's `model_pairs`, updated p_m <- m p_m + (1 - m) p inside the step,
  before the momentum features), image and text queues of momentum features, targets
  alpha * softmax(sim_m) + (1 - alpha) * one_hot, the model's own `temp` clamped to [0.001, 0.5].
- ITM: for each text a negative image, for each image a negative text, drawn with
  `torch.multinomial` from the in-batch similarity softmax (diagonal zeroed); labels 1 for the b
  matched pairs, 0 for the 2b negatives.
- AMC: GradCAM of the raw ITM match logit of the positive pairs' fusion forward, on the captured
  cross-attention, `create_graph=True` (a second-order loss); `gradcam.amc_training_map`,
  bilinear (align_corners=False) to the mask size; L_mean pools its means over this rank's batch.
- MLM: 15% of the tokens (not [PAD] or [CLS]), 80% -> [MASK], 10% -> a random token, 10% kept;
  labels -100 elsewhere; (1 - alpha) CE + alpha * distillation from the momentum model's
  softmax, whose log-softmax runs over dim 1 (the token axis) as the official xbert.py does.

Where each convention comes from (uvavision/AMC-grounding; line numbers of the stored copies:
models/model_pretrain.py @950d921, Pretrain.py @773de90, dataset/caption_dataset.py @111e98b,
configs/Pretrain.yaml @02f31f4; ALBEF's optim/optim_factory.py as in its forks, e.g. BennoKrojer/ALBEF):
  temp clamp_(0.001, 0.5) at the top of forward      model_pretrain.py:92-93
  momentum update inside the no_grad block, first    model_pretrain.py:106-107, 289-292
  queues + targets alpha*softmax + (1-alpha)*one-hot model_pretrain.py:110-136; enqueue 137, 297-333
  alpha ramp i/len(loader) in epoch 0                Pretrain.py:71-74; alpha 0.4, m 0.995, Q 65536: Pretrain.yaml:14-16
  ITM negatives: softmax(sim[:, :bs]), diagonal 0,   model_pretrain.py:150-171 (images first, then texts)
  torch.multinomial; labels 1 x bs, 0 x 2bs          model_pretrain.py:176-195
  GradCAM of vl_output[:bs] logit 1, create_graph    model_pretrain.py:204-210; map 212-232 (mean(1).mean(1),
                                                     ReLU, min-max + 1e-7, bilinear align_corners=False)
  L_mean (batch-pooled, 0.1), L_max (0.5)            model_pretrain.py:234-244; 0.2 / 0.8: Pretrain.py:80-81
  MLM mask 15%, 80/10/10, no [PAD]/[CLS], -100       model_pretrain.py:246-252, 336-353
  MLM distillation, log_softmax over dim=1           models/xbert.py BertForMaskedLM.forward (loss_distill)
  box mask: int pixels, resize with the image,       caption_dataset.py:59-79, 106-111; dataset/__init__.py:17-24
  bilinear align_corners=True to mask_size 256       (Resize, flip 0.5, gray 0.2, jitter 0.5); Pretrain.yaml:22
  weight decay exempts only 1-d tensors and biases   optim_factory.py:31 (so the 0-d temp decays)
  text truncated at 25 tokens                        Pretrain.py:61

Under DDP, as in the official code, ITA, ITM negatives and AMC are per rank (the local batch
against the queue); the queues are fed with the momentum features of the gathered global batch.
Every random draw of a step can be supplied in `StepDraws` (tests replay fixed draws); the rest
come from the step's generator, in a fixed order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import synground_assets.grounding.distributed as distributed
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.gradcam import amc_training_map, upsample_cam
from synground_assets.grounding.loader import LoadedBatch
from synground_assets.grounding.model import PretrainingModel

TEMPERATURE_RANGE = (0.001, 0.5)
MASK_SHARE, RANDOM_SHARE_OF_REST = 0.8, 0.5  # 80% [MASK]; half of the other 20% a random token


@dataclass
class StepDraws:
    """The random draws of one `amc` step; a field left None is drawn from the step's generator.
    Shapes are this rank's: b pairs, T tokens (after padding)."""

    mlm_positions: torch.Tensor | None = None  # (b, T) bool: Bernoulli(mlm_probability) candidates
    mask_replaced: torch.Tensor | None = None  # (b, T) bool: Bernoulli(0.8), -> [MASK]
    random_replaced: torch.Tensor | None = None  # (b, T) bool: Bernoulli(0.5) among the rest, -> random token
    random_tokens: torch.Tensor | None = None  # (b, T) long in [0, vocab)
    negative_images: torch.Tensor | None = None  # (b,) long: the negative image of each text
    negative_texts: torch.Tensor | None = None  # (b,) long: the negative text of each image


def draw(draws: StepDraws, generator: torch.Generator, similarity: tuple[torch.Tensor, torch.Tensor],
         ids: torch.Tensor, probability: float, vocab_size: int) -> StepDraws:
    """`draws` with every missing field drawn: the negatives first (as the official forward does),
    then the MLM draws. similarity: (b, b) image-to-text and text-to-image softmax weights."""
    weights_i2t, weights_t2i = similarity
    device = ids.device

    def bernoulli(p: float) -> torch.Tensor:
        return torch.bernoulli(torch.full(ids.shape, p, device=device), generator=generator).bool()

    negative_images = draws.negative_images
    if negative_images is None:
        negative_images = torch.multinomial(weights_t2i, 1, generator=generator).squeeze(1)
    negative_texts = draws.negative_texts
    if negative_texts is None:
        negative_texts = torch.multinomial(weights_i2t, 1, generator=generator).squeeze(1)
    positions = bernoulli(probability) if draws.mlm_positions is None else draws.mlm_positions
    replaced = bernoulli(MASK_SHARE) if draws.mask_replaced is None else draws.mask_replaced
    randomised = bernoulli(RANDOM_SHARE_OF_REST) if draws.random_replaced is None else draws.random_replaced
    tokens = draws.random_tokens
    if tokens is None:
        tokens = torch.randint(vocab_size, ids.shape, device=device, generator=generator)
    return StepDraws(positions, replaced, randomised, tokens, negative_images, negative_texts)


def mask_tokens(ids: torch.Tensor, draws: StepDraws, mask_token_id: int, pad_token_id: int,
                cls_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked ids, labels) of (b, T) ids: labels are the original ids at the masked positions and
    -100 elsewhere; [PAD] and [CLS] are never masked."""
    masked = draws.mlm_positions.clone() & (ids != pad_token_id) & (ids != cls_token_id)
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    replaced = draws.mask_replaced & masked
    randomised = draws.random_replaced & masked & ~replaced
    out = torch.where(replaced, torch.full_like(ids, mask_token_id), ids)
    return torch.where(randomised, draws.random_tokens, out), labels


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum(log_softmax(logits) * targets), both (N, K)."""
    return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()


def distilled_mlm_loss(logits: torch.Tensor, momentum_logits: torch.Tensor, labels: torch.Tensor,
                       alpha: float) -> torch.Tensor:
    """(1 - alpha) CE + alpha * distillation on the masked tokens; logits (b, T, V), labels (b, T).
    The distillation's log-softmax runs over dim 1, the token axis, as AMC's xbert.py does. A batch
    with no masked token (short phrases, a small batch) gives 0, where the official code gives NaN."""
    if not (labels != -100).any():
        return logits.sum() * 0.0
    cross_entropy = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    soft_labels = F.softmax(momentum_logits, dim=-1)
    distill = -(F.log_softmax(logits, dim=1) * soft_labels).sum(dim=-1)  # (b, T)
    return (1 - alpha) * cross_entropy + alpha * distill[labels != -100].mean()


def amc_margins(cam: torch.Tensor, mask: torch.Tensor, mean_margin: float,
                max_margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_mean, L_max) of maps and 0/1 masks (b, H, W); L_mean's means pooled over the batch."""
    inside, outside = cam * mask, cam * (1 - mask)
    loss_mean = F.relu(outside.sum() / (1 - mask).sum() - inside.sum() / mask.sum() + mean_margin)
    loss_max = F.relu(outside.flatten(1).amax(1) - inside.flatten(1).amax(1) + max_margin).mean()
    return loss_mean, loss_max


class FeatureQueue(nn.Module):
    """AMC's image and text queues (E, Q) with one pointer each, filled with wrap-around."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.register_buffer("image_queue", F.normalize(torch.randn(dim, size), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(dim, size), dim=0))
        self.register_buffer("queue_ptr_img", torch.zeros(1, dtype=torch.long))
        self.register_buffer("queue_ptr_txt", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def push(self, image_feat: torch.Tensor, text_feat: torch.Tensor) -> None:
        """Enqueue (B, E) features of the global batch over the oldest entries."""
        for queue, pointer, feats in ((self.image_queue, self.queue_ptr_img, image_feat),
                                      (self.text_queue, self.queue_ptr_txt, text_feat)):
            size, start, count = queue.shape[1], int(pointer), feats.shape[0]
            if count > size:
                raise ValueError(f"a global batch of {count} does not fit a queue of {size}; raise queue_size")
            end = start + count
            if end < size:
                queue[:, start:end] = feats.t()
            else:  # wrap around: the tail, then the head
                queue[:, start:] = feats.t()[:, : size - start]
                queue[:, : end - size] = feats.t()[:, size - start:]
            pointer[0] = end % size


class AmcObjective(nn.Module):
    """The `amc` losses of one step, with the momentum copy of the model and the queues (all in
    this module's state dict, so a checkpoint resumes exactly). The trained temperature is the
    model's own `temp`."""

    def __init__(self, config: TrainConfig, model: PretrainingModel, forwards_per_epoch: int):
        super().__init__()
        self.config, self.forwards_per_epoch = config, max(1, forwards_per_epoch)
        model.enable_mlm_head()
        pretrained = model.take_pretraining_state()
        self.momentum_model = copy.deepcopy(model)
        for parameter in self.momentum_model.parameters():
            parameter.requires_grad_(False)
        self._temp = [model.temp]  # in a list, so not registered here: the model owns it (read for the logs)
        self.queues = FeatureQueue(model.feature_dim, config.queue_size).to(model.device)
        if pretrained:
            self.load_pretraining_state(pretrained)

    def load_pretraining_state(self, state: dict[str, torch.Tensor]) -> None:
        """Start from a pretrain-layout checkpoint's momentum copies and queues (AMC Pretrain.py
        loads them with the model); an error names any key or shape that does not fit."""
        target = self.momentum_model.model.state_dict()  # the wrapped model's layout
        momentum = {k.removeprefix("momentum."): v for k, v in state.items() if k.startswith("momentum.")}
        unknown = sorted(set(momentum) - set(target))
        shapes = sorted(k for k in set(momentum) & set(target) if momentum[k].shape != target[k].shape)
        queues = {k: v for k, v in state.items() if not k.startswith("momentum.")}
        queue_shape = tuple(self.queues.image_queue.shape)
        wrong_queue = {k: tuple(v.shape) for k, v in queues.items()
                       if k.endswith("_queue") and tuple(v.shape) != queue_shape}
        if unknown or shapes or wrong_queue:
            raise ValueError(f"the checkpoint's momentum copies and queues do not fit: unknown keys {unknown}, shape "
                             f"mismatches {shapes}, queues {wrong_queue} vs {queue_shape} (set training.queue_size to "
                             "the checkpoint's queue length)")
        with torch.no_grad():
            for key, tensor in momentum.items():
                target[key].copy_(tensor)
            self.queues.load_state_dict(queues, strict=False)

    @property
    def temperature(self) -> float:
        return float(self._temp[0].detach())

    def alpha(self, forward_index: int) -> float:
        """distill_alpha, ramped linearly over the first epoch (AMC Pretrain.py)."""
        return self.config.distill_alpha * min(1.0, forward_index / self.forwards_per_epoch)

    @torch.no_grad()
    def momentum_update(self, model: PretrainingModel) -> None:
        momentum = self.config.momentum
        for module, shadow_module in zip(model.momentum_modules(), self.momentum_model.momentum_modules(), strict=True):
            for parameter, shadow in zip(module.parameters(), shadow_module.parameters(), strict=True):
                shadow.copy_(shadow * momentum + parameter.detach() * (1.0 - momentum))

    def forward(self, model: PretrainingModel, batch: LoadedBatch, generator: torch.Generator,
                forward_index: int = 0, draws: StepDraws | None = None) -> dict[str, torch.Tensor]:
        config, inputs, alpha = self.config, batch.inputs, self.alpha(forward_index)
        ids, text_mask, momentum_model = inputs.input_ids, inputs.attention_mask, self.momentum_model
        with torch.no_grad():
            model.temp.clamp_(*TEMPERATURE_RANGE)
        # 1. Unimodal features; momentum features against the queues (the update comes first).
        image_embeds = model.encode_image(inputs.pixel_values)  # (b, 1+P, D)
        image_feat = model.image_feature(image_embeds)  # (b, E)
        text_hidden = model.text_hidden(ids, text_mask)  # (b, T, H)
        text_feat = model.text_feature(text_hidden)  # (b, E)
        with torch.no_grad():
            self.momentum_update(model)
            image_embeds_m = momentum_model.encode_image(inputs.pixel_values)
            image_feat_m = momentum_model.image_feature(image_embeds_m)  # (b, E)
            text_feat_m = momentum_model.text_feature(momentum_model.text_hidden(ids, text_mask))
            image_feat_all = torch.cat([image_feat_m.t(), self.queues.image_queue.clone()], dim=1)  # (E, b+Q)
            text_feat_all = torch.cat([text_feat_m.t(), self.queues.text_queue.clone()], dim=1)
            one_hot = torch.zeros(len(ids), image_feat_all.shape[1], device=ids.device)
            one_hot.fill_diagonal_(1)
            targets_i2t = alpha * F.softmax(image_feat_m @ text_feat_all / model.temp, dim=1) + (1 - alpha) * one_hot
            targets_t2i = alpha * F.softmax(text_feat_m @ image_feat_all / model.temp, dim=1) + (1 - alpha) * one_hot
        sim_i2t = image_feat @ text_feat_all / model.temp  # (b, b+Q)
        sim_t2i = text_feat @ image_feat_all / model.temp
        loss_ita = (soft_cross_entropy(sim_i2t, targets_i2t) + soft_cross_entropy(sim_t2i, targets_t2i)) / 2
        self.queues.push(distributed.gather(image_feat_m), distributed.gather(text_feat_m))
        # 2. ITM: the positive pairs (their cross-attention kept for GradCAM), then hard negatives.
        layer = config.gradcam_layer if config.uses_amc else None
        positive_logits, attention = model.fused_itm_logits(text_hidden, text_mask, image_embeds, capture_layer=layer)
        with torch.no_grad():
            batch_size = len(ids)
            weights_i2t = F.softmax(sim_i2t[:, :batch_size].float(), dim=1).fill_diagonal_(0)  # (b, b)
            weights_t2i = F.softmax(sim_t2i[:, :batch_size].float(), dim=1).fill_diagonal_(0)
        draws = draw(draws or StepDraws(), generator, (weights_i2t, weights_t2i), ids, config.mlm_probability,
                     model.vocab_size)
        negative_logits, _ = model.fused_itm_logits(
            torch.cat([text_hidden, text_hidden[draws.negative_texts]]),  # (2b, T, H)
            torch.cat([text_mask, text_mask[draws.negative_texts]]),
            torch.cat([image_embeds[draws.negative_images], image_embeds]),  # (2b, 1+P, D)
        )
        itm_logits = torch.cat([positive_logits, negative_logits])  # (3b, 2)
        itm_labels = torch.cat([torch.ones(batch_size), torch.zeros(2 * batch_size)]).long().to(ids.device)
        loss_itm = F.cross_entropy(itm_logits, itm_labels)
        losses = {"mlm": None, "itc": loss_ita, "itm": loss_itm}
        # 3. AMC on the second-order GradCAM of the raw match logit.
        if config.uses_amc:
            (gradient,) = torch.autograd.grad(positive_logits[:, 1].sum(), attention, create_graph=True)
            grid = model.patch_grid(inputs.pixel_values.shape[-1])
            cam = amc_training_map(attention, gradient, text_mask, grid)  # (b, rows, cols)
            cam = upsample_cam(cam.float(), tuple(batch.masks.shape[-2:]))  # (b, H, W)
            losses["amc_mean"], losses["amc_max"] = amc_margins(cam, batch.masks.to(cam.dtype),
                                                                config.amc_mean_margin, config.amc_max_margin)
        # 4. MLM with the momentum model's soft targets.
        masked_ids, labels = mask_tokens(ids, draws, model.mask_token_id, model.pad_token_id, model.cls_token_id)
        with torch.no_grad():
            momentum_logits = momentum_model.mlm_logits(masked_ids, text_mask, image_embeds_m)
        losses["mlm"] = distilled_mlm_loss(model.mlm_logits(masked_ids, text_mask, image_embeds), momentum_logits,
                                           labels, alpha)
        weights = {"mlm": config.mlm_weight, "itc": config.itc_weight, "itm": config.itm_weight,
                   "amc_mean": config.amc_mean_weight, "amc_max": config.amc_max_weight}
        return {"loss": sum(weights[name] * loss for name, loss in losses.items()), **losses}
