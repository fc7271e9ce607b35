"""Cross-shard dedup answered by the lineage index: one connection and a few small queries per shard,
whatever the number of earlier shards.

The `images` lineage rows carry each image's perceptual hash (`phash`, and as a 64-bit integer
`phash_bits`) and the `descriptions` rows a digest of the normalised text (`description_key`), so
the index says which earlier items repeat this shard's: descriptions by key equality; images by an
equality join on the bit bands of `hash_bands(max_distance)` (two hashes within `max_distance` bits
agree on some band), precomputed at refresh in `image_bands` (dedup_tables.py), then the exact
Hamming distance, all inside DuckDB: only the matches return.

The index is refreshed by `cli index`, the learning assets or a schedule, not by generation steps
(they take no lock), so it may lag behind the store. Which earlier shards it holds at their
published version: when the asset folder's stamp (ShardStore.folder_stamp) is the one the refresh
recorded before listing the folder, no shard was published there since, so every shard it indexed
is current and the folder is not listed; otherwise the folder is listed (one readlink per shard)
and the versions compared. An earlier shard the index does not hold at its published version (new,
re-published, written before these columns, of the layout before links, or the index busy or
absent) is read from its files instead (`published.earlier_shard_rows`). The answer is the same
either way; only its cost differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import duckdb
import pandas as pd

from synground_assets.quality.images import hash_bands
from synground_assets.resources.dedup_tables import band_keys
from synground_assets.resources.lineage import Lineage
from synground_assets.resources.lineage_schema import SCHEMA_FINGERPRINT
from synground_assets.resources.published import earlier_shard_rows
from synground_assets.resources.store import ShardStore

# What a lookup forgoes the index for: no index file, one being written (no wait), or one of another schema.
_NO_INDEX = (duckdb.IOException, duckdb.CatalogException, duckdb.BinderException, duckdb.ConnectionException,
             TimeoutError, FileNotFoundError)
# What the index knows of one asset folder: its schema is this code's, the stamps it recorded, the
# earlier versions it cannot answer for.
_STATE = """SELECT (SELECT count(*) FROM index_schema WHERE fingerprint = ?),
    (SELECT list({'stamp': stamp, 'legacy': legacy}) FROM indexed_folders WHERE recipe = ? AND asset = ?),
    (SELECT list(shard) FROM incomplete_versions WHERE recipe = ? AND asset = ? AND shard < ?)"""
# Of the matches, the earliest (shard, item) per key of this shard: what a first-copy-wins dedup keeps
# (find_near_duplicates, find_duplicate_texts); the shards left to the files (`excluded`) left out.
# (A struct orders by its fields in turn; a hash aggregate, no sort.)
_EARLIEST = """SELECT earliest.item_id, earliest.{column}, earliest.shard FROM (
        SELECT min({{'shard': shard, 'item_id': item_id, '{column}': {column}}}) AS earliest FROM matches
        WHERE shard < ? AND shard NOT IN (SELECT unnest(?::VARCHAR[])) GROUP BY probe)"""
# Near-duplicates from the precomputed bands: a hash join on the band key, built on this shard's few
# keys, then the exact Hamming check. Numbers in as hex: a Python int list may go to DOUBLE.
_IMAGES_BANDED = """WITH new AS (SELECT ('0x' || unnest(?::VARCHAR[]))::UBIGINT AS key,
                                ('0x' || unnest(?::VARCHAR[]))::UBIGINT AS bits),
    matches AS (SELECT n.bits AS probe, b.item_id, b.phash, b.shard FROM image_bands b JOIN new n USING (key)
                WHERE b.recipe = ? AND b.distance = ? AND bit_count(xor(b.phash_bits, n.bits)) <= ?)
    """ + _EARLIEST.format(column="phash")
# A distance the refresh did not band: each band computed on the fly over the recipe's images.
_IMAGES_UNBANDED = """WITH new AS (SELECT ('0x' || unnest(?::VARCHAR[]))::UBIGINT AS bits),
    pool AS (SELECT item_id, phash, phash_bits, shard FROM images
             WHERE recipe = ? AND phash IS NOT NULL AND phash_bits IS NOT NULL),
    matches AS ({near})
    """ + _EARLIEST.format(column="phash")
_BAND = """SELECT n.bits AS probe, p.item_id, p.phash, p.shard FROM pool p JOIN new n
               ON (p.phash_bits >> {shift}) & {mask} = (n.bits >> {shift}) & {mask}
               WHERE bit_count(xor(p.phash_bits, n.bits)) <= {distance}"""
_DESCRIPTIONS = """WITH new AS (SELECT DISTINCT TRY_CAST('0x' || unnest(?::VARCHAR[]) AS UBIGINT) AS key),
    matches AS (SELECT d.key AS probe, d.item_id, d.description, d.shard FROM description_keys d JOIN new USING (key)
                WHERE d.recipe = ?)
    """ + _EARLIEST.format(column="description")


def earlier_image_hashes(store: ShardStore, index: Path, recipe: str, shard: str, hashes: list[str],
                         max_distance: int) -> pd.DataFrame:
    """item_id, phash, shard of earlier shards' images within `max_distance` bits of `hashes`, in key
    order: from the index, the earliest such image per hash (all a first-copy-wins dedup needs); from
    the files, every image of the shards the index does not hold."""
    probes = [(f"{key:x}", h) for h in hashes for key in band_keys(int(h, 16), max_distance)]

    def matches(connection: duckdb.DuckDBPyConnection, excluded: list[str]) -> pd.DataFrame:
        if connection.execute("SELECT count(*) FROM banded_distances WHERE distance = ?",
                              [max_distance]).fetchone()[0]:
            return connection.execute(_IMAGES_BANDED, [[k for k, _ in probes], [h for _, h in probes], recipe,
                                                       max_distance, max_distance, shard, excluded]).df()
        near = " UNION ALL ".join(_BAND.format(shift=shift, mask=mask, distance=max_distance)
                                  for shift, mask in hash_bands(max_distance))
        sql = _IMAGES_UNBANDED.replace("{near}", near)  # not format: the query's struct literal has braces
        return connection.execute(sql, [list(hashes), recipe, shard, excluded]).df()

    return _earlier(store, index, recipe, "images", shard, ["phash"], matches)


def earlier_descriptions(store: ShardStore, index: Path, recipe: str, shard: str, keys: list[str]) -> pd.DataFrame:
    """item_id, description, shard of earlier shards' descriptions whose `description_key` is one of
    `keys`, in key order: from the index, the earliest per key; from the files, every description of
    the shards the index does not hold."""
    def matches(connection: duckdb.DuckDBPyConnection, excluded: list[str]) -> pd.DataFrame:
        return connection.execute(_DESCRIPTIONS, [list(keys), recipe, shard, excluded]).df()

    return _earlier(store, index, recipe, "descriptions", shard, ["description"], matches)


def _earlier(store: ShardStore, index: Path, recipe: str, asset: str, shard: str, columns: list[str],
             matches: Callable[[duckdb.DuckDBPyConnection, list[str]], pd.DataFrame]) -> pd.DataFrame:
    rows, missing = _from_index(store, index, recipe, asset, shard, matches)
    if rows is None:
        rows = pd.DataFrame(columns=["item_id", *columns, "shard"])
    if missing:
        rows = pd.concat([rows, earlier_shard_rows(store, recipe, asset, shard, ["item_id", *columns], only=missing)],
                         ignore_index=True)
    return (rows.drop_duplicates(["item_id"]).sort_values(["shard", "item_id"], kind="stable", ignore_index=True)
            [["item_id", *columns, "shard"]])


def _from_index(store: ShardStore, index: Path, recipe: str, asset: str, shard: str,
                matches) -> tuple[pd.DataFrame | None, set[str]]:
    """The candidate rows of the earlier shards the index holds at their published version, and the
    earlier shards it does not (to be read from files). Every shard is left to the files when there
    is no index, it is being written (no wait: the files answer) or it has another schema."""
    stamp = store.folder_stamp(recipe, asset)  # before the index is read: a publish after it changes it
    try:
        with Lineage(index, busy_timeout_s=0).reading() as connection:
            schema, recorded, incomplete = connection.execute(_STATE, [SCHEMA_FINGERPRINT, recipe, asset, recipe,
                                                                       asset, shard]).fetchone()
            if not schema:  # written last by other code: its derived tables may not match its shards
                return None, _listed(store, recipe, asset, shard)[0]
            recorded, incomplete = recorded or [], set(incomplete or [])  # list() of no rows is NULL
            if stamp is not None and len(recorded) == 1 and recorded[0]["stamp"] == stamp:
                # No publish in the folder since the refresh listed it: every shard it indexed is current.
                legacy = {name for name in recorded[0]["legacy"] if name < shard}
                return matches(connection, sorted(incomplete)), incomplete | legacy
            # Published into since: list the folder and compare versions (one readlink per shard).
            wanted, published = _listed(store, recipe, asset, shard)
            indexed = dict(connection.execute(
                "SELECT shard, publish_id FROM indexed_shards WHERE recipe = ? AND asset = ? AND shard < ?",
                [recipe, asset, shard]).fetchall())
            current = {name for name, publish_id in indexed.items()
                       if published.get(name) == publish_id and name not in incomplete}
            return matches(connection, sorted(set(indexed) - current)), wanted - current
    except _NO_INDEX:
        return None, _listed(store, recipe, asset, shard)[0]


def _listed(store: ShardStore, recipe: str, asset: str, shard: str) -> tuple[set[str], dict[str, str]]:
    """The earlier shards in the asset folder (published, and of the layout before links), listing
    it (one readlink per shard), and the published ones' publish ids."""
    folder = store.asset_folder(recipe, asset, check_present=False)  # a link to a vanished version: no file to read
    published = {s.shard: s.publish_id for s in folder.published if s.shard < shard}
    return set(published) | {name for name in folder.legacy if name < shard}, published
