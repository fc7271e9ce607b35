"""Building the lineage index from the shards' lineage files (called by `Lineage.refresh`, which
holds the builder lock and the database connection).

The index knows which version of each shard it holds (`indexed_shards`: path -> publish id). A
refresh compares that with the published shards (one readlink each), then applies the changes in
batches, each batch one transaction: delete the rows of replaced and vanished versions (every shard
table carries `publish_id`), insert the rows of new versions straight from their Parquet files. A
builder that crashes leaves whole batches only; the next refresh redoes the rest. A batch that fails
(an unreadable file, a version replaced while being read, a duplicate id) is retried shard by
shard, so one bad shard is reported and skipped, not the whole refresh; a shard re-published while
it was being read is only counted (`changed_while_indexing`): the next refresh indexes its new version.

Each batch also writes the dedup lookup's derived rows (dedup_tables.py). Each asset folder's stamp
is read before the folder is listed; once every change of a folder is in, its stamp is recorded
(`indexed_folders`), so a lookup that finds the folder's stamp unchanged need not list it.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd

from synground_assets.resources.dedup_tables import (
    dedup_distances,
    fill_lookup_tables,
    record_folder_stamps,
    sync_band_distances,
)
from synground_assets.resources.lineage_schema import (
    DERIVED_TABLES,
    DIRECT_TABLES,
    INDEX_SCHEMA,
    INDEXED_SHARDS,
    LINEAGE_FOLDER,
    VIEWS,
)
from synground_assets.resources.store import PublishedShard, ShardStore

BATCH_SHARDS = 1000
# Errors of the database, not of a shard's files: a failed commit or checkpoint (a full disk) invalidates
# the connection, so every later statement would fail with "database has been invalidated".
DATABASE_ERRORS = (duckdb.FatalException, duckdb.TransactionException)
_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_RESERVED = {*DIRECT_TABLES, INDEXED_SHARDS, INDEX_SCHEMA, *VIEWS, *DERIVED_TABLES}


@dataclass(frozen=True)
class Change:
    key: str  # <recipe>/<asset>/<shard>
    old_publish_id: str | None  # the version indexed now, if any
    new: PublishedShard | None  # the version published now, if any


def refresh_index(connection: duckdb.DuckDBPyConnection, store: ShardStore,
                  band_distances: set[int] | None = None) -> dict:
    sync_band_distances(connection, dedup_distances() if band_distances is None else set(band_distances))
    on_disk, vanished, folders = {}, [], list(store.asset_folders())  # each folder's stamp read before its listing
    for shard in (shard for folder in folders for shard in folder.published):
        if shard.present:
            on_disk[shard.key] = shard
        else:  # its rows are dropped below, like those of a shard removed whole
            vanished.append(f"{shard.key}: its link names {shard.folder}, which is gone; rematerialize the shard")
    indexed = dict(connection.execute(f"SELECT shard_path, publish_id FROM {INDEXED_SHARDS}").fetchall())
    changes = [Change(key, indexed.get(key), shard) for key, shard in sorted(on_disk.items())
               if indexed.get(key) != shard.publish_id]
    changes += [Change(key, old, None) for key, old in sorted(indexed.items()) if key not in on_disk]
    unchanged = len(on_disk) - sum(change.new is not None for change in changes)
    counts = {"indexed": 0, "replaced": 0, "removed": 0, "unchanged": unchanged, "changed_while_indexing": 0,
              "failed": 0, "errors": [], "vanished": vanished}
    left: set[str] = set()  # <recipe>/<asset> of the folders with a change not indexed
    for start in range(0, len(changes), BATCH_SHARDS):
        batch = changes[start : start + BATCH_SHARDS]
        try:
            _apply(connection, batch)
            _tally(counts, batch)
        except DATABASE_ERRORS:
            raise  # the index itself cannot be written (a full disk): no shard is to blame, and retrying hides why
        except (duckdb.Error, OSError, ValueError) as batch_error:
            for change in batch:  # find the bad shard(s); the others go in one by one
                try:
                    _apply(connection, [change])
                    _tally(counts, [change])
                except DATABASE_ERRORS:
                    raise batch_error from None  # the batch's failed write broke the database: it is the cause
                except (duckdb.Error, OSError, ValueError) as exc:
                    if change.new is not None and not change.new.folder.exists():
                        counts["changed_while_indexing"] += 1  # re-published meanwhile: the next refresh takes it
                        left.add(change.key.rsplit("/", 1)[0])
                        continue
                    counts["failed"] += 1
                    counts["errors"].append(f"{change.key}: {type(exc).__name__}: {exc}")
                    left.add(change.key.rsplit("/", 1)[0])
    # A folder with a change left out (failed, or re-published meanwhile) keeps no stamp: its lookups list it.
    record_folder_stamps(connection, [f for f in folders if f.stamp and f"{f.recipe}/{f.asset}" not in left])
    return counts


def _tally(counts: dict, changes: list[Change]) -> None:
    for change in changes:
        counts["removed" if change.new is None else "replaced" if change.old_publish_id else "indexed"] += 1


def _apply(connection: duckdb.DuckDBPyConnection, batch: list[Change]) -> None:
    """One transaction: the batch's old versions out, its new versions in, the record updated."""
    published = [change.new for change in batch if change.new is not None]
    files, tables = _lineage_files(published)
    retired = pd.DataFrame({"publish_id": [change.old_publish_id for change in batch if change.old_publish_id]})
    connection.register("retired_versions", retired)
    connection.register("batch_shards", pd.DataFrame({"shard_path": [change.key for change in batch]}))
    connection.execute("BEGIN TRANSACTION")
    try:
        if len(retired):
            for table in _shard_tables(connection):
                connection.execute(f"DELETE FROM {table} WHERE publish_id IN (SELECT publish_id FROM retired_versions)")
        connection.execute(f"DELETE FROM {INDEXED_SHARDS} WHERE shard_path IN (SELECT shard_path FROM batch_shards)")
        for table, sources in files.items():
            _insert(connection, table, sources)
        record = pd.DataFrame({
            "shard_path": [s.key for s in published], "recipe": [s.recipe for s in published],
            "asset": [s.asset for s in published], "shard": [s.shard for s in published],
            "publish_id": [s.publish_id for s in published], "tables": [tables[s.key] for s in published],
            "indexed_at": datetime.now(timezone.utc).replace(tzinfo=None)})
        connection.register("indexed_record", record)
        connection.execute(f"INSERT INTO {INDEXED_SHARDS} BY NAME SELECT * FROM indexed_record")
        connection.unregister("indexed_record")
        fill_lookup_tables(connection, [s.publish_id for s in published])
        connection.execute("COMMIT")
    except BaseException:
        # A COMMIT that failed (a full disk) has ended the transaction already: the rollback's own error
        # ("no transaction is active") must not hide the cause.
        with contextlib.suppress(duckdb.Error):
            connection.execute("ROLLBACK")
        raise


def _lineage_files(shards: list[PublishedShard]) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """table -> {lineage file: publish id} over the shards, and shard -> its tables (a shard without
    lineage, e.g. a checkpoint, has none)."""
    files: dict[str, dict[str, str]] = {}
    tables: dict[str, list[str]] = {shard.key: [] for shard in shards}
    for shard in shards:
        if not shard.folder.is_dir():
            raise FileNotFoundError(f"version folder {shard.folder} is gone (re-published or removed meanwhile)")
        folder = shard.folder / LINEAGE_FOLDER
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                table = Path(entry.name).stem
                if not entry.name.endswith(".parquet"):
                    continue
                if not _TABLE_NAME.match(table) or table in _RESERVED:
                    raise ValueError(f"lineage file {entry.path}: {table!r} cannot be a lineage table name "
                                     f"(lowercase letters, digits and _, not one of {', '.join(sorted(_RESERVED))})")
                files.setdefault(table, {})[entry.path] = shard.publish_id
                tables[shard.key].append(table)
    return files, {key: sorted(names) for key, names in tables.items()}


def _shard_tables(connection: duckdb.DuckDBPyConnection) -> list[str]:
    return [row[0] for row in connection.execute(
        """SELECT c.table_name FROM information_schema.columns c
           JOIN information_schema.tables t USING (table_schema, table_name)
           WHERE c.column_name = 'publish_id' AND t.table_type = 'BASE TABLE' AND c.table_name != ?""",
        [INDEXED_SHARDS]).fetchall()]


def _insert(connection: duckdb.DuckDBPyConnection, table: str, sources: dict[str, str]) -> None:
    """Rows of every file of one table, each tagged with its shard's publish id. The files are read
    once, by column name (a file may lack a column another has), into a temporary table whose
    columns then shape the target table."""
    paths = list(sources)
    connection.register("lineage_sources", pd.DataFrame({"file": paths, "publish_id": list(sources.values())}))
    connection.execute("""CREATE OR REPLACE TEMP TABLE lineage_batch AS
        SELECT r.* EXCLUDE (filename), s.publish_id
        FROM read_parquet(?, filename = true, union_by_name = true) r JOIN lineage_sources s ON r.filename = s.file""",
                       [paths])
    columns = connection.execute("DESCRIBE lineage_batch").fetchall()
    _ensure_table(connection, table, [(name, kind) for name, kind, *_ in columns])
    connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM lineage_batch")
    connection.execute("DROP TABLE lineage_batch")


def _ensure_table(connection: duckdb.DuckDBPyConnection, table: str, columns: list[tuple[str, str]]) -> None:
    """A table named by a shard but unknown to the index is created from its files' schema; a column
    new to a known table is added."""
    existing = {row[0] for row in connection.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}
    # An all-null column in the files has no type of its own: give it text.
    typed = [(name, "VARCHAR" if kind == '"NULL"' or kind == "NULL" else kind) for name, kind in columns]
    if not existing:
        definition = ", ".join(f'"{name}" {kind}' for name, kind in typed if name != "publish_id")
        connection.execute(f"CREATE TABLE {table} ({definition}, publish_id VARCHAR)")
        return
    for name, kind in typed:
        if name not in existing:
            connection.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" {kind}')
