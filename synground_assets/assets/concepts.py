"""`concepts`: what each item's description is made from (concept sets, or real images/captions)."""

import dagster as dg
import pandas as pd

from synground_assets.assets.stage import (
    ShardOutput,
    generation_asset,
    materialize_shards,
    summary_metadata,
)
from synground_assets.items import item_id, item_seed
from synground_assets.previews import markdown_table
from synground_assets.recipes import shard_index
from synground_assets.resources import ModelSuiteResource, StoreResource
from synground_assets.resources.store import write_table


@generation_asset(kinds={"parquet"})
def concepts(
    context: dg.AssetExecutionContext, store: StoreResource, models: ModelSuiteResource
) -> dg.MaterializeResult:
    """Per item: a seed derived from (recipe, shard, index) and the sampled concepts or real sources."""

    def write_shard(recipe, shard, shard_store, folder) -> ShardOutput:
        sampler = models.suite().concepts(recipe.name)
        indices = range(recipe.shard_size)
        ids = [item_id(recipe.name, shard_index(shard), i) for i in indices]
        seeds = [item_seed(recipe.name, shard_index(shard), i) for i in indices]
        items = sampler.sample(ids, seeds)
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
        write_table(folder, table)
        return ShardOutput(lineage={"concept_sets": table}, info=sampler.info, counts={"items": len(table)},
                           preview=[table])

    outputs = materialize_shards(context, store, "concepts", write_shard)
    examples = outputs[0].preview[0][["item_id", "concepts", "source_image"]]
    return dg.MaterializeResult(
        metadata={**summary_metadata(outputs), "preview": dg.MetadataValue.md(markdown_table(examples))}
    )
