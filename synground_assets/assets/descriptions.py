"""`descriptions`: one text per item, written by the recipe's describer (the paper's Psi_c); the
stage itself is `pipeline/descriptions.py`. Bad outputs and duplicates are recorded in `removals`;
the earlier shards' descriptions a duplicate may repeat come from the lineage index."""

import dagster as dg

from synground_assets.assets.quality_report import quality_metadata
from synground_assets.assets.stage import generation_asset, materialize_shards, summary_metadata
from synground_assets.pipeline.descriptions import describe_items
from synground_assets.records.previews import markdown_table
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource
from synground_assets.resources.dedup_index import earlier_descriptions


@generation_asset(deps=["concepts"], kinds={"parquet"})
def descriptions(
    context: dg.AssetExecutionContext, store: StoreResource, lineage: LineageResource,
    suite: ModelSuiteResource
) -> dg.MaterializeResult:
    """Image2Text, Concept2Text, Text2Text or Concatenation, as the recipe says."""

    def run_shard(recipe, shard, shard_store, _files):
        concepts = shard_store.read_table(recipe.name, "concepts", shard)
        earlier = lambda keys: earlier_descriptions(shard_store, lineage.resolved_path(), recipe.name,  # noqa: E731
                                                    shard, keys)
        return describe_items(recipe, shard, concepts, suite.suite(), earlier, context.log)

    results = materialize_shards(context, store, "descriptions", run_shard)
    return dg.MaterializeResult(
        metadata={**summary_metadata(results), **quality_metadata(results),
                  "preview": dg.MetadataValue.md(markdown_table(results[0].table))}
    )
