"""`concepts`: what each item's description is made from (concept sets, or real images/captions)."""

import dagster as dg

from synground_assets.assets.stage import generation_asset, materialize_shards, summary_metadata
from synground_assets.pipeline.concepts import sample_concepts
from synground_assets.records.previews import markdown_table
from synground_assets.resources import ModelSuiteResource, StoreResource


@generation_asset(kinds={"parquet"})
def concepts(
    context: dg.AssetExecutionContext, store: StoreResource, suite: ModelSuiteResource
) -> dg.MaterializeResult:
    """Per item: a seed derived from (recipe, shard, index) and the sampled concepts or real sources."""
    results = materialize_shards(context, store, "concepts",
                                 lambda recipe, shard, _store, _files: sample_concepts(recipe, shard, suite.suite()))
    examples = results[0].table[["item_id", "concepts", "source_image"]]
    return dg.MaterializeResult(
        metadata={**summary_metadata(results), "preview": dg.MetadataValue.md(markdown_table(examples))}
    )
