"""`descriptions`: one text per item, written by the recipe's describer (the paper's Psi_c).

An output that is empty, over `MAX_DESCRIPTION_CHARS`, cut off at the token limit or a refusal is
skipped with its reason, never passed on; terminal escape sequences and control characters are
stripped from an output (a `control_characters` removal row, the item kept); a description identical
to one of an earlier item (this shard or an earlier one) is removed when the recipe's
`dedup_descriptions` is on. All are recorded as removals.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd

from synground_assets.config.recipes import Recipe
from synground_assets.pipeline.batching import Logger, Skipped, progress_or_none, run_batched
from synground_assets.pipeline.result import TABLE, StageResult, quality_lineage
from synground_assets.quality.removals import Removal
from synground_assets.quality.text import description_key, find_duplicate_texts, strip_control, text_problem
from synground_assets.roles.base import GeneratedText, RoleProvider, SourceItem

STAGE = "descriptions"
COLUMNS = ["item_id", "description"]
# this shard's description keys -> item_id, description of earlier shards' items with such a key (at least the
# earliest per key: the first copy is kept)
EarlierTexts = Callable[[list[str]], pd.DataFrame]


def source_items(concepts: pd.DataFrame) -> list[SourceItem]:
    """The rows of a `concepts` table as what describers take."""
    return [
        SourceItem(
            item_id=row.item_id,
            seed=int(row.seed),
            concepts=tuple(row.concepts),
            source_image=row.source_image,
            source_captions=tuple(row.source_captions),
        )
        for row in concepts.itertuples(index=False)
    ]


def check_texts(items: Sequence[SourceItem], texts: Sequence[GeneratedText | None],
                drop_truncated: bool) -> tuple[list[tuple[str, str]], list[Skipped], list[Removal]]:
    """(item_id, text) of the usable outputs (stripped); the skipped (item_id, reason); their removals."""
    usable, skipped, removals = [], [], []
    for item, text in zip(items, texts):
        if text is None:
            continue  # the describer failed on it: already skipped by run_batched
        cleaned, stripped = strip_control(text.text)
        if stripped:
            removals.append(Removal(STAGE, item.item_id, "control_characters", value=stripped,
                                    detail=f"stripped {stripped} control character(s) or terminal escape sequence(s)"))
            text = GeneratedText(cleaned, text.hit_token_limit)
        problem = text_problem(text, drop_truncated)
        if problem:
            skipped.append((item.item_id, f"describer output: {problem[1]}"))
            removals.append(Removal(STAGE, item.item_id, problem[0], detail=problem[1]))
        else:
            usable.append((item.item_id, text.text.strip()))
    return usable, skipped, removals


def duplicate_removals(rows: list[tuple[str, str]], earlier: EarlierTexts) -> list[Removal]:
    """rows: (item_id, text) of this shard. A removal per text that repeats an earlier shard's item
    or one before it in this shard (the first one is kept)."""
    found = earlier([description_key(text) for _, text in rows]) if rows else pd.DataFrame(columns=COLUMNS)
    duplicates = find_duplicate_texts(rows, list(zip(found.item_id, found.description)))
    return [Removal(STAGE, item, "duplicate_description", detail=f"same description as {first}")
            for item, first in duplicates.items()]


def describe_items(recipe: Recipe, shard: str, concepts: pd.DataFrame, suite: RoleProvider, earlier: EarlierTexts,
                   log: Logger | None = None) -> StageResult:
    """concepts: this shard's `concepts` table; earlier(keys): item_id, description of the earlier
    shards' descriptions with one of these `description_key`s (asked once, when the recipe dedups
    descriptions). Image2Text, Concept2Text, Text2Text or Concatenation, as the recipe's describer does."""
    describer = suite.describer(recipe.name)
    settings = recipe.quality
    items = source_items(concepts)
    progress = progress_or_none(log, f"descriptions {recipe.name}|{shard}", len(items))
    texts, skipped = run_batched(items, recipe.roles["describer"].batch_size, describer.describe,
                                 lambda item: item.item_id, progress)
    rows, bad_outputs, removals = check_texts(items, texts, settings.drop_truncated_text)
    skipped += bad_outputs
    if settings.dedup_descriptions:
        duplicates = duplicate_removals(rows, earlier)
        removals += duplicates
        removed = {r.item_id for r in duplicates}
        rows = [(item, text) for item, text in rows if item not in removed]
    table = pd.DataFrame(rows, columns=COLUMNS)
    return StageResult(info=describer.info, tables={TABLE: table}, removals=removals, skipped=skipped, preview=[table],
                       # The lineage rows keep the key the index answers the next shards' dedup by.
                       lineage={"descriptions": table.assign(description_key=table.description.map(description_key)),
                                **quality_lineage(STAGE, "descriptions", len(items), len(table), removals)},
                       counts={"descriptions": len(table)})
