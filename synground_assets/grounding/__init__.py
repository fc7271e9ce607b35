"""The framework-free learning core: GradCAM, the AMC objective, the training loop, the pointing game.

No Dagster here, and no adapter: tensors in, tensors out, through the `GroundingModel` protocol
(`grounding/model.py`) that the adapters in `roles/` implement. The names below are the API the
asset layer calls.
"""

from synground_assets.grounding.data import Triplet
from synground_assets.grounding.model import GroundingInputs, GroundingModel
from synground_assets.grounding.pointing_game import PROTOCOLS, PointingGameResult, evaluate_pointing_game
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.train import TrainResult, train

__all__ = [
    "PROTOCOLS",
    "GroundingInputs",
    "GroundingModel",
    "PointingGameResult",
    "TrainConfig",
    "TrainResult",
    "Triplet",
    "evaluate_pointing_game",
    "train",
]
