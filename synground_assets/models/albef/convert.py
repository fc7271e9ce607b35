"""Official ALBEF / AMC checkpoints (`.pth`) into this project's ALBEF folder.

Both official layouts are read (facts: ALBEF models/model_pretrain.py, model_retrieval.py,
Grounding.py; AMC models/model_pretrain.py):
- pretrain (ALBEF.pth, AMC's refcoco.pth / flickr.pth): `text_encoder.bert.*`, an MLM head
  `text_encoder.cls.*`, momentum copies `*_m.*`, `image_queue` / `text_queue`, `queue_ptr` (AMC:
  `queue_ptr_img`, `queue_ptr_txt`), `*.position_ids`;
- grounding / retrieval (what ALBEF's Grounding.py saves): no `bert.`, no MLM head, `idx_queue`.

As the official loaders do, `bert.` is renamed away and `pos_embed` is interpolated to the target
grid (bicubic, align_corners=False, class token kept). Unlike them (`strict=False`, mistakes pass
silently), what training alone needs is dropped by name and the rest must match the model exactly:
the error lists every missing and unexpected key.

Files are read with `torch.load(weights_only=True)`: plain tensors and containers only. If a file
needs more (pickled custom objects, e.g. an argparse Namespace or a config object stored next to
the weights), loading stops with an error saying so; it never retries unsafely.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from synground_assets.models.albef.config import AlbefConfig
from synground_assets.models.albef.modeling import AlbefModel
from synground_assets.models.albef.vit import interpolate_pos_embed

# Buffers and heads of pretraining that grounding does not use.
DROPPED_KEYS = ("image_queue", "text_queue", "idx_queue", "queue_ptr", "queue_ptr_img", "queue_ptr_txt")
MOMENTUM_MODULES = ("visual_encoder_m", "text_encoder_m", "vision_proj_m", "text_proj_m", "itm_head_m")
POS_EMBED = "visual_encoder.pos_embed"


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of an official `.pth` (`{'model': state_dict, ...}` or a bare state dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path} holds objects other than tensors, so torch.load(weights_only=True) refused it ({exc}). "
            "It is not loaded unsafely. If you trust the file, re-save its weights alone on a machine where "
            "that is acceptable: torch.save({'model': torch.load(path, weights_only=False)['model']}, 'weights.pth'), "
            "then convert weights.pth"
        ) from exc
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not an ALBEF checkpoint: expected {{'model': state_dict}} or a state dict of tensors")
    return state


def is_dropped(key: str) -> bool:
    """Momentum copies, queues and their pointers, the MLM head, position_ids buffers."""
    top = key.split(".")[0]
    return (key in DROPPED_KEYS or top in MOMENTUM_MODULES or key.startswith(("text_encoder.cls.", "text_encoder.bert.cls."))
            or key.endswith("position_ids"))


def to_grounding_layout(state: dict[str, torch.Tensor], config: AlbefConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the state dict renamed, pruned and interpolated for `config`, the keys dropped)."""
    converted, dropped = {}, []
    for key, tensor in state.items():
        if is_dropped(key):
            dropped.append(key)
            continue
        converted[key.replace("text_encoder.bert.", "text_encoder.", 1)] = tensor
    if POS_EMBED in converted:
        converted[POS_EMBED] = interpolate_pos_embed(converted[POS_EMBED].float(), config.grid_side)
    return converted, dropped


def load_official(path: str | os.PathLike, config: AlbefConfig | None = None) -> AlbefModel:
    """An `AlbefModel` of `config` (default: ALBEF-base at 384 px) holding an official checkpoint."""
    config = config or AlbefConfig()
    state, _ = to_grounding_layout(read_official_checkpoint(path), config)
    model = AlbefModel(config)
    model.load_checked(state, str(path))
    return model
