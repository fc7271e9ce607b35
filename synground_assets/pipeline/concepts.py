"""`concepts`: what each item's description is made from (concept sets, or real images/captions)."""

from __future__ import annotations

import pandas as pd

from synground_assets.items import item_id, item_seed
from synground_assets.pipeline.result import TABLE, StageResult
from synground_assets.recipes import Recipe, shard_index

STAGE = "concepts"


def sample_concepts(recipe: Recipe, shard: str, roles) -> StageResult:
    """Per item: a seed derived from (recipe, shard, index) and the sampled concepts or real sources."""
    sampler = roles.concepts(recipe.name)
    indices = range(recipe.shard_size)
    number = shard_index(shard)
    items = sampler.sample([item_id(recipe.name, number, i) for i in indices],
                           [item_seed(recipe.name, number, i) for i in indices])
    table = pd.DataFrame(
        {
            "item_id": [it.item_id for it in items],
            "item_index": list(indices),
            "seed": [it.seed for it in items],
            "concepts": [list(it.concepts) for it in items],
            "source_image": [it.source_image for it in items],
            "source_captions": [list(it.source_captions) for it in items],
        }
    )
    return StageResult(info=sampler.info, tables={TABLE: table}, lineage={"concept_sets": table},
                       counts={"items": len(table)}, preview=[table])
