"""Every size of an ALBEF model, explicit: heads and the fusion layer cannot be read off the weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from synground_assets.models.folders import read_config, save_config

CONFIG_FILE = "config.json"
MODEL_TYPE = "albef"


@dataclass
class AlbefConfig:
    # Vision: ViT-B/16 (ALBEF models/vit.py, as built in model_pretrain.py / model_retrieval.py).
    image_size: int = 384  # square input side the pos_embed is laid out for (RefCOCO+ evaluation)
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_mlp_ratio: float = 4.0
    vision_layer_norm_eps: float = 1e-6
    # Text and fusion: BERT-base (ALBEF configs/config_bert.json).
    vocab_size: int = 30522
    text_width: int = 768
    text_layers: int = 12
    text_heads: int = 12
    intermediate_size: int = 3072
    fusion_layer: int = 6  # layers [0, 6) are text-only; [6, 12) add cross-attention to the image
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    text_layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_dropout_prob: float = 0.1
    # Heads.
    embed_dim: int = 256  # vision_proj / text_proj output (ITC)
    initial_temperature: float = 0.07
    # The pretraining MLM head `text_encoder.cls.*` (kept from pretrain checkpoints; `amc` training adds it).
    mlm_head: bool = False
    # How the project uses it.
    gradcam_layer: int = 8  # AMC's text_encoder.encoder.layer[8]: the third fusion layer
    max_text_tokens: int = 30  # training truncation ([CLS] included); ALBEF grounding 30, AMC 25
    max_words: int = 30  # pre_caption keeps this many words
    initializer_range: float = 0.02  # random init only (tiny models); BERT's value
    model_type: str = MODEL_TYPE

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size must be divisible by patch_size {self.patch_size} but is {self.image_size}")
        for width, heads, name in ((self.vision_width, self.vision_heads, "vision"),
                                   (self.text_width, self.text_heads, "text")):
            if width % heads:
                raise ValueError(f"{name} width {width} must be divisible by its {heads} heads")
        if not 0 <= self.fusion_layer < self.text_layers:
            raise ValueError(f"fusion_layer must be in [0, {self.text_layers - 1}] but is {self.fusion_layer}")
        if not self.fusion_layer <= self.gradcam_layer < self.text_layers - 1:
            raise ValueError(
                f"gradcam_layer must be a fusion layer other than the last, in [{self.fusion_layer}, "
                f"{self.text_layers - 2}] (the last one's gradient vanishes off [CLS]), but is {self.gradcam_layer}"
            )
        if self.model_type != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r} but is {self.model_type!r}")

    @property
    def grid_side(self) -> int:
        return self.image_size // self.patch_size

    def save(self, folder: str | Path) -> None:
        save_config(self, folder)

    @classmethod
    def load(cls, folder: str | Path) -> AlbefConfig:
        return cls(**read_config(cls, folder, MODEL_TYPE, "an ALBEF"))


def is_albef_folder(folder: str | Path) -> bool:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("model_type") == MODEL_TYPE
    except (json.JSONDecodeError, AttributeError):
        return False
