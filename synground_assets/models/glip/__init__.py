"""GLIP (Li et al., CVPR 2022; microsoft/GLIP, MIT) in plain PyTorch, the SynGround paper's box detector, with a
strict loader for the official checkpoints. See `modeling.py` for the interface, `config.py` for the sizes,
`convert.py` for the checkpoint layout.

    python -m synground_assets.models.glip convert glip_tiny_model_o365_goldg.pth models/glip-t [--config tiny]
"""

from synground_assets.models.glip.config import GlipConfig, glip_large, glip_tiny, glip_tiny_a, is_glip_folder
from synground_assets.models.glip.convert import load_official, read_official_checkpoint
from synground_assets.models.glip.modeling import CheckpointMismatch, GlipForGrounding, GlipOutputs
from synground_assets.models.glip.postprocess import GlipDetections

__all__ = [
    "CheckpointMismatch",
    "GlipConfig",
    "GlipDetections",
    "GlipForGrounding",
    "GlipOutputs",
    "glip_large",
    "glip_tiny",
    "glip_tiny_a",
    "is_glip_folder",
    "load_official",
    "read_official_checkpoint",
]
