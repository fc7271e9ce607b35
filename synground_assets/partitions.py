"""Partitions: generation assets by recipe x shard, the checkpoint by recipe."""

from __future__ import annotations

import dagster as dg

from synground_assets.config.recipes import recipe_book

_book = recipe_book()

recipe_partitions = dg.StaticPartitionsDefinition(sorted(_book.recipes))
shard_partitions = dg.MultiPartitionsDefinition(
    {"recipe": recipe_partitions, "shard": dg.StaticPartitionsDefinition(_book.shard_keys())}
)


def split_shard_key(key: str) -> tuple[str, str]:
    """'shapes|00003' -> ('shapes', '00003')."""
    if isinstance(key, dg.MultiPartitionKey):
        return key.keys_by_dimension["recipe"], key.keys_by_dimension["shard"]
    recipe, _, shard = str(key).partition("|")
    return recipe, shard
