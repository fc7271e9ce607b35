"""ALBEF for grounding: ViT + BERT-with-fusion + ITC projections + ITM head, in the grounding layout
of the official checkpoints (ALBEF models/model_retrieval.py without its momentum copies and queues).

A folder of this project's own format holds `model.safetensors`, `config.json` (every size, see
`AlbefConfig`) and `vocab.txt`; `save_pretrained` writes one and `from_pretrained` reads it back
with a strict load.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from synground_assets.models.albef.config import AlbefConfig
from synground_assets.models.albef.vit import VisionTransformer
from synground_assets.models.albef.xbert import BertModel, BertOnlyMLMHead

WEIGHTS_FILE = "model.safetensors"
TEMPERATURE_RANGE = (0.001, 0.5)  # ALBEF clamps `temp` into this range before each use


class CheckpointMismatch(ValueError):
    """A state dict that does not fit the model; the message lists every missing and unexpected key."""


class AlbefModel(nn.Module):
    def __init__(self, config: AlbefConfig):
        super().__init__()
        self.config = config
        self.visual_encoder = VisionTransformer(config)
        self.text_encoder = BertModel(config)
        self.vision_proj = nn.Linear(config.vision_width, config.embed_dim)
        self.text_proj = nn.Linear(config.text_width, config.embed_dim)
        self.itm_head = nn.Linear(config.text_width, 2)
        self.temp = nn.Parameter(torch.tensor(config.initial_temperature))
        self.apply(self._init_weights)
        nn.init.trunc_normal_(self.visual_encoder.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.visual_encoder.cls_token, std=0.02)

    def _init_weights(self, module: nn.Module) -> None:
        """Random init for models built here (tiny tests); real weights come from a checkpoint."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual_encoder(pixel_values)  # (B, 1 + P, D)

    def temperature(self) -> torch.Tensor:
        """`temp` clamped into [0.001, 0.5] in place, as ALBEF does before each contrastive step: the
        checkpoint's ITC temperature, for scoring image-text similarity. (Fine-tuning through
        `grounding.objective`'s `itc-itm-amc` learns its own, `ContrastiveLoss`, and leaves this one.)"""
        with torch.no_grad():
            self.temp.clamp_(*TEMPERATURE_RANGE)
        return self.temp

    def contrastive_features(self, image_embeds, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised (B, E) image and text [CLS] features; the text from the text-only layers."""
        text = self.text_encoder(input_ids, attention_mask, mode="text")  # (B, T, H)
        image_feat = F.normalize(self.vision_proj(image_embeds[:, 0, :]), dim=-1)
        text_feat = F.normalize(self.text_proj(text[:, 0, :]), dim=-1)
        return image_feat, text_feat

    def text_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, H): the text-only layers [0, fusion_layer) (ALBEF's mode='text')."""
        return self.text_encoder(input_ids, attention_mask, mode="text")

    def image_feature(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.vision_proj(image_embeds[:, 0, :]), dim=-1)  # (B, E)

    def text_feature(self, text_hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(text_hidden[:, 0, :]), dim=-1)  # (B, E)

    def fused_itm_logits(self, text_hidden, attention_mask, image_embeds) -> torch.Tensor:
        """(B, 2) match logits from text-mode hidden states through the fusion layers (mode='fusion')."""
        fused = self.text_encoder(None, attention_mask, encoder_hidden_states=image_embeds, mode="fusion",
                                  encoder_embeds=text_hidden)
        return self.itm_head(fused[:, 0, :])

    def mlm_logits(self, input_ids, attention_mask, image_embeds) -> torch.Tensor:
        """(B, T, V) MLM logits of (masked) ids through all text layers with the image (BertForMaskedLM)."""
        hidden = self.text_encoder(input_ids, attention_mask, encoder_hidden_states=image_embeds, mode="multi_modal")
        return self.text_encoder.mlm_logits(hidden)

    def enable_mlm_head(self) -> None:
        """Add a randomly initialised MLM head (a checkpoint without one: grounding layout, tiny models)."""
        if self.text_encoder.cls is not None:
            return
        self.config = dataclasses.replace(self.config, mlm_head=True)
        head = BertOnlyMLMHead(self.config).to(self.temp.device)
        head.apply(self._init_weights)
        self.text_encoder.cls = head

    def itm_logits(self, image_embeds, input_ids, attention_mask) -> torch.Tensor:
        """(B, 2) match logits of the fused [CLS], all text layers run (as AMC's evaluation)."""
        fused = self.text_encoder(input_ids, attention_mask, encoder_hidden_states=image_embeds, mode="multi_modal")
        return self.itm_head(fused[:, 0, :])

    @contextmanager
    def capture_cross_attention(self, layer: int | None) -> Iterator[list[torch.Tensor]]:
        """Record text layer `layer`'s cross-attention probabilities (B, heads, T, 1 + P) while inside."""
        captured: list[torch.Tensor] = []
        if layer is None:
            yield captured
            return
        encoder_layer = self.text_encoder.encoder.layer[layer]
        if not encoder_layer.has_cross_attention:
            raise ValueError(f"text layer {layer} has no cross-attention (fusion starts at {self.config.fusion_layer})")
        attention = encoder_layer.crossattention.self
        attention.captured = captured
        try:
            yield captured
        finally:
            attention.captured = None

    @contextmanager
    def capture_vision_attention(self, block: int) -> Iterator[list[torch.Tensor]]:
        """Record vision block `block`'s self-attention probabilities (B, heads, 1 + P, 1 + P) while inside."""
        if not 0 <= block < len(self.visual_encoder.blocks):
            raise ValueError(f"vision block must be in [0, {len(self.visual_encoder.blocks) - 1}] but is {block}")
        attention = self.visual_encoder.blocks[block].attn
        captured: list[torch.Tensor] = []
        attention.captured = captured
        try:
            yield captured
        finally:
            attention.captured = None

    def load_checked(self, state_dict: dict[str, torch.Tensor], source: str) -> None:
        """A strict load whose error names every missing and unexpected key and every shape mismatch."""
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        shapes = sorted(f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
                        for k in set(expected) & set(state_dict) if state_dict[k].shape != expected[k].shape)
        if missing or unexpected or shapes:
            parts = [f"missing keys: {', '.join(missing)}" if missing else "",
                     f"unexpected keys: {', '.join(unexpected)}" if unexpected else "",
                     f"shape mismatches: {'; '.join(shapes)}" if shapes else ""]
            raise CheckpointMismatch(f"{source} does not fit the ALBEF config: " + " | ".join(p for p in parts if p)
                                     + " (check the config's sizes, or whether this is an ALBEF checkpoint)")
        self.load_state_dict(state_dict, strict=True)

    def save_weights(self, folder: str | os.PathLike) -> None:
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        save_file(state, str(Path(folder) / WEIGHTS_FILE), metadata={"format": "pt"})
        self.config.save(folder)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> AlbefModel:
        folder = Path(folder)
        model = cls(AlbefConfig.load(folder))
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{folder} has no {WEIGHTS_FILE}; write it with save_pretrained or the converter")
        model.load_checked(load_file(str(weights)), str(weights))
        return model
