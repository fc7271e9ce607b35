"""Stage tests without Dagster: the shapes recipe (procedural roles, no weights) with some roles
replaced by stand-ins, and helpers to change a recipe or lay a shard's images out on disk."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from synground_assets.adapters.suite import ModelSuite
from synground_assets.config.recipes import Recipe, recipe_book
from synground_assets.pipeline.result import StageResult
from synground_assets.quality.settings import QualitySettings


class Suite(ModelSuite):
    """The model suite with some roles replaced: `Suite(image_generator=FakeGenerator())`; the
    others are the recipe's own. `asked` lists every role asked for, in order."""

    def __init__(self, **roles):
        super().__init__()
        self.replaced = roles
        self.asked: list[str] = []

    def role(self, recipe_name: str, role: str):
        self.asked.append(role)
        return self.replaced[role] if role in self.replaced else super().role(recipe_name, role)

    def agreement_model(self, recipe_name, agreement):
        self.asked.append("agreement_model")
        return self.replaced["agreement_model"] if "agreement_model" in self.replaced else \
            super().agreement_model(recipe_name, agreement)


def shapes(shard_size: int = 8, quality: dict | None = None, batch_sizes: dict[str, int] | None = None,
           **changes) -> Recipe:
    """The built-in shapes recipe with a smaller shard, a `quality:` block and role batch sizes changed."""
    recipe = recipe_book().get("shapes")
    roles = {name: dataclasses.replace(spec, batch_size=(batch_sizes or {}).get(name, spec.batch_size))
             for name, spec in recipe.roles.items()}
    return dataclasses.replace(recipe, shard_size=shard_size, quality=QualitySettings.from_dict(quality), roles=roles,
                               **changes)


DESCRIPTIONS = [
    "A picture of a red square above a blue diamond.",
    "There is a green circle to the left of a yellow triangle.",
    "This image shows an orange diamond below a purple square.",
    "A simple drawing with a blue circle to the right of a red triangle.",
    "A picture of a yellow square to the left of a green diamond.",
    "There is a purple circle above an orange triangle.",
]


def described(texts: list[str] = DESCRIPTIONS, shard: str = "00000") -> pd.DataFrame:
    """A descriptions table for items 0.. of a shapes shard."""
    return pd.DataFrame({"item_id": [f"shapes:{shard}:{i:04d}" for i in range(len(texts))], "description": texts})


def write_images(result: StageResult, folder: Path) -> Path:
    """An images stage's PNG files laid out as its published shard holds them."""
    for file, image in result.images.items():
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        image.save(folder / file, format="PNG")
    return folder


def same_frames(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> bool:
    return a.keys() == b.keys() and all(a[name].equals(b[name]) for name in a)


def earlier_rows(frame):
    """A stand-in for the lineage index: whatever is asked, these earlier shards' rows."""
    return lambda keys: frame
