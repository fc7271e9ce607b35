"""ALBEF in plain PyTorch (Li et al. 2021), the SynGround paper's base model, with loaders for the
official checkpoints. See `config.py` for the sizes, `convert.py` for the checkpoint layouts.

    python -m synground_assets.models.albef convert ALBEF.pth models/albef-14m [--image-size 384]
"""

from synground_assets.models.albef.config import AlbefConfig, is_albef_folder
from synground_assets.models.albef.convert import load_official, read_official_checkpoint, to_grounding_layout
from synground_assets.models.albef.modeling import AlbefModel, CheckpointMismatch
from synground_assets.models.albef.pretrained import from_pretrained, publish, save_pretrained
from synground_assets.models.albef.processing import AlbefTokenizer, images_to_tensor, pre_caption

__all__ = [
    "AlbefConfig",
    "AlbefModel",
    "AlbefTokenizer",
    "CheckpointMismatch",
    "from_pretrained",
    "images_to_tensor",
    "is_albef_folder",
    "load_official",
    "pre_caption",
    "publish",
    "read_official_checkpoint",
    "save_pretrained",
    "to_grounding_layout",
]
