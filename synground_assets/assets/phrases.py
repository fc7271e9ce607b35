"""`phrases`: short phrases extracted from each description (the paper's Psi_t)."""

import dagster as dg
import pandas as pd

from synground_assets.assets.stage import (
    Progress,
    ShardOutput,
    generation_asset,
    materialize_shards,
    run_batched,
    summary_metadata,
)
from synground_assets.items import phrase_id
from synground_assets.previews import markdown_table
from synground_assets.resources import ModelSuiteResource, StoreResource
from synground_assets.resources.store import write_table
from synground_assets.roles.phrases import filter_phrases, phrase_problem

NO_EMPTY_PHRASE = dg.AssetCheckSpec("no_empty_phrase", asset="phrases",
                                    description="Every kept phrase is usable: a word that is not a stop word, within the length bound "
                                                "(no empty, punctuation-only or one-letter phrase).")


@generation_asset(
    deps=["descriptions"],
    kinds={"parquet"},
    check_specs=[NO_EMPTY_PHRASE],
)
def phrases(
    context: dg.AssetExecutionContext, store: StoreResource, models: ModelSuiteResource
) -> dg.MaterializeResult:
    """Every candidate phrase is kept as a row; dropped ones carry the reason (`kept`, `drop_reason`)."""

    def write_shard(recipe, shard, shard_store, folder) -> ShardOutput:
        extractor = models.suite().phrase_extractor(recipe.name)
        described = shard_store.read_table(recipe.name, "descriptions", shard)
        pairs = list(zip(described.item_id, described.description))
        progress = Progress(context.log, f"phrases {recipe.name}|{shard}", len(pairs))
        candidates, skipped = run_batched(
            pairs, recipe.roles["phrase_extractor"].batch_size,
            lambda batch: extractor.extract([text for _, text in batch]), lambda pair: pair[0], progress,
        )
        rows = []
        for (item, text), found in zip(pairs, candidates):
            if found is None:
                continue
            if found.problem:  # an LLM's empty answer or refusal: recorded, not parsed
                skipped.append((item, f"phrase extractor output: {found.problem}"))
                continue
            kept, dropped = filter_phrases(text, found.phrases)
            if found.cut_off:
                dropped.append((found.cut_off, "cut off at the phrase extractor's token limit"))
            for phrase in kept:
                rows.append((item, phrase, True, None))
            for phrase, reason in dropped:
                rows.append((item, phrase, False, reason))
        table = pd.DataFrame(rows, columns=["item_id", "phrase", "kept", "drop_reason"])
        table.insert(2, "phrase_index", table.groupby("item_id").cumcount())
        table.insert(0, "phrase_id", [phrase_id(i, j) for i, j in zip(table.item_id, table.phrase_index)])
        write_table(folder, table)
        kept_count = int(table.kept.sum())
        return ShardOutput(lineage={"phrases": table}, info=extractor.info,
                           counts={"phrases": kept_count, "dropped_phrases": len(table) - kept_count},
                           skipped=skipped, preview=[table])

    outputs = materialize_shards(context, store, "phrases", write_shard)
    kept = pd.concat([o.preview[0] for o in outputs]).query("kept")
    empty = kept[kept.phrase.map(phrase_problem).notna()]
    return dg.MaterializeResult(
        metadata={**summary_metadata(outputs), "preview": dg.MetadataValue.md(markdown_table(outputs[0].preview[0], 8))},
        check_results=[
            dg.AssetCheckResult(check_name="no_empty_phrase", passed=empty.empty,
                                metadata={"empty_phrases": len(empty), "example_ids": ", ".join(empty.phrase_id[:5])})
        ],
    )
