"""`descriptions`: one text per item, written by the recipe's describer (the paper's Psi_c).

An output that is empty, cut off at the token limit or a refusal is skipped with its reason, never
passed on; a description identical to one of an earlier item (this shard or an earlier one) is
removed when the recipe's `dedup_descriptions` is on. Both are recorded in `removals`.
"""

import dagster as dg
import pandas as pd

from synground_assets.assets.quality_report import quality_metadata
from synground_assets.assets.stage import (
    Progress,
    ShardOutput,
    generation_asset,
    materialize_shards,
    run_batched,
    summary_metadata,
)
from synground_assets.previews import markdown_table
from synground_assets.quality.removals import Removal, quality_report, removals_frame
from synground_assets.quality.settings import QualitySettings
from synground_assets.quality.text import find_duplicate_texts, text_problem
from synground_assets.resources import ModelSuiteResource, StoreResource
from synground_assets.resources.published import earlier_shard_rows
from synground_assets.resources.store import write_table
from synground_assets.roles.base import SourceItem

STAGE = "descriptions"


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


def check_texts(items, texts, drop_truncated: bool) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[Removal]]:
    """(item_id, text) of the usable outputs; the skipped (item_id, reason); their removals."""
    usable, skipped, removals = [], [], []
    for item, output in zip(items, texts):
        if output is None:
            continue  # the describer failed on it: already skipped by run_batched
        problem = text_problem(output, drop_truncated)
        if problem:
            skipped.append((item.item_id, f"describer output: {problem[1]}"))
            removals.append(Removal(STAGE, item.item_id, problem[0], detail=problem[1]))
        else:
            usable.append((item.item_id, output.text.strip()))
    return usable, skipped, removals


@generation_asset(
    deps=["concepts"],
    kinds={"parquet"},
)
def descriptions(
    context: dg.AssetExecutionContext, store: StoreResource, models: ModelSuiteResource
) -> dg.MaterializeResult:
    """Image2Text, Concept2Text, Text2Text or Concatenation, as the recipe says."""

    def write_shard(recipe, shard, shard_store, folder) -> ShardOutput:
        describer = models.suite().describer(recipe.name)
        settings = QualitySettings.from_dict(recipe.quality)
        items = source_items(shard_store.read_table(recipe.name, "concepts", shard))
        progress = Progress(context.log, f"descriptions {recipe.name}|{shard}", len(items))
        texts, skipped = run_batched(items, recipe.roles["describer"].batch_size, describer.describe,
                                     lambda item: item.item_id, progress)
        rows, bad_outputs, removals = check_texts(items, texts, settings.drop_truncated_text)
        skipped += bad_outputs
        if settings.dedup_descriptions:
            earlier = earlier_shard_rows(shard_store, recipe.name, "descriptions", shard, ["item_id", "description"])
            duplicates = find_duplicate_texts(rows, list(zip(earlier.item_id, earlier.description)))
            removals += [Removal(STAGE, item, "duplicate_description", detail=f"same description as {first}")
                         for item, first in duplicates.items()]
            rows = [(item, text) for item, text in rows if item not in duplicates]
        table = pd.DataFrame(rows, columns=["item_id", "description"])
        write_table(folder, table)
        removal_rows = removals_frame(removals)
        return ShardOutput(lineage={"descriptions": table, "removals": removal_rows,
                                    "shard_quality": quality_report(STAGE, "descriptions", len(items), len(table), removal_rows)},
                           info=describer.info, counts={"descriptions": len(table)}, skipped=skipped, preview=[table])

    outputs = materialize_shards(context, store, "descriptions", write_shard)
    return dg.MaterializeResult(
        metadata={**summary_metadata(outputs), **quality_metadata(outputs),
                  "preview": dg.MetadataValue.md(markdown_table(outputs[0].preview[0]))}
    )
