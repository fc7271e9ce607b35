"""How a recipe names the adapter of a role (`RoleSpec`), and the errors of the role contract: a
recipe that cannot be used (`RecipeError`) and a model it names that cannot be loaded
(`ModelLoadError`). Torch-free, below `recipes` (which reads specs from YAML) and every adapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class RecipeError(ValueError):
    """A recipe file that cannot be used; the message names the place and the fix."""


@dataclass(frozen=True)
class RoleSpec:
    """Which adapter plays a role and how it is loaded."""

    adapter: str
    model: str | None = None  # a hub id or a local folder, for model-backed adapters
    revision: str | None = None
    dtype: str = "float32"
    device: str = "auto"  # "auto": cuda when available, else cpu
    batch_size: int = 8
    options: dict[str, Any] = field(default_factory=dict)  # generation settings, thresholds, ...


class ModelLoadError(RecipeError):
    """A model a recipe names cannot be loaded; the message names the model and the fix."""
