"""The framework-free learning core: GradCAM, the AMC objective, the training loop, the pointing game.

No Dagster here: tensors in, tensors out. The names below are the API the asset layer calls.
"""

from synground_assets.grounding.data import Triplet
from synground_assets.grounding.pointing_game import PointingGameResult, evaluate_pointing_game
from synground_assets.grounding.train import TrainConfig, TrainResult, train
from synground_assets.roles.grounding_blip import load_grounding_model

__all__ = [
    "PointingGameResult",
    "TrainConfig",
    "TrainResult",
    "Triplet",
    "evaluate_pointing_game",
    "load_grounding_model",
    "train",
]
