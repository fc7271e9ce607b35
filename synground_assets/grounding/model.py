"""The seam between the learning core and the models: what `grounding/` needs from a grounding model.

`grounding/` (GradCAM, the training loop, the pointing game) calls only what `GroundingModel` lists.
The adapters live in `adapters/`: `grounding_blip.BlipGroundingModel` (transformers' BLIP-ITM) and
`grounding_albef.AlbefGroundingModel` (ALBEF, `models/albef`), side by side; this package never
imports them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from PIL import Image

from synground_assets.grounding.config import ModelLimits

TRAIN_CONFIG_FILE = "train_config.json"  # written next to fine-tuned weights by grounding/train.py


@dataclass
class GroundingInputs:
    """A preprocessed batch of image-phrase pairs."""

    pixel_values: torch.Tensor  # (B, 3, H, W)
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T), 1 for real tokens, 0 for padding

    def to(self, device: torch.device | str) -> GroundingInputs:
        return GroundingInputs(
            self.pixel_values.to(device), self.input_ids.to(device), self.attention_mask.to(device)
        )


class GroundingModel(Protocol):
    """What `grounding/` needs from a vision-language model. Adapters are `torch.nn.Module`s, so
    `parameters()`, `train()`, `eval()`, `state_dict()` and `to()` come with them."""

    info: object  # roles.base.AdapterInfo: adapter name, model id, settings
    default_objective: str  # the objective a config without one trains with (grounding/config.py OBJECTIVES)
    gradcam_layer: int  # the text layer whose cross-attention GradCAM reads
    max_text_tokens: int  # truncation length of the training text
    training: bool

    @property
    def device(self) -> torch.device: ...

    def image_size(self) -> int: ...

    def limits(self) -> ModelLimits:
        """What this model allows of a training config (GradCAM layers, patch size, text length)."""
        ...

    def patch_grid(self, resolution: int | None = None) -> tuple[int, int]:
        """(rows, columns) of the patch grid at a square input resolution (default: image_size)."""
        ...

    def preprocess(
        self, images: Sequence[Image.Image], phrases: Sequence[str], resolution: int | None = None
    ) -> GroundingInputs: ...

    def preprocessor(self):
        """A picklable callable (images, phrases, resolution) -> CPU `GroundingInputs`: what
        `preprocess` does before moving to the device, for data-loader workers."""
        ...

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + P, D): vision [CLS] then P patch tokens, row-major."""
        ...

    def contrastive_features(
        self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised (B, E) image and text features for ITC, text from the unimodal encoder."""
        ...

    def itm_logits(
        self,
        image_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        capture_layer: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 2) match logits (index 1 = match) and, when `capture_layer` is given, that text
        layer's cross-attention probabilities (B, heads, T, 1 + P) after the softmax and before
        dropout, still in the autograd graph."""
        ...

    def save_pretrained(self, folder: str | os.PathLike) -> None: ...

    def parameters(self): ...

    def train(self, mode: bool = True): ...

    def eval(self): ...


class PretrainingModel(GroundingModel, Protocol):
    """What the `amc` objective needs beyond `GroundingModel`: ALBEF's pretraining pieces (an MLM
    head, the text-only and fusion halves of the text encoder, the ITC projections and temperature)."""

    temp: torch.nn.Parameter  # the ITC temperature, clamped to [0.001, 0.5] before each step
    mask_token_id: int
    cls_token_id: int
    pad_token_id: int
    vocab_size: int
    feature_dim: int  # E, the ITC feature width (the queues' rows)

    def enable_mlm_head(self) -> None:
        """Add a randomly initialised MLM head when the checkpoint has none."""
        ...

    def take_pretraining_state(self) -> dict[str, torch.Tensor] | None:
        """Momentum copies (`momentum.<key of the wrapped model>`) and queues (`image_queue`,
        `text_queue`, `queue_ptr_img`, `queue_ptr_txt`) from a pretrain-layout checkpoint, or None."""
        ...

    def momentum_modules(self) -> list[torch.nn.Module]:
        """The modules that get momentum copies, in a fixed order (ALBEF's `model_pairs`)."""
        ...

    def text_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, H) through the text-only layers."""
        ...

    def image_feature(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """(B, 1 + P, D) -> (B, E) L2-normalised ITC feature of the image [CLS]."""
        ...

    def text_feature(self, text_hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, E) L2-normalised ITC feature of the text [CLS]."""
        ...

    def fused_itm_logits(
        self, text_hidden: torch.Tensor, attention_mask: torch.Tensor, image_embeds: torch.Tensor,
        capture_layer: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 2) match logits from text-mode hidden states through the fusion layers, and the
        captured cross-attention probabilities (B, heads, T, 1 + P) of `capture_layer`."""
        ...

    def mlm_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   image_embeds: torch.Tensor) -> torch.Tensor:
        """(B, T) ids (some masked) with the image -> (B, T, V) token logits."""
        ...
