"""What earlier shards of a recipe already hold, for the cross-shard dedup of `images` and `descriptions`.

Shards are written by any number of runs on any number of hosts into one store, so the published
shards are the shared truth: an item is a duplicate when a shard with a smaller key already holds a
near-copy (the earliest shard's item is kept). This is the one place that looks; a deployment whose
lineage index holds the hashes and descriptions can answer it from there instead.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import pandas as pd

from synground_assets.resources.store import TABLE, ShardStore


def earlier_shard_rows(store: ShardStore, recipe: str, asset: str, shard: str, columns: list[str],
                       only: set[str] | None = None) -> pd.DataFrame:
    """`columns` of every published `asset` shard of `recipe` whose key sorts before `shard` (of
    the shards in `only`, when given: then the folder is not listed), in key order, with a `shard`
    column. Shards published without a column (older code) are left out."""
    frames = []
    for earlier in sorted(only) if only is not None else store.shards(recipe, asset):
        if earlier >= shard:
            break
        folder = store.shard_dir(recipe, asset, earlier)
        if only is not None and not (folder / TABLE).is_file():
            continue
        table = _published_columns(os.path.realpath(folder), tuple(columns)) if folder.is_symlink() else \
            _read_columns(folder, tuple(columns))
        if table is not None:
            frames.append(table.assign(shard=earlier))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*columns, "shard"])


def _read_columns(folder: str | Path, columns: tuple[str, ...]) -> pd.DataFrame | None:
    table = pd.read_parquet(Path(folder) / TABLE)
    return table[list(columns)] if set(columns) <= set(table.columns) else None


# A published version folder never changes (a re-publish makes a new one), so a process reads each
# version once: a range run dedups shard N against shards 0..N-1 without re-reading them per shard.
_published_columns = lru_cache(maxsize=65_536)(_read_columns)
