"""The BLIP grounding adapter: transformers' `BlipForImageTextRetrieval` playing
`grounding.model.GroundingModel` (its peer for ALBEF is `adapters/grounding_albef.py`; a recipe picks
one through `adapters/grounding.py`).

Its random-init tiny build for the shapes world is `tiny.grounding.build_tiny_blip`.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import (
    BlipForImageTextRetrieval,
    BlipProcessor,
)

from synground_assets.adapters.loading import resolve_device
from synground_assets.grounding.config import DEFAULT_MAX_TEXT_TOKENS, ModelLimits
from synground_assets.grounding.model import TRAIN_CONFIG_FILE, GroundingInputs
from synground_assets.roles.base import AdapterInfo


@dataclass
class BlipPreprocessor:
    """Images and phrases -> CPU `GroundingInputs` at a square resolution (BLIP's processor)."""

    processor: BlipProcessor
    patch_size: int
    image_size: int
    max_text_tokens: int
    dtype: torch.dtype

    def __call__(
        self, images: Sequence[Image.Image], phrases: Sequence[str], resolution: int | None = None
    ) -> GroundingInputs:
        if len(images) != len(phrases):
            raise ValueError(f"got {len(images)} images but {len(phrases)} phrases")
        resolution = resolution or self.image_size
        if resolution % self.patch_size:
            raise ValueError(f"resolution must be divisible by the patch size {self.patch_size} but is {resolution}")
        pixels = self.processor.image_processor(
            images=[image.convert("RGB") for image in images],
            size={"height": resolution, "width": resolution},
            return_tensors="pt",
        )["pixel_values"]
        text = self.processor.tokenizer(
            list(phrases), padding="longest", truncation=True, max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        return GroundingInputs(pixels.to(self.dtype), text["input_ids"], text["attention_mask"])


class BlipGroundingModel(nn.Module):
    """`BlipForImageTextRetrieval` + its processor, playing `GroundingModel`."""

    default_objective = "itc-itm-amc"  # BLIP-ITM has no MLM head and no ITC temperature

    def __init__(
        self,
        model: BlipForImageTextRetrieval,
        processor: BlipProcessor,
        gradcam_layer: int | None = None,
        max_text_tokens: int = DEFAULT_MAX_TEXT_TOKENS,
        info: AdapterInfo | None = None,
    ):
        super().__init__()
        num_layers = model.config.text_config.num_hidden_layers
        # The ITM head reads the fused [CLS] only, so the last layer's cross-attention gradient is
        # zero on every other token row: default to a middle fusion layer (AMC: layer[8] of 12).
        gradcam_layer = min(num_layers * 2 // 3, num_layers - 2) if gradcam_layer is None else gradcam_layer
        if not 0 <= gradcam_layer < num_layers - 1:
            raise ValueError(
                f"gradcam_layer must be in [0, {num_layers - 2}] (not the last of {num_layers} text "
                f"layers, whose gradient vanishes off [CLS]) but is {gradcam_layer}"
            )
        self.model, self.processor = model, processor
        self.gradcam_layer, self.max_text_tokens = gradcam_layer, max_text_tokens
        self.info = info or AdapterInfo("blip", model.name_or_path or "blip")

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | os.PathLike,
        revision: str | None = None,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device = "cpu",
        gradcam_layer: int | None = None,
        max_text_tokens: int = DEFAULT_MAX_TEXT_TOKENS,
    ) -> BlipGroundingModel:
        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        trained_with = Path(model_id) / TRAIN_CONFIG_FILE
        if gradcam_layer is None and trained_with.is_file():
            # A fine-tuned folder: explain with the layer its AMC loss trained.
            gradcam_layer = json.loads(trained_with.read_text()).get("gradcam_layer")
        # Eager attention: GradCAM differentiates the softmax probabilities of the cross-attention.
        model = BlipForImageTextRetrieval.from_pretrained(
            model_id, revision=revision, dtype=torch_dtype, attn_implementation="eager"
        )
        processor = BlipProcessor.from_pretrained(model_id, revision=revision)
        info = AdapterInfo(
            "blip", str(model_id), revision or "",
            settings={"dtype": str(torch_dtype).removeprefix("torch."), "gradcam_layer": gradcam_layer,
                      "max_text_tokens": max_text_tokens},
        )
        grounding = cls(model, processor, gradcam_layer, max_text_tokens, info)
        return grounding.to(resolve_device(str(device)))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    def limits(self) -> ModelLimits:
        return ModelLimits.from_config(self.info.model_id or "this BLIP model", self.model.config.to_dict())

    def patch_grid(self, resolution: int | None = None) -> tuple[int, int]:
        side = (resolution or self.image_size()) // self.model.config.vision_config.patch_size
        return side, side

    def preprocess(
        self, images: Sequence[Image.Image], phrases: Sequence[str], resolution: int | None = None
    ) -> GroundingInputs:
        return self.preprocessor()(images, phrases, resolution).to(self.device)

    def preprocessor(self) -> BlipPreprocessor:
        """The CPU half of `preprocess`, without the weights: data-loader workers run it."""
        return BlipPreprocessor(self.processor, self.model.config.vision_config.patch_size, self.image_size(),
                                self.max_text_tokens, next(self.model.parameters()).dtype)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        interpolate = pixel_values.shape[-1] != self.image_size() or pixel_values.shape[-2] != self.image_size()
        outputs = self.model.vision_model(pixel_values=pixel_values, interpolate_pos_encoding=interpolate)
        return outputs.last_hidden_state  # (B, 1 + P, D)

    def contrastive_features(self, image_embeds, input_ids, attention_mask):
        text_embeds = self.model.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        image_feat = F.normalize(self.model.vision_proj(image_embeds[:, 0, :]), dim=-1)  # (B, E)
        text_feat = F.normalize(self.model.text_proj(text_embeds[:, 0, :]), dim=-1)  # (B, E)
        return image_feat, text_feat

    def itm_logits(self, image_embeds, input_ids, attention_mask, capture_layer=None):
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        with self._capture_cross_attention(capture_layer) as captured:
            fused = self.model.text_encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                encoder_hidden_states=image_embeds,
                encoder_attention_mask=image_atts,
            ).last_hidden_state  # (B, T, H)
        logits = self.model.itm_head(fused[:, 0, :])  # (B, 2)
        return logits, captured[0] if captured else None

    @contextmanager
    def _capture_cross_attention(self, layer: int | None) -> Iterator[list[torch.Tensor]]:
        captured: list[torch.Tensor] = []
        if layer is None:
            yield captured
            return
        module = self.model.text_encoder.encoder.layer[layer].crossattention.self
        # output = (context, attention_probs); probs are (B, heads, T, 1 + P), before dropout.
        handle = module.register_forward_hook(lambda _module, _inputs, output: captured.append(output[1]))
        try:
            yield captured
        finally:
            handle.remove()

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        self.model.save_pretrained(folder)
        self.processor.save_pretrained(folder)
