"""The ALBEF grounding adapter: `models/albef` playing `grounding.model.GroundingModel`.

ITC features come from the text-only layers [0, fusion_layer), ITM logits from all text layers
with cross-attention to the image in the fusion layers (as AMC's evaluation runs it), GradCAM reads
the cross-attention of `gradcam_layer` (AMC: 8, the third fusion layer). Phrases go through
`pre_caption`; text is truncated to `max_text_tokens` only while training (the module's `training`
flag): evaluation feeds whole phrases, as the official evaluation does.

Its random-init tiny build with the shapes vocabulary is `tiny.grounding.build_tiny_albef`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch import nn

from synground_assets.adapters.loading import resolve_device
from synground_assets.grounding.config import ModelLimits
from synground_assets.grounding.model import TRAIN_CONFIG_FILE, GroundingInputs
from synground_assets.models.albef import AlbefModel, AlbefTokenizer, from_pretrained, save_pretrained
from synground_assets.models.albef.pretrained import read_pretraining_state
from synground_assets.models.albef.processing import images_to_tensor, pre_caption
from synground_assets.roles.base import AdapterInfo


@dataclasses.dataclass
class AlbefPreprocessor:
    """Images and phrases -> CPU `GroundingInputs` at a square resolution: `pre_caption`, the ALBEF
    tokenizer (`[CLS] tokens`, no [SEP], pad to the longest), bicubic resize and CLIP normalisation."""

    tokenizer: AlbefTokenizer
    patch_size: int
    image_size: int
    max_words: int
    max_text_tokens: int | None  # None: no truncation (evaluation)
    dtype: torch.dtype

    def __call__(
        self, images: Sequence[Image.Image], phrases: Sequence[str], resolution: int | None = None
    ) -> GroundingInputs:
        if len(images) != len(phrases):
            raise ValueError(f"got {len(images)} images but {len(phrases)} phrases")
        resolution = resolution or self.image_size
        if resolution % self.patch_size:
            raise ValueError(f"resolution must be divisible by the patch size {self.patch_size} but is {resolution}")
        captions = [pre_caption(phrase, self.max_words) for phrase in phrases]
        input_ids, attention_mask = self.tokenizer(captions, self.max_text_tokens)
        return GroundingInputs(images_to_tensor(images, resolution).to(self.dtype), input_ids, attention_mask)


class AlbefGroundingModel(nn.Module):
    default_objective = "amc"  # AMC-grounding's pretraining loss (grounding/amc.py)

    def __init__(
        self,
        model: AlbefModel,
        tokenizer: AlbefTokenizer,
        gradcam_layer: int | None = None,
        max_text_tokens: int | None = None,
        info: AdapterInfo | None = None,
    ):
        super().__init__()
        config = model.config
        gradcam_layer = config.gradcam_layer if gradcam_layer is None else gradcam_layer
        if not config.fusion_layer <= gradcam_layer < config.text_layers - 1:
            raise ValueError(
                f"gradcam_layer must be a fusion layer other than the last, in [{config.fusion_layer}, "
                f"{config.text_layers - 2}], but is {gradcam_layer}"
            )
        self.model, self.tokenizer = model, tokenizer
        self.gradcam_layer = gradcam_layer
        self.max_text_tokens = config.max_text_tokens if max_text_tokens is None else max_text_tokens
        self.info = info or AdapterInfo("albef", "albef")
        # The momentum copies and queues, if the folder has them.
        self.pretraining_state: dict[str, torch.Tensor] | None = None

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device = "cpu",
        gradcam_layer: int | None = None,
        max_text_tokens: int | None = None,
    ) -> AlbefGroundingModel:
        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        trained_with = Path(folder) / TRAIN_CONFIG_FILE
        if gradcam_layer is None and trained_with.is_file():
            # A fine-tuned folder: explain with the layer its AMC loss trained.
            gradcam_layer = json.loads(trained_with.read_text()).get("gradcam_layer")
        model, tokenizer = from_pretrained(folder)
        grounding = cls(model.to(torch_dtype), tokenizer, gradcam_layer, max_text_tokens)
        grounding.pretraining_state = read_pretraining_state(folder)
        grounding.info = AdapterInfo(
            "albef", str(folder), "",
            settings={"dtype": str(torch_dtype).removeprefix("torch."), "gradcam_layer": grounding.gradcam_layer,
                      "max_text_tokens": grounding.max_text_tokens},
        )
        return grounding.to(resolve_device(str(device)))

    @property
    def device(self) -> torch.device:
        return self.model.temp.device

    def image_size(self) -> int:
        return self.model.config.image_size

    def limits(self) -> ModelLimits:
        return ModelLimits.from_config(self.info.model_id or "this ALBEF model", dataclasses.asdict(self.model.config))

    def patch_grid(self, resolution: int | None = None) -> tuple[int, int]:
        side = (resolution or self.image_size()) // self.model.config.patch_size
        return side, side

    def preprocess(
        self, images: Sequence[Image.Image], phrases: Sequence[str], resolution: int | None = None
    ) -> GroundingInputs:
        return self.preprocessor()(images, phrases, resolution).to(self.device)

    def preprocessor(self) -> AlbefPreprocessor:
        """The CPU half of `preprocess`, without the weights: data-loader workers run it. Truncates
        the text when made while the module is training, as `preprocess` does."""
        config = self.model.config
        return AlbefPreprocessor(self.tokenizer, config.patch_size, self.image_size(), config.max_words,
                                 self.max_text_tokens if self.training else None, self.model.temp.dtype)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.image_embeds(pixel_values)  # (B, 1 + P, D)

    def contrastive_features(self, image_embeds, input_ids, attention_mask):
        return self.model.contrastive_features(image_embeds, input_ids, attention_mask)  # (B, E) x 2

    def itm_logits(self, image_embeds, input_ids, attention_mask, capture_layer=None):
        with self.model.capture_cross_attention(capture_layer) as captured:
            logits = self.model.itm_logits(image_embeds, input_ids, attention_mask)  # (B, 2)
        return logits, captured[0] if captured else None

    @property
    def itc_gradcam_block(self) -> int:
        """The vision block of ITC-mode GradCAM: ALBEF Grounding.py's block_num (8), or the last block of a
        smaller ViT."""
        return min(self.gradcam_layer, self.model.config.vision_layers - 1)

    def itc_similarity_with_attention(self, pixel_values, input_ids, attention_mask, block: int):
        """ALBEF Grounding.py's ITC mode: (B,) similarity image_i . text_i / temp of matching pairs,
        and vision block `block`'s attention probabilities (B, heads, 1 + P, 1 + P)."""
        with self.model.capture_vision_attention(block) as captured:
            image_embeds = self.model.image_embeds(pixel_values)
        image_feat, text_feat = self.model.contrastive_features(image_embeds, input_ids, attention_mask)
        return (image_feat * text_feat).sum(-1) / self.model.temp, captured[0]

    # What the `amc` objective needs (grounding.model.PretrainingModel).
    @property
    def temp(self) -> nn.Parameter:
        return self.model.temp

    @property
    def mask_token_id(self) -> int:
        return self.tokenizer.tokenizer.mask_token_id

    @property
    def cls_token_id(self) -> int:
        return self.tokenizer.cls_token_id

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    @property
    def feature_dim(self) -> int:
        return self.model.config.embed_dim

    def enable_mlm_head(self) -> None:
        self.model.enable_mlm_head()

    def take_pretraining_state(self) -> dict[str, torch.Tensor] | None:
        """The folder's momentum copies and queues (once: the objective that starts from them owns them)."""
        state, self.pretraining_state = self.pretraining_state, None
        return state

    def momentum_modules(self) -> list[nn.Module]:
        # ALBEF's model_pairs: the text encoder with its MLM head; no ITM head.
        model = self.model
        return [model.visual_encoder, model.vision_proj, model.text_encoder, model.text_proj]

    def text_hidden(self, input_ids, attention_mask):
        return self.model.text_hidden(input_ids, attention_mask)  # (B, T, H)

    def image_feature(self, image_embeds):
        return self.model.image_feature(image_embeds)  # (B, E)

    def text_feature(self, text_hidden):
        return self.model.text_feature(text_hidden)  # (B, E)

    def fused_itm_logits(self, text_hidden, attention_mask, image_embeds, capture_layer=None):
        with self.model.capture_cross_attention(capture_layer) as captured:
            logits = self.model.fused_itm_logits(text_hidden, attention_mask, image_embeds)  # (B, 2)
        return logits, captured[0] if captured else None

    def mlm_logits(self, input_ids, attention_mask, image_embeds):
        return self.model.mlm_logits(input_ids, attention_mask, image_embeds)  # (B, T, V)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        # The folder reloads with the layer and truncation this adapter used.
        self.model.config = dataclasses.replace(self.model.config, gradcam_layer=self.gradcam_layer,
                                                max_text_tokens=self.max_text_tokens)
        save_pretrained(folder, self.model, self.tokenizer)
