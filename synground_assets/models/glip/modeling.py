"""GLIP for phrase grounding in plain PyTorch: Swin + FPN, BERT (transformers' `BertModel`) and the VL-DyHead,
with the official post-processing (microsoft/GLIP 9dda955, `GeneralizedVLRCNN` RPN-only with `VLDYHEAD`).

Contract with the detector adapter (keep it):
- `GlipForGrounding.from_pretrained(folder) -> model` in eval mode. The folder holds `model.safetensors`,
  `config.json` (`GlipConfig`) and the tokenizer files written by the tokenizer's `save_pretrained`
  (read them with `BertTokenizerFast.from_pretrained(folder)`).
- `model.detect(pixel_values, image_sizes, input_ids, attention_mask, positive_maps) -> list[GlipDetections]`:
  pixel_values (B, 3, H, W) float, BGR x255 normalised with `config.pixel_mean/std` and zero-padded
  right/bottom to `config.size_divisibility`; image_sizes [(h, w)] of the resized unpadded images;
  input_ids / attention_mask (B, config.max_query_len) long; positive_maps one dict per image,
  1-based label -> token indices (of the tokenization with special tokens). Each `GlipDetections` has
  `boxes_xyxy` (N, 4) in resized-image pixels, `scores` (N,) and 1-based `labels` (N,), by descending score;
  scaling back to the original image is the caller's.
- `model(pixel_values, input_ids, attention_mask)` -> `GlipOutputs` (raw per-level head outputs).

The state dict keys are the official ones without the DDP `module.` prefix (`backbone.body.*`,
`backbone.fpn.*`, `language_backbone.body.model.*`, `rpn.head.*`), so `convert.py` only drops what the
model derives (anchors, BERT's position_ids/token_type_ids buffers, the unused pooler).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from synground_assets.models.glip.anchors import grid_anchors
from synground_assets.models.glip.config import GlipConfig
from synground_assets.models.glip.dyhead import VLDyHead
from synground_assets.models.glip.fpn import FPN
from synground_assets.models.glip.postprocess import GlipDetections, postprocess
from synground_assets.models.glip.swin import SwinTransformer

WEIGHTS_FILE = "model.safetensors"


class CheckpointMismatch(ValueError):
    """A state dict that does not fit the model; the message lists every missing and unexpected key."""


@dataclass
class GlipOutputs:
    box_regression: list[torch.Tensor]  # per level (B, 4, H, W), already times scales[l]
    centerness: list[torch.Tensor]  # per level (B, 1, H, W)
    dot_product_logits: list[torch.Tensor]  # per level (B, H*W, T)
    grid_sizes: list[tuple[int, int]]


class Backbone(nn.Module):
    def __init__(self, config: GlipConfig):
        super().__init__()
        self.body = SwinTransformer(config)
        self.fpn = FPN(config.swin_widths[1:], config.fpn_channels)

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        _, c3, c4, c5 = self.body(pixel_values)  # stage 0 is not used by the FPN
        return self.fpn(c3, c4, c5)


class BertEncoder(nn.Module):
    """language_backbone.body (language_backbone/bert_model.py:10-80) with N_LAYERS 1: `hidden` is the last
    layer, `embedded` the last layer times the attention mask."""

    def __init__(self, config: GlipConfig):
        super().__init__()
        from transformers import BertModel

        bert_config = config.bert_config()
        bert_config._attn_implementation = "eager"  # the plain softmax attention of the official BERT
        self.model = BertModel(bert_config, add_pooling_layer=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden, hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)


class LanguageBackbone(nn.Module):
    def __init__(self, config: GlipConfig):
        super().__init__()
        self.body = BertEncoder(config)


class Rpn(nn.Module):
    def __init__(self, config: GlipConfig):
        super().__init__()
        self.head = VLDyHead(config)


class GlipForGrounding(nn.Module):
    def __init__(self, config: GlipConfig):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.language_backbone = LanguageBackbone(config)
        self.rpn = Rpn(config)
        self.backbone.apply(self._init_vision)

    def _init_vision(self, module: nn.Module) -> None:
        """Random init for models built here (Swin's init_weights); real weights come from a checkpoint."""
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def check_inputs(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (B, 3, H, W), got {tuple(pixel_values.shape)}")
        divisor = self.config.size_divisibility
        if divisor and (pixel_values.shape[2] % divisor or pixel_values.shape[3] % divisor):
            raise ValueError(f"pixel_values {tuple(pixel_values.shape[2:])} are not padded to a multiple of "
                             f"{divisor} (config.size_divisibility); zero-pad right/bottom after normalising")
        expected = (pixel_values.shape[0], self.config.max_query_len)
        for name, tensor in (("input_ids", input_ids), ("attention_mask", attention_mask)):
            if tuple(tensor.shape) != expected:
                raise ValueError(f"{name} must be {expected} (padded to max_query_len), got {tuple(tensor.shape)}")

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> GlipOutputs:
        self.check_inputs(pixel_values, input_ids, attention_mask)
        hidden, embedded = self.language_backbone.body(input_ids, attention_mask)
        features = self.backbone(pixel_values)
        box_regression, centerness, logits = self.rpn.head(features, hidden, embedded, attention_mask)
        return GlipOutputs(box_regression, centerness, logits, [tuple(f.shape[-2:]) for f in features])

    @torch.no_grad()
    def detect(self, pixel_values: torch.Tensor, image_sizes: list[tuple[int, int]], input_ids: torch.Tensor,
               attention_mask: torch.Tensor, positive_maps: list[dict[int, list[int]]]) -> list[GlipDetections]:
        if len(image_sizes) != pixel_values.shape[0] or len(positive_maps) != pixel_values.shape[0]:
            raise ValueError(f"{pixel_values.shape[0]} images but {len(image_sizes)} image_sizes and "
                             f"{len(positive_maps)} positive_maps; pass one of each per image")
        for h, w in image_sizes:
            if h > pixel_values.shape[2] or w > pixel_values.shape[3]:
                raise ValueError(f"image size {(h, w)} is larger than the padded batch {tuple(pixel_values.shape[2:])}")
        outputs = self(pixel_values, input_ids, attention_mask)
        anchors = grid_anchors(self.config, outputs.grid_sizes, pixel_values.device)
        return postprocess(self.config, outputs.box_regression, outputs.centerness, outputs.dot_product_logits,
                           anchors, positive_maps, [(int(h), int(w)) for h, w in image_sizes])

    # -- folders --------------------------------------------------------------------------------------

    def load_checked(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Strict load with every missing and unexpected key listed."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
        if missing or unexpected or wrong:
            lines = [f"{source} does not fit a GLIP model of this config ({self.config.variant}):"]
            for title, keys in (("missing", missing), ("unexpected", unexpected)):
                if keys:
                    lines.append(f"  {len(keys)} {title} key(s): " + ", ".join(keys))
            if wrong:
                lines.append(f"  {len(wrong)} key(s) of another shape: " + ", ".join(
                    f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong))
            raise CheckpointMismatch("\n".join(lines))
        self.load_state_dict(state, strict=True)

    def save_pretrained(self, folder: str | os.PathLike, tokenizer=None) -> Path:
        """model.safetensors + config.json (+ the tokenizer's own files when given)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_FILE))
        self.config.save(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(folder))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> GlipForGrounding:
        folder = Path(folder)
        path = folder / WEIGHTS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no {WEIGHTS_FILE}; a GLIP folder holds model.safetensors, "
                                    "config.json and tokenizer files (python -m synground_assets.models.glip convert)")
        model = cls(GlipConfig.load(folder))
        model.load_checked(load_file(str(path)), str(path))
        return model.eval()
