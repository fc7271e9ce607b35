"""GradCAM on the cross-attention of a vision-language model (as in ALBEF and AMC).

The target is the positive-class ITM logit; the gradient is taken w.r.t. the cross-attention
probabilities of one text-encoder layer, with `create_graph=True` when the map must be trained
through (the AMC loss). cam = attention * clamp(gradient, min=0), averaged over heads and over the
non-padding text tokens, the vision [CLS] column dropped, reshaped to the patch grid (row-major,
as ViT flattens its patches), ReLU, min-max normalised per sample (`gradcam_from_attention`, the
map the AMC loss trains). `amc_evaluation_map` is the map of AMC's released evaluation instead (raw,
mean over all padded token positions), for `pointing_game`'s `amc` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from synground_assets.grounding.model import GroundingInputs, GroundingModel

MIN_MAX_EPS = 1e-7


@dataclass
class GradcamOutput:
    cam: torch.Tensor  # (B, rows, cols); each sample in [0, 1] with the default combiner
    itm_logits: torch.Tensor  # (B, 2), the positive pairs' logits the map explains
    image_embeds: torch.Tensor  # (B, 1 + P, D), reusable for ITC / ITM negatives


def gradcam_from_attention(
    attention: torch.Tensor, gradient: torch.Tensor, text_mask: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """Combine cross-attention probabilities and their gradient into a per-sample map.

    attention, gradient: (B, heads, T, 1 + P); text_mask: (B, T) with 1 for real tokens;
    grid: (rows, cols) with rows * cols == P. Returns (B, rows, cols) in [0, 1].
    """
    rows, cols = grid
    if attention.shape[-1] != 1 + rows * cols:
        raise ValueError(f"attention has {attention.shape[-1]} keys but the grid {rows}x{cols} needs {1 + rows * cols}")
    cam = attention * gradient.clamp(min=0)  # (B, heads, T, 1+P)
    cam = cam.mean(dim=1)  # (B, T, 1+P)
    weights = text_mask.to(cam.dtype).unsqueeze(-1)  # (B, T, 1)
    cam = (cam * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)  # (B, 1+P)
    cam = cam[:, 1:].reshape(-1, rows, cols)  # (B, rows, cols), vision [CLS] dropped
    cam = F.relu(cam)
    flat = cam.flatten(1)  # (B, P)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low + MIN_MAX_EPS)).reshape_as(cam)


def amc_evaluation_map(
    attention: torch.Tensor, gradient: torch.Tensor, text_mask: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """AMC's evaluation GradCAM (AMC-grounding grounding_eval_singlegpu*.py, ALBEF Grounding.py).

    attention, gradient: (B, heads, T, 1 + P); text_mask: (B, T). The image [CLS] column dropped,
    the gradient clamped at 0 (not the attention), both multiplied by the text mask, their product
    averaged over heads and then over ALL T token positions, padding included (so a phrase's map
    in a batch is its single-phrase map scaled by L / T; the argmax is the same). Not normalised.
    Returns (B, rows, cols).
    """
    rows, cols = grid
    batch, heads = attention.shape[:2]
    if attention.shape[-1] != 1 + rows * cols:
        raise ValueError(f"attention has {attention.shape[-1]} keys but the grid {rows}x{cols} needs {1 + rows * cols}")
    mask = text_mask.view(batch, 1, -1, 1, 1)  # (B, 1, T, 1, 1)
    cams = attention[:, :, :, 1:].reshape(batch, heads, -1, rows, cols) * mask  # (B, heads, T, rows, cols)
    grads = gradient[:, :, :, 1:].clamp(min=0).reshape(batch, heads, -1, rows, cols) * mask
    return (cams * grads).mean(1).mean(1)  # heads, then tokens: (B, rows, cols)


def amc_training_map(
    attention: torch.Tensor, gradient: torch.Tensor, text_mask: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """The map AMC-grounding's pretraining loss trains (models/model_pretrain.py): the evaluation
    map (mean over heads, then over all T padded token positions), ReLU, then per-sample min-max
    normalisation with 1e-7 in the denominator. (B, heads, T, 1 + P) x 2, (B, T) -> (B, rows, cols)."""
    cam = F.relu(amc_evaluation_map(attention, gradient, text_mask, grid))
    flat = cam.flatten(1)  # (B, P)
    flat = flat - flat.min(dim=1, keepdim=True).values
    return (flat / (flat.max(dim=1, keepdim=True).values + MIN_MAX_EPS)).reshape_as(cam)


MapCombiner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]], torch.Tensor]


def cross_attention_gradcam(
    model: GroundingModel,
    inputs: GroundingInputs,
    layer: int | None = None,
    create_graph: bool = False,
    combine: MapCombiner = gradcam_from_attention,
) -> GradcamOutput:
    """GradCAM maps of a batch of matching image-phrase pairs.

    With `create_graph=False` the map is detached (evaluation); with True it stays in the graph so a
    loss on it trains the model. `combine` turns (attention, gradient, text mask, grid) into the map.
    """
    layer = model.gradcam_layer if layer is None else layer
    grid = model.patch_grid(inputs.pixel_values.shape[-1])
    with torch.enable_grad():
        image_embeds = model.encode_image(inputs.pixel_values)  # (B, 1+P, D)
        if not image_embeds.requires_grad:
            # Frozen weights: the attention still needs a path to differentiate along.
            image_embeds = image_embeds.detach().requires_grad_()
        logits, attention = model.itm_logits(
            image_embeds, inputs.input_ids, inputs.attention_mask, capture_layer=layer
        )  # (B, 2), (B, heads, T, 1+P)
        # Samples are independent, so the gradient of the summed logits is each sample's own.
        (gradient,) = torch.autograd.grad(logits[:, 1].sum(), attention, create_graph=create_graph)
        cam = combine(attention, gradient, inputs.attention_mask, grid)
    if not create_graph:
        cam, logits, image_embeds = cam.detach(), logits.detach(), image_embeds.detach()
    return GradcamOutput(cam=cam, itm_logits=logits, image_embeds=image_embeds)


def upsample_cam(cam: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """(B, rows, cols) -> (B, height, width) with align_corners=False: bilinear (the AMC loss's
    map-to-mask resize) or bicubic (AMC's evaluation, map to the original image)."""
    return F.interpolate(cam.unsqueeze(1), size=size, mode=mode, align_corners=False).squeeze(1)


def itc_gradcam(model: GroundingModel, inputs: GroundingInputs, block: int | None = None) -> torch.Tensor:
    """ITC-mode GradCAM (ALBEF Grounding.py, `gradcam_mode: itc`): the gradient of the matching
    pairs' similarity image_feat . text_feat / temp w.r.t. vision block `block`'s self-attention;
    map = attention of the image [CLS] row to the patches x clamp(gradient, 0), mean over heads.
    Needs an adapter with `itc_similarity_with_attention` (ALBEF). Returns (B, rows, cols), detached."""
    if not hasattr(model, "itc_similarity_with_attention"):
        raise ValueError(f"{type(model).__name__} has no ITC-mode GradCAM (ALBEF's); use gradcam_mode itm")
    block = model.itc_gradcam_block if block is None else block
    rows, cols = model.patch_grid(inputs.pixel_values.shape[-1])
    with torch.enable_grad():
        similarity, attention = model.itc_similarity_with_attention(
            inputs.pixel_values, inputs.input_ids, inputs.attention_mask, block)  # (B,), (B, heads, 1+P, 1+P)
        (gradient,) = torch.autograd.grad(similarity.sum(), attention)
    batch = attention.shape[0]
    cam = attention[:, :, 0, 1:].reshape(batch, -1, rows, cols)  # (B, heads, rows, cols)
    gradient = gradient[:, :, 0, 1:].reshape(batch, -1, rows, cols).clamp(0)
    return (cam * gradient).mean(1).detach()
