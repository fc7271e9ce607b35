"""`concepts`: what each item's description is made from (concept sets, or real images/captions).

A source image the sampler dropped from its pool as unreadable is recorded as a removal
(`unreadable_source_image`) of the item whose draw met it; that item got another image.
"""

from __future__ import annotations

import pandas as pd

from synground_assets.config.recipes import Recipe, shard_index
from synground_assets.pipeline.result import TABLE, StageResult, quality_lineage
from synground_assets.quality.removals import Removal
from synground_assets.records.items import item_id, item_seed
from synground_assets.roles.base import RoleProvider

STAGE = "concepts"


def sample_concepts(recipe: Recipe, shard: str, suite: RoleProvider) -> StageResult:
    """Per item: a seed derived from (recipe, shard, index) and the sampled concepts or real sources."""
    sampler = suite.concepts(recipe.name)
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
    take_dropped = getattr(sampler, "take_dropped", None)  # samplers of real images
    removals = [Removal(STAGE, item, "unreadable_source_image", detail=f"{path}: {why}; dropped from the pool")
                for item, path, why in (take_dropped() if take_dropped else [])]
    lineage, counts = {"concept_sets": table}, {"items": len(table)}
    if removals:  # (the lineage of a shard without any stays as it was)
        lineage |= quality_lineage(STAGE, "items", len(table), len(table), removals)
        counts["unreadable_source_images"] = len(removals)
    return StageResult(info=sampler.info, tables={TABLE: table}, lineage=lineage, removals=removals, counts=counts,
                       preview=[table])
