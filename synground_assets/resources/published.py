"""What earlier shards of a recipe already hold, for the cross-shard dedup of `images` and `descriptions`.

Shards are written by any number of runs on any number of hosts into one store, so the published
shards are the shared truth: an item is a duplicate when a shard with a smaller key already holds a
near-copy (the earliest shard's item is kept). This is the one place that looks; a deployment whose
lineage index holds the hashes and descriptions can answer it from there instead.
"""

from __future__ import annotations

import pandas as pd

from synground_assets.resources.store import ShardStore


def earlier_shard_rows(store: ShardStore, recipe: str, asset: str, shard: str, columns: list[str]) -> pd.DataFrame:
    """`columns` of every published `asset` shard of `recipe` whose key sorts before `shard`, in key
    order, with a `shard` column. Shards published without a column (older code) are left out."""
    frames = []
    for earlier in store.shards(recipe, asset):
        if earlier >= shard:
            break
        table = store.read_table(recipe, asset, earlier)
        if set(columns) <= set(table.columns):
            frames.append(table[columns].assign(shard=earlier))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*columns, "shard"])
