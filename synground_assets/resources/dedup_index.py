"""Cross-shard dedup answered by the lineage index: one query per shard, whatever the shard count.

The `images` lineage rows carry each image's perceptual hash (`phash`, and as a 64-bit integer
`phash_bits`) and the `descriptions` rows a digest of the normalised text (`description_key`), so
the index says which earlier items repeat this shard's: descriptions by key equality; images by a
join on each of `max_distance + 1` bit bands of the hash (two hashes within `max_distance` bits
agree on some band), then the exact Hamming distance, all inside DuckDB: only the matches return.

The index is refreshed by `cli index`, the learning assets or a schedule, not by generation steps
(they take no lock), so it may lag behind the store: an earlier shard the index does not hold at
its published version (new, re-published, written before these columns, or the index busy or
absent) is read from its files instead (`published.earlier_shard_rows`). The answer is the same
either way; only its cost differs.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pandas as pd

from synground_assets.quality.images import hash_bands
from synground_assets.resources.lineage import Lineage
from synground_assets.resources.published import earlier_shard_rows
from synground_assets.resources.store import ShardStore

_VERSIONS = """
    versions AS (SELECT shard, publish_id FROM indexed_shards WHERE recipe = ? AND asset = ? AND shard < ?),
    complete AS (  -- versions whose rows all carry the lookup column (not indexed before it existed)
        SELECT v.* FROM versions v
        WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.publish_id = v.publish_id AND t.{column} IS NULL))"""

# Near-duplicates: for each bit band, a hash join of the recipe's earlier hashes with the new ones
# on that band's bits, then the exact Hamming check; only the earlier images within the distance
# of some new one come back.
_IMAGES = """
    WITH new AS (SELECT ('0x' || unnest(?::VARCHAR[]))::UBIGINT AS bits),  -- hex in: a Python int list may go to DOUBLE
    pool AS (SELECT item_id, phash, phash_bits, publish_id FROM images WHERE recipe = ? AND shard < ?),
    near AS ({near}),
    {versions}
    SELECT c.shard, c.publish_id, near.item_id, near.phash
    FROM complete c LEFT JOIN near ON near.publish_id = c.publish_id
    ORDER BY c.shard, near.item_id"""
_BAND = """SELECT p.item_id, p.phash, p.publish_id FROM pool p JOIN new n
               ON (p.phash_bits >> {shift}) & {mask} = (n.bits >> {shift}) & {mask}
               WHERE bit_count(xor(p.phash_bits, n.bits)) <= {distance}"""
_DESCRIPTIONS = """
    WITH {versions},
    same AS (SELECT item_id, description, publish_id FROM descriptions
             WHERE recipe = ? AND shard < ? AND description_key IN (SELECT unnest(?::VARCHAR[])))
    SELECT c.shard, c.publish_id, same.item_id, same.description
    FROM complete c LEFT JOIN same ON same.publish_id = c.publish_id
    ORDER BY c.shard, same.item_id"""


def earlier_image_hashes(store: ShardStore, index: Path, recipe: str, shard: str, hashes: list[str],
                         max_distance: int) -> pd.DataFrame:
    """item_id, phash, shard of the earlier shards' images within `max_distance` bits of one of
    `hashes` (from the index; from the files, every image of the shards it does not hold), in key order."""
    near = " UNION ".join(_BAND.format(shift=shift, mask=mask, distance=max_distance)
                          for shift, mask in hash_bands(max_distance))
    sql = _IMAGES.format(near=near, versions=_VERSIONS.format(table="images", column="phash_bits"))
    parameters = [list(hashes), recipe, shard, recipe, "images", shard]
    return _earlier(store, index, recipe, "images", shard, ["phash"], sql, parameters)


def earlier_descriptions(store: ShardStore, index: Path, recipe: str, shard: str, keys: list[str]) -> pd.DataFrame:
    """item_id, description, shard of the earlier shards' descriptions whose `description_key` is
    one of `keys` (every description of the shards the index does not hold), in key order."""
    sql = _DESCRIPTIONS.format(versions=_VERSIONS.format(table="descriptions", column="description_key"))
    return _earlier(store, index, recipe, "descriptions", shard, ["description"], sql,
                    [recipe, "descriptions", shard, recipe, shard, keys])


def _earlier(store: ShardStore, index: Path, recipe: str, asset: str, shard: str, columns: list[str], sql: str,
             parameters: list) -> pd.DataFrame:
    published, legacy = _earlier_versions(store, recipe, asset, shard)
    rows, answered = _from_index(index, columns, sql, parameters, published)
    missing = (set(published) | legacy) - answered
    if missing:
        rows = pd.concat([rows, earlier_shard_rows(store, recipe, asset, shard, ["item_id", *columns], only=missing)],
                         ignore_index=True)
    return rows.sort_values(["shard", "item_id"], kind="stable", ignore_index=True)[["item_id", *columns, "shard"]]


def _earlier_versions(store: ShardStore, recipe: str, asset: str, shard: str) -> tuple[dict[str, str], set[str]]:
    """shard -> publish id of the earlier published shards (one readlink each), and the earlier
    shards in the layout before links (plain folders: the index cannot hold them)."""
    published = {s.shard: s.publish_id for s in store.published_in(recipe, asset) if s.shard < shard}
    folder = store.root / recipe / asset
    if not folder.is_dir():
        return published, set()
    with os.scandir(folder) as entries:
        legacy = {e.name for e in entries if not e.name.startswith(".") and e.name < shard and not e.is_symlink()
                  and e.is_dir()}
    return published, legacy


def _from_index(index: Path, columns: list[str], sql: str, parameters: list,
                published: dict[str, str]) -> tuple[pd.DataFrame, set[str]]:
    """The candidate rows of the earlier shards the index holds at their published version, and
    those shards. Nothing when there is no index, it is being rebuilt (no wait: the files answer)
    or it predates the lookup column."""
    empty = pd.DataFrame(columns=["item_id", *columns, "shard"])
    if not index.exists():
        return empty, set()
    try:
        found = Lineage(index, busy_timeout_s=0).query(sql, parameters)
    except (duckdb.IOException, duckdb.CatalogException, duckdb.BinderException):
        return empty, set()
    current = found[found.publish_id == found.shard.map(published)]
    return current.dropna(subset=["item_id"])[["item_id", *columns, "shard"]], set(current.shard)
