"""Official ALBEF / AMC checkpoints (`.pth`) into this project's ALBEF folder.

Both official layouts are read (facts: ALBEF models/model_pretrain.py, model_retrieval.py,
Grounding.py; AMC models/model_pretrain.py):
- pretrain (ALBEF.pth, AMC's refcoco.pth / flickr.pth): `text_encoder.bert.*`, an MLM head
  `text_encoder.cls.*`, momentum copies `*_m.*`, `image_queue` / `text_queue`, `queue_ptr` (AMC:
  `queue_ptr_img`, `queue_ptr_txt`), `*.position_ids`;
- grounding / retrieval (what ALBEF's Grounding.py saves, models/model_retrieval.py): no `bert.`, no
  MLM head, momentum copies without `bert.`, `image_queue` / `text_queue`, `idx_queue`, one `queue_ptr`.

As the official loaders do, `bert.` is renamed away and `pos_embed` is interpolated to the target
grid (bicubic, align_corners=False, class token kept). Unlike them (`strict=False`, mistakes pass
silently), what training alone needs is set apart by name and the rest must match the model
exactly: the error lists every missing and unexpected key. A pretrain-layout file's MLM head is
kept in the model (`text_encoder.cls.predictions.*`; the decoder is tied to the word embeddings,
so its copies are dropped), and its momentum copies and queues become `pretraining_state`
(written as `pretraining.safetensors` next to the weights), which the `amc` objective starts from.

Files are read with `torch.load(weights_only=True)`: plain tensors and containers only. If a file
needs more (pickled custom objects, e.g. an argparse Namespace or a config object stored next to
the weights), loading stops with an error saying so; it never retries unsafely.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from synground_assets.models.albef.config import AlbefConfig
from synground_assets.models.albef.modeling import AlbefModel
from synground_assets.models.albef.vit import interpolate_pos_embed
from synground_assets.models.official import read_official_state_dict

# Buffers and heads of pretraining that the grounding model does not hold.
DROPPED_KEYS = ("image_queue", "text_queue", "idx_queue", "queue_ptr", "queue_ptr_img", "queue_ptr_txt")
MOMENTUM_MODULES = ("visual_encoder_m", "text_encoder_m", "vision_proj_m", "text_proj_m", "itm_head_m")
MLM_HEAD = "text_encoder.cls.predictions."
TIED_MLM_KEYS = ("decoder.weight", "decoder.bias")  # the word embeddings and `predictions.bias` again
POS_EMBED = "visual_encoder.pos_embed"
MOMENTUM_PREFIX = "momentum."  # pretraining_state keys: momentum.<model key>, queues and pointers


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of an official ALBEF `.pth` (`{'model': state_dict, ...}` or a bare state dict)."""
    return read_official_state_dict(path, "ALBEF")


def is_dropped(key: str) -> bool:
    """Momentum copies, queues and their pointers, the MLM head's tied copies, position_ids buffers."""
    top = key.split(".")[0]
    key = key.replace("text_encoder.bert.cls.", "text_encoder.cls.", 1)
    return (key in DROPPED_KEYS or top in MOMENTUM_MODULES or key.endswith("position_ids")
            or (key.startswith(MLM_HEAD) and key.removeprefix(MLM_HEAD) in TIED_MLM_KEYS))


def rename(key: str) -> str:
    """An official key in this project's layout (`bert.` renamed away)."""
    return (key.replace("text_encoder.bert.cls.", "text_encoder.cls.", 1)
            .replace("text_encoder.bert.", "text_encoder.", 1))


def to_grounding_layout(state: dict[str, torch.Tensor],
                        config: AlbefConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the state dict renamed, pruned and interpolated for `config`, the keys dropped)."""
    converted, dropped = {}, []
    for key, tensor in state.items():
        if is_dropped(key):
            dropped.append(key)
            continue
        converted[rename(key)] = tensor
    if POS_EMBED in converted:
        converted[POS_EMBED] = interpolate_pos_embed(converted[POS_EMBED].float(), config.grid_side)
    return converted, dropped


def pretraining_state(state: dict[str, torch.Tensor], config: AlbefConfig) -> dict[str, torch.Tensor]:
    """The momentum copies (as `momentum.<model key>`, pos_embed interpolated) and the queues with
    AMC's two pointers of an official state dict; empty when the file has no momentum text encoder.
    ALBEF's single `queue_ptr` (model_pretrain.py, model_retrieval.py) serves both pointers, each
    its own copy: safetensors refuses two names for one tensor's memory."""
    if not any(key.startswith("text_encoder_m.") for key in state):
        return {}
    found = {}
    for key, tensor in state.items():
        top = key.split(".")[0]
        if (top in ("visual_encoder_m", "text_encoder_m", "vision_proj_m", "text_proj_m")
                and not key.endswith("position_ids")):
            online = rename(key.replace(top, top.removesuffix("_m"), 1))
            if not (online.startswith(MLM_HEAD) and online.removeprefix(MLM_HEAD) in TIED_MLM_KEYS):
                found[MOMENTUM_PREFIX + online] = tensor
    embed = MOMENTUM_PREFIX + POS_EMBED
    if embed in found:
        found[embed] = interpolate_pos_embed(found[embed].float(), config.grid_side)
    for name in ("image_queue", "text_queue"):
        if name in state:
            found[name] = state[name]
    for name in ("queue_ptr_img", "queue_ptr_txt"):
        if name in state or "queue_ptr" in state:
            found[name] = state.get(name, state.get("queue_ptr")).clone()
    return found


def load_official(path: str | os.PathLike, config: AlbefConfig | None = None) -> AlbefModel:
    """An `AlbefModel` of `config` (default: ALBEF-base at 384 px) holding an official checkpoint
    (with its MLM head when the file has one)."""
    config = config or AlbefConfig()
    state, _ = to_grounding_layout(read_official_checkpoint(path), config)
    config = dataclasses.replace(config, mlm_head=any(key.startswith(MLM_HEAD) for key in state))
    model = AlbefModel(config)
    model.load_checked(state, str(path))
    return model
