"""`phrases`: short phrases extracted from each description (the paper's Psi_t); the stage itself
is `pipeline/phrases.py`."""

import dagster as dg
import pandas as pd

from synground_assets.assets.stage import generation_asset, materialize_shards, summary_metadata
from synground_assets.pipeline.phrases import extract_phrases
from synground_assets.records.previews import markdown_table
from synground_assets.resources import ModelSuiteResource, StoreResource
from synground_assets.roles.phrases import phrase_problem

NO_EMPTY_PHRASE = dg.AssetCheckSpec(
    "no_empty_phrase", asset="phrases",
    description="Every kept phrase is usable: a word that is not a stop word, within the length bound "
                "(no empty, punctuation-only or one-letter phrase).")


@generation_asset(deps=["descriptions"], kinds={"parquet"}, check_specs=[NO_EMPTY_PHRASE])
def phrases(
    context: dg.AssetExecutionContext, store: StoreResource, suite: ModelSuiteResource
) -> dg.MaterializeResult:
    """Every candidate phrase is kept as a row; dropped ones carry the reason (`kept`, `drop_reason`)."""

    def run_shard(recipe, shard, shard_store, _files):
        described = shard_store.read_table(recipe.name, "descriptions", shard)
        return extract_phrases(recipe, shard, described, suite.suite(), context.log)

    results = materialize_shards(context, store, "phrases", run_shard)
    kept = pd.concat([r.table for r in results]).query("kept")
    empty = kept[kept.phrase.map(phrase_problem).notna()]
    return dg.MaterializeResult(
        metadata={**summary_metadata(results), "preview": dg.MetadataValue.md(markdown_table(results[0].table, 8))},
        check_results=[
            dg.AssetCheckResult(check_name="no_empty_phrase", passed=empty.empty,
                                metadata={"empty_phrases": len(empty), "example_ids": ", ".join(empty.phrase_id[:5])})
        ],
    )
