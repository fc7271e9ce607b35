"""`descriptions`: one text per item, written by the recipe's describer (the paper's Psi_c)."""

import dagster as dg
import pandas as pd

from synground_assets.assets.stage import Progress, ShardOutput, generation_asset, materialize_shards, run_batched, summary_metadata
from synground_assets.previews import markdown_table
from synground_assets.resources import ModelSuiteResource, StoreResource
from synground_assets.resources.store import write_table
from synground_assets.roles.base import SourceItem


def source_items(table: pd.DataFrame) -> list[SourceItem]:
    return [
        SourceItem(
            item_id=row.item_id,
            seed=int(row.seed),
            concepts=tuple(row.concepts),
            source_image=row.source_image,
            source_captions=tuple(row.source_captions),
        )
        for row in table.itertuples(index=False)
    ]


@generation_asset(
    deps=["concepts"],
    kinds={"parquet"},
)
def descriptions(
    context: dg.AssetExecutionContext, store: StoreResource, models: ModelSuiteResource
) -> dg.MaterializeResult:
    """Image2Text, Concept2Text, Text2Text or Concatenation, as the recipe says."""

    def write_shard(recipe, shard, shard_store, folder) -> ShardOutput:
        describer = models.role(recipe.name, "describer")
        items = source_items(shard_store.read_table(recipe.name, "concepts", shard))
        progress = Progress(context.log, f"descriptions {recipe.name}|{shard}", len(items))
        texts, skipped = run_batched(items, recipe.roles["describer"].batch_size, describer.describe,
                                     lambda item: item.item_id, progress)
        rows = []
        for item, text in zip(items, texts):
            if text is not None and not text.strip():
                skipped.append((item.item_id, "the describer returned an empty description"))
            elif text is not None:
                rows.append((item.item_id, text.strip()))
        table = pd.DataFrame(rows, columns=["item_id", "description"])
        write_table(folder, table)
        return ShardOutput(lineage={"descriptions": table}, info=describer.info, counts={"descriptions": len(table)},
                           skipped=skipped, preview=[table])

    outputs = materialize_shards(context, store, "descriptions", write_shard)
    return dg.MaterializeResult(
        metadata={**summary_metadata(outputs), "preview": dg.MetadataValue.md(markdown_table(outputs[0].preview[0]))}
    )
