"""Reading an official release's `.pth`: what the ALBEF and GLIP converters share."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch


def read_official_state_dict(path: str | os.PathLike, family: str) -> dict[str, torch.Tensor]:
    """The state dict of an official `.pth` of `family` ('ALBEF', 'GLIP'): `{'model': state_dict, ...}`
    (the trainers' layout) or a bare state dict, read with `torch.load(weights_only=True)`: plain
    tensors and containers only. A file that needs more (pickled custom objects, e.g. an argparse
    Namespace stored next to the weights) is refused with the reason; it is never retried unsafely."""
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
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not an {family} checkpoint: expected {{'model': state_dict}} "
                         "or a state dict of tensors")
    return state
