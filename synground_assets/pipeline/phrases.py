"""`phrases`: short phrases extracted from each description (the paper's Psi_t).

Every candidate is kept as a row; dropped ones carry the reason (`kept`, `drop_reason`). An
extractor's answer that is empty or a refusal skips the item; the last phrase of an answer cut at
the token limit is dropped with that reason, and so is a phrase holding control characters or a
terminal escape fragment. A description over `MAX_DESCRIPTION_CHARS` (from a shard written before
the descriptions stage enforced it) skips its item with the reason.
"""

from __future__ import annotations

import pandas as pd

from synground_assets.config.recipes import Recipe
from synground_assets.pipeline.batching import Logger, progress_or_none, run_batched
from synground_assets.pipeline.result import TABLE, StageResult
from synground_assets.quality.text import MAX_DESCRIPTION_CHARS, phrase_text_problem
from synground_assets.records.items import phrase_id
from synground_assets.roles.base import PhraseCandidates, RoleProvider
from synground_assets.roles.phrases import filter_phrases

STAGE = "phrases"
COLUMNS = ["item_id", "phrase", "kept", "drop_reason"]


def phrase_rows(item: str, text: str, found: PhraseCandidates) -> list[tuple]:
    """(item, phrase, kept, drop_reason) for every candidate of one description."""
    kept, dropped = filter_phrases(text, found.phrases)
    unreadable = {phrase: problem for phrase in kept if (problem := phrase_text_problem(phrase))}
    kept = [phrase for phrase in kept if phrase not in unreadable]
    dropped += list(unreadable.items())
    if found.cut_off:
        dropped.append((found.cut_off, "cut off at the phrase extractor's token limit"))
    return ([(item, phrase, True, None) for phrase in kept]
            + [(item, phrase, False, reason) for phrase, reason in dropped])


def extract_phrases(recipe: Recipe, shard: str, descriptions: pd.DataFrame, suite: RoleProvider,
                    log: Logger | None = None) -> StageResult:
    """descriptions: item_id, description of this shard. One row per candidate phrase."""
    extractor = suite.phrase_extractor(recipe.name)
    pairs, skipped_long = [], []
    for item, text in zip(descriptions.item_id, descriptions.description):
        if len(text) > MAX_DESCRIPTION_CHARS:
            skipped_long.append((item, f"description of {len(text)} characters, over the limit of "
                                       f"{MAX_DESCRIPTION_CHARS}: rematerialize its descriptions shard"))
        else:
            pairs.append((item, text))
    progress = progress_or_none(log, f"phrases {recipe.name}|{shard}", len(pairs))
    candidates, skipped = run_batched(
        pairs, recipe.roles["phrase_extractor"].batch_size,
        lambda batch: extractor.extract([text for _, text in batch]), lambda pair: pair[0], progress,
    )
    skipped = skipped_long + skipped
    rows = []
    for (item, text), found in zip(pairs, candidates):
        if found is None:
            continue
        if found.problem:  # an LLM's empty answer or refusal: recorded, not parsed
            skipped.append((item, f"phrase extractor output: {found.problem}"))
            continue
        rows += phrase_rows(item, text, found)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.insert(2, "phrase_index", table.groupby("item_id").cumcount())
    table.insert(0, "phrase_id", [phrase_id(i, j) for i, j in zip(table.item_id, table.phrase_index)])
    kept = int(table.kept.sum())
    return StageResult(info=extractor.info, tables={TABLE: table}, lineage={"phrases": table}, skipped=skipped,
                       counts={"phrases": kept, "dropped_phrases": len(table) - kept}, preview=[table])
