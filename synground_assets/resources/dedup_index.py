"""Cross-shard dedup answered by the lineage index: one query per shard, whatever the shard count.

The `images` lineage rows carry each image's perceptual hash (`phash`) and the `descriptions` rows
a digest of the normalised text (`description_key`), so the index can say which earlier items may
repeat this shard's: descriptions by key equality; images by equality on one of `max_distance + 1`
bit bands of the hash (two hashes within `max_distance` bits agree on some band), the exact
Hamming check then running on those few candidates only.

The index is refreshed by `cli index`, the learning assets or a schedule, not by generation steps
(they take no lock), so it may lag behind the store: an earlier shard the index does not hold at
its published version (new, re-published, written before these columns, or the index busy or
absent) is read from its files instead (`published.earlier_shard_rows`). The answer is the same
either way; only its cost differs.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from synground_assets.quality.images import hash_bands
from synground_assets.resources.lineage import Lineage
from synground_assets.resources.published import earlier_shard_rows
from synground_assets.resources.store import ShardStore

_CANDIDATES = """
    WITH versions AS (
        SELECT shard, publish_id FROM indexed_shards WHERE recipe = ? AND asset = ? AND shard < ?),
    complete AS (  -- versions whose rows all carry the lookup column (not indexed before it existed)
        SELECT v.* FROM versions v
        WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.publish_id = v.publish_id AND t.{column} IS NULL))
    SELECT c.shard, c.publish_id, t.item_id, {selected}
    FROM complete c LEFT JOIN {table} t ON t.publish_id = c.publish_id AND ({match})
    ORDER BY c.shard, t.item_id"""


def earlier_image_hashes(store: ShardStore, index: Path, recipe: str, shard: str, hashes: list[str],
                         max_distance: int) -> pd.DataFrame:
    """item_id, phash, shard of the earlier shards' images that may lie within `max_distance` bits
    of one of `hashes` (every one that does is among them), in key order."""
    bands = hash_bands(max_distance)
    values = [[(int(h, 16) >> shift) & mask for h in hashes] for shift, mask in bands]
    match = " OR ".join(f"(((('0x' || t.phash)::UBIGINT >> {shift}) & {mask}) IN (SELECT unnest(?::UBIGINT[])))"
                        for shift, mask in bands)
    return _earlier(store, index, recipe, "images", shard, "phash", ["phash"], match, values)


def earlier_descriptions(store: ShardStore, index: Path, recipe: str, shard: str, keys: list[str]) -> pd.DataFrame:
    """item_id, description, shard of the earlier shards' descriptions whose `description_key` is
    one of `keys`, in key order."""
    return _earlier(store, index, recipe, "descriptions", shard, "description_key", ["description"],
                    "t.description_key IN (SELECT unnest(?::VARCHAR[]))", [keys])


def _earlier(store: ShardStore, index: Path, recipe: str, asset: str, shard: str, column: str,
             columns: list[str], match: str, parameters: list) -> pd.DataFrame:
    published = {s.shard: s.publish_id for s in store.published_in(recipe, asset) if s.shard < shard}
    rows, answered = _from_index(index, recipe, asset, shard, column, columns, match, parameters, published)
    files = earlier_shard_rows(store, recipe, asset, shard, ["item_id", *columns],
                               only=set(store.shards(recipe, asset)) - answered)
    frame = pd.concat([rows, files], ignore_index=True) if len(files) else rows
    return frame.sort_values(["shard", "item_id"], kind="stable", ignore_index=True)[["item_id", *columns, "shard"]]


def _from_index(index: Path, recipe: str, asset: str, shard: str, column: str, columns: list[str], match: str,
                parameters: list, published: dict[str, str]) -> tuple[pd.DataFrame, set[str]]:
    """The candidate rows of the earlier shards the index holds at their published version, and
    those shards. Nothing when there is no index, it is being rebuilt (no wait: the files answer)
    or it predates the lookup column."""
    empty = pd.DataFrame(columns=["item_id", *columns, "shard"])
    if not index.exists():
        return empty, set()
    sql = _CANDIDATES.format(table=asset, column=column, selected=", ".join(f"t.{c}" for c in columns), match=match)
    try:
        found = Lineage(index, busy_timeout_s=0).query(sql, [recipe, asset, shard, *parameters])
    except (duckdb.IOException, duckdb.CatalogException, duckdb.BinderException):
        return empty, set()
    current = found[found.publish_id == found.shard.map(published)]
    return current.dropna(subset=["item_id"])[["item_id", *columns, "shard"]], set(current.shard)
