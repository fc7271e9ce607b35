"""The tables the lineage index derives for the cross-shard dedup lookup (resources/dedup_index.py),
written by the refresh (lineage_index.py) inside its batch transactions:

- `image_bands`: each image's hash cut into the `hash_bands(distance)` bands, for every distance in
  `banded_distances`, keyed by one number (band << 56 | the band's bits); `description_keys`: each
  description's `description_key` as a number. A lookup is one equality join of this shard's few
  keys with them: DuckDB builds its hash table (and a Bloom filter it pushes into the scan) on the
  few, so only the key column of the pool is read, then the exact check runs on the matches;
- `incomplete_versions`: the versions with a row lacking its lookup key (indexed before the column
  existed), which the lookup reads from their files;
- `indexed_folders`: the stamp of each asset folder the refresh listed and indexed whole, read
  before the listing, so a lookup that finds the same stamp trusts `indexed_shards` without listing.

Bands depend on the distance, which is a recipe setting (`image_dedup_distance`): the refresh bands
the distances of the recipe book (and the default), (distance + 1) rows per image and distance; a
lookup at another distance still works, with the bands computed on the fly over `images`.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from synground_assets.config.recipes import recipe_book
from synground_assets.quality.images import hash_bands
from synground_assets.quality.settings import QualitySettings
from synground_assets.resources.store import AssetFolder

BAND_SHIFT = 56  # key = band << BAND_SHIFT | the band's bits: with two bands or more, a band is at most 32 bits
# A row's lookup key, per asset: its columns, and the key as a number (NULL: the row has none).
_KEYS = {"images": ({"phash", "phash_bits"}, "CASE WHEN t.phash IS NOT NULL THEN t.phash_bits END"),
         "descriptions": ({"description_key"}, "TRY_CAST('0x' || t.description_key AS UBIGINT)")}


def dedup_distances() -> set[int]:
    """The image dedup distances in use: the recipe book's and the default's."""
    distances = {QualitySettings().image_dedup_distance}
    try:
        distances |= {recipe.quality.image_dedup_distance
                      for recipe in recipe_book().recipes.values()}
    except ValueError:  # RecipeError, QualitySettingsError: a bad recipe file fails its runs, not the index
        pass
    return {distance for distance in distances if distance is not None}


def band_keys(bits: int, max_distance: int) -> list[int]:
    """The `image_bands` keys of one 64-bit hash for one distance: two hashes within `max_distance`
    bits share one (hash_bands, the one definition of the bands)."""
    return [band << BAND_SHIFT | (bits >> shift) & mask for band, (shift, mask) in enumerate(hash_bands(max_distance))]


def _band_plan(distances: set[int]) -> pd.DataFrame:
    rows = [(distance, band << BAND_SHIFT, shift, mask) for distance in sorted(distances)
            for band, (shift, mask) in enumerate(hash_bands(distance))]
    # Masks and offsets as text: a 64-bit mask does not fit a signed column.
    return pd.DataFrame(rows, columns=["distance", "offset", "shift", "mask"]).astype(
        {"distance": "uint8", "offset": "str", "shift": "uint8", "mask": "str"})


def fill_lookup_tables(connection: duckdb.DuckDBPyConnection, publish_ids: list[str]) -> None:
    """The derived rows of these newly indexed versions (inside the refresh's batch transaction)."""
    if not publish_ids:
        return
    connection.register("new_versions", pd.DataFrame({"publish_id": publish_ids}))  # replaced by the next batch's
    only = "{t}.publish_id IN (SELECT publish_id FROM new_versions)"  # {t}: the table's alias
    _insert_keys(connection, only)
    distances = {row[0] for row in connection.execute("SELECT distance FROM banded_distances").fetchall()}
    _insert_bands(connection, distances, only)


def rebuild_lookup_tables(connection: duckdb.DuckDBPyConnection) -> None:
    """After a schema change (the derived tables created empty): the keys from every indexed row; the
    next refresh bands its distances and stamps the folders it lists."""
    connection.execute("BEGIN TRANSACTION")
    _insert_keys(connection, "true")
    connection.execute("COMMIT")


def sync_band_distances(connection: duckdb.DuckDBPyConnection, distances: set[int]) -> None:
    """Band every indexed image for the distances newly wanted, drop the bands of those no longer."""
    held = {row[0] for row in connection.execute("SELECT distance FROM banded_distances").fetchall()}
    if held == distances:
        return
    connection.execute("BEGIN TRANSACTION")
    for distance in held - distances:
        connection.execute("DELETE FROM image_bands WHERE distance = ?", [distance])
        connection.execute("DELETE FROM banded_distances WHERE distance = ?", [distance])
    _insert_bands(connection, distances - held, "true")
    for distance in distances - held:
        connection.execute("INSERT INTO banded_distances VALUES (?)", [distance])
    connection.execute("COMMIT")


def record_folder_stamps(connection: duckdb.DuckDBPyConnection, folders: list[AssetFolder]) -> None:
    """The stamps of the folders whose listed shards are all indexed now (one transaction); every
    other folder's stamp is dropped, so its lookups list it."""
    record = pd.DataFrame({"recipe": [f.recipe for f in folders], "asset": [f.asset for f in folders],
                           "stamp": [f.stamp for f in folders], "legacy": [f.legacy for f in folders]})
    connection.register("folder_stamps", record)
    connection.execute("BEGIN TRANSACTION")
    connection.execute("DELETE FROM indexed_folders")
    if len(record):
        connection.execute("INSERT INTO indexed_folders BY NAME SELECT * FROM folder_stamps")
    connection.execute("COMMIT")
    connection.unregister("folder_stamps")


def _insert_keys(connection: duckdb.DuckDBPyConnection, only: str) -> None:
    """`description_keys` and `incomplete_versions` for the indexed versions matching `only`."""
    for asset, (needed, key) in _KEYS.items():
        if not needed <= _columns(connection, asset):
            key = "NULL"  # no shard has brought the columns: every version with rows is read from files
        connection.execute(f"""INSERT INTO incomplete_versions
            SELECT s.recipe, s.asset, s.shard, s.publish_id FROM indexed_shards s
            WHERE s.asset = ? AND {only.format(t='s')} AND EXISTS (SELECT 1 FROM {asset} t
                WHERE t.publish_id = s.publish_id AND {only.format(t='t')} AND ({key}) IS NULL)""", [asset])
    if _KEYS["descriptions"][0] <= _columns(connection, "descriptions"):
        connection.execute(f"""INSERT INTO description_keys
            SELECT * FROM (SELECT {_KEYS["descriptions"][1]} AS key, t.recipe, t.item_id, t.description, t.shard,
                                  t.publish_id FROM descriptions t WHERE {only.format(t='t')})
            WHERE key IS NOT NULL""")


def _insert_bands(connection: duckdb.DuckDBPyConnection, distances: set[int], only: str) -> None:
    if not distances or not _KEYS["images"][0] <= _columns(connection, "images"):
        return
    connection.register("band_plan", _band_plan(distances))
    connection.execute(f"""INSERT INTO image_bands
        SELECT p.offset::UBIGINT | ((t.phash_bits >> p.shift) & p.mask::UBIGINT), t.phash_bits, t.recipe,
               p.distance, t.item_id, t.phash, t.shard, t.publish_id
        FROM images t CROSS JOIN band_plan p WHERE ({_KEYS["images"][1]}) IS NOT NULL AND {only.format(t='t')}""")


def _columns(connection: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {row[0] for row in connection.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}
