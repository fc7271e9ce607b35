"""Official GLIP checkpoints (`.pth`, microsoft/GLIP) into this project's GLIP folder.

An official file is a `torch.save` dict with the weights under `'model'` (mb/utils/checkpoint.py:33-54),
keys carrying the DDP `module.` prefix or not. As the official loader does
(mb/utils/model_serialization.py:118-134) the prefix is stripped when every key has it. Unlike it
(suffix matching, unknown keys ignored, missing keys left at their init) the load is strict: what the
model derives is set apart by name and checked, and every other key must match the model exactly; the
error lists each missing, unexpected and mis-shaped key.

Set apart: `rpn.anchor_generator.cell_anchors.{0..4}` (must equal the anchors of the chosen config, a
check that the config's anchors are the file's), BERT's `embeddings.position_ids` / `token_type_ids`
buffers (derived), and BERT's `pooler.*` (GLIP builds BertModel without a pooler, bert_model.py:20;
mmdetection's glip_to_mmdet.py skips it too).

Files are read with `torch.load(weights_only=True)`: plain tensors and containers only; a file that
needs more is refused with an error saying so, never retried unsafely.
"""

from __future__ import annotations

import os
import re

import torch

from synground_assets.models.glip.anchors import all_cell_anchors
from synground_assets.models.glip.config import PRESETS, GlipConfig
from synground_assets.models.glip.modeling import CheckpointMismatch, GlipForGrounding
from synground_assets.models.official import read_official_state_dict

DDP_PREFIX = "module."
ANCHORS = re.compile(r"^rpn\.anchor_generator\.cell_anchors\.(\d+)$")
DERIVED_BERT_BUFFERS = ("language_backbone.body.model.embeddings.position_ids",
                        "language_backbone.body.model.embeddings.token_type_ids")
POOLER = "language_backbone.body.model.pooler."


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of an official GLIP `.pth` (`{'model': state_dict, ...}` or a bare state dict)."""
    return read_official_state_dict(path, "GLIP")


def strip_ddp_prefix(state: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Without `module.` when every key has it (model_serialization.py:118-125); a file mixing both is refused."""
    prefixed = [k for k in state if k.startswith(DDP_PREFIX)]
    if not prefixed:
        return dict(state)
    if len(prefixed) != len(state):
        plain = sorted(k for k in state if not k.startswith(DDP_PREFIX))
        raise CheckpointMismatch(f"{source}: {len(prefixed)} keys carry the '{DDP_PREFIX}' prefix and "
                                 f"{len(plain)} do not (e.g. {', '.join(plain[:5])}); re-save it with one layout")
    return {k[len(DDP_PREFIX):]: v for k, v in state.items()}


def detect_preset(state: dict[str, torch.Tensor]) -> str:
    """'tiny', 'tiny-a' or 'large' from the keys of a prefix-free official state dict."""
    fused = any(k.startswith("rpn.head.dyhead_tower.0.b_attn.") for k in state)
    stage2 = {int(m.group(1)) for k in state if (m := re.match(r"^backbone\.body\.layers\.2\.blocks\.(\d+)\.", k))}
    if len(stage2) == 18:
        return "large"
    return "tiny" if fused else "tiny-a"


def split_official(state: dict[str, torch.Tensor], config: GlipConfig,
                   source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the model's state dict, the keys set apart). Anchors in the file must equal the config's."""
    expected = all_cell_anchors(config)
    model_state, set_apart = {}, []
    for key, tensor in state.items():
        match = ANCHORS.match(key)
        if match:
            level = int(match.group(1))
            if level >= len(expected) or tuple(tensor.shape) != tuple(expected[level].shape) or \
                    not torch.allclose(tensor.float(), expected[level]):
                raise CheckpointMismatch(
                    f"{source}: {key} = {tensor.tolist()} differs from the config's anchors "
                    f"({expected[level].tolist() if level < len(expected) else 'no such level'}); "
                    "check anchor_sizes/anchor_strides/aspect_ratios of the chosen --config")
            set_apart.append(key)
        elif key in DERIVED_BERT_BUFFERS or key.startswith(POOLER):
            set_apart.append(key)
        else:
            model_state[key] = tensor.float() if tensor.is_floating_point() else tensor
    return model_state, set_apart


def load_official(path: str | os.PathLike, config: GlipConfig | None = None) -> GlipForGrounding:
    """A `GlipForGrounding` holding an official checkpoint, strictly; `config` defaults to the preset the
    keys point to (GLIP-T, GLIP-T (A) or GLIP-L)."""
    source = str(path)
    state = strip_ddp_prefix(read_official_checkpoint(path), source)
    config = config or PRESETS[detect_preset(state)]()
    model_state, _ = split_official(state, config, source)
    model = GlipForGrounding(config)
    model.load_checked(model_state, source)
    return model.eval()
