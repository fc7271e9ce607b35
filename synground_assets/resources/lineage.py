"""Lineage: every box -> phrase -> image -> description -> concept set, queryable with one DuckDB query.

Written as files, indexed into DuckDB. Each generation shard carries its own lineage rows as
Parquet files, `<shard>/lineage/<table>.parquet` (who made each row: adapter, model id, revision,
settings; where: recipe, shard, Dagster partition key and run id; with which code: code version),
published by the same rename as the shard: shard and lineage appear together or not at all, and no
generation step takes a lock or opens the database.

The DuckDB file is an index of those files, built by `Lineage.refresh(data_root)`: one builder at
a time (a lock file next to the database), incrementally (new shards added, replaced shards
re-indexed, vanished shards dropped, by publish id), one transaction per batch of shards. Queries
run on the index. Two tables are not made by shards: `benchmark_scores` and `checkpoint_shards`,
one row set per learning-asset run, written straight into the index under the same lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import pandas as pd

LINEAGE_FOLDER = "lineage"  # inside a shard: one Parquet file per lineage table

_COMMON = """
    recipe VARCHAR NOT NULL, shard VARCHAR NOT NULL, partition_key VARCHAR, run_id VARCHAR,
    code_version VARCHAR, materialized_at TIMESTAMP, adapter VARCHAR, model_id VARCHAR,
    revision VARCHAR, settings JSON, publish_id VARCHAR
"""

# Tables filled from shards' lineage files; `publish_id` names the shard version a row came from.
# A shard may bring any other table name: the index creates it from the files' schema.
TABLES = {
    "concept_sets": f"""item_id VARCHAR PRIMARY KEY, item_index INTEGER, seed BIGINT, concepts VARCHAR[],
        source_image VARCHAR, source_captions VARCHAR[], {_COMMON}""",
    "descriptions": f"item_id VARCHAR PRIMARY KEY, description VARCHAR, {_COMMON}",
    "images": f"""item_id VARCHAR PRIMARY KEY, image_path VARCHAR, width INTEGER, height INTEGER,
        image_seed BIGINT, {_COMMON}""",
    "phrases": f"""phrase_id VARCHAR PRIMARY KEY, item_id VARCHAR, phrase_index INTEGER, phrase VARCHAR,
        kept BOOLEAN, drop_reason VARCHAR, {_COMMON}""",
    "boxes": f"""box_id VARCHAR PRIMARY KEY, phrase_id VARCHAR, item_id VARCHAR, x0 DOUBLE, y0 DOUBLE,
        x1 DOUBLE, y1 DOUBLE, score DOUBLE, box_rank INTEGER, box_threshold DOUBLE, text_threshold DOUBLE,
        {_COMMON}""",
    # One row per boxes shard: the yield numbers, so yield questions never scan every phrase.
    "shard_yields": f"phrases INTEGER, phrases_with_box INTEGER, boxes INTEGER, {_COMMON}",
    # Items a stage could not process, with the reason (kept, not silently dropped).
    "skipped_items": f"stage VARCHAR, item_id VARCHAR, reason VARCHAR, {_COMMON}",
    # What the quality filters removed (quality/): one row per removed image attempt, description or box.
    "removals": f"""stage VARCHAR, item_id VARCHAR, phrase_id VARCHAR, box_id VARCHAR, filter VARCHAR, value DOUBLE,
        threshold DOUBLE, detail VARCHAR, {_COMMON}""",
    # Per shard, stage and filter: units in, removed, kept (the quality report's rows).
    "shard_quality": f"stage VARCHAR, unit VARCHAR, items_in INTEGER, filter VARCHAR, removed INTEGER, kept INTEGER, {_COMMON}",
}

# Tables the learning assets write directly (one writer each), not from shards.
DIRECT_TABLES = {
    # Pointing-game accuracy per (benchmark, recipe): base, fine-tuned, baselines, gain.
    "benchmark_scores": """benchmark VARCHAR, recipe VARCHAR, queries INTEGER, base DOUBLE, finetuned DOUBLE,
        center DOUBLE, random DOUBLE, gain DOUBLE, mlflow_run_id VARCHAR, run_id VARCHAR, code_version VARCHAR,
        materialized_at TIMESTAMP""",
    # Which shards (and how many triplets of each) trained a checkpoint.
    "checkpoint_shards": """checkpoint_id VARCHAR, recipe VARCHAR, shard VARCHAR, triplets INTEGER,
        run_id VARCHAR, code_version VARCHAR, materialized_at TIMESTAMP""",
}

# The index's own records: which version of which shard it holds, and which schema it has.
INDEXED_SHARDS = "indexed_shards"
INDEX_SCHEMA = "index_schema"
_INDEXED_SHARDS_COLUMNS = """shard_path VARCHAR PRIMARY KEY, recipe VARCHAR, asset VARCHAR, shard VARCHAR,
    publish_id VARCHAR, tables VARCHAR[], indexed_at TIMESTAMP"""

VIEWS = {
    "box_provenance": """
        SELECT b.box_id, b.x0, b.y0, b.x1, b.y1, b.score, p.phrase, i.image_path, i.width, i.height,
               d.description, c.concepts, c.source_image, c.source_captions, c.seed AS item_seed,
               i.image_seed, b.box_threshold, b.text_threshold, b.recipe, b.shard, b.partition_key,
               c.model_id AS concepts_model, d.model_id AS describer_model, d.revision AS describer_revision,
               i.model_id AS generator_model, i.revision AS generator_revision, i.settings AS generator_settings,
               p.model_id AS extractor_model, p.revision AS extractor_revision,
               b.model_id AS detector_model, b.revision AS detector_revision, b.settings AS detector_settings,
               c.run_id AS concepts_run_id, d.run_id AS descriptions_run_id, i.run_id AS images_run_id,
               p.run_id AS phrases_run_id, b.run_id AS boxes_run_id, b.code_version,
               b.phrase_id, b.item_id
        FROM boxes b
        JOIN phrases p ON p.phrase_id = b.phrase_id
        JOIN images i ON i.item_id = b.item_id
        JOIN descriptions d ON d.item_id = b.item_id
        JOIN concept_sets c ON c.item_id = b.item_id""",
    # The per-recipe quality report: units in, removed per filter, kept, per stage.
    "quality_report": """
        WITH per_shard AS (SELECT DISTINCT recipe, shard, stage, unit, items_in, kept FROM shard_quality),
             totals AS (SELECT recipe, stage, unit, sum(items_in)::BIGINT AS items_in, sum(kept)::BIGINT AS kept,
                               count(*) AS shards FROM per_shard GROUP BY ALL)
        SELECT t.recipe, t.stage, t.unit, t.shards, t.items_in, q.filter, sum(q.removed)::BIGINT AS removed, t.kept
        FROM shard_quality q JOIN totals t USING (recipe, stage, unit)
        WHERE q.filter <> 'none'
        GROUP BY ALL ORDER BY t.recipe, t.stage, q.filter""",
    "yield_per_recipe": """
        SELECT recipe, model_id AS detector_model, count(*) AS shards, sum(phrases)::BIGINT AS phrases,
               sum(phrases_with_box)::BIGINT AS phrases_with_box, sum(boxes)::BIGINT AS boxes,
               round(sum(phrases_with_box) / sum(phrases), 4) AS yield
        FROM shard_yields GROUP BY ALL ORDER BY recipe""",
}


def default_lineage_path() -> Path:
    from synground_assets.resources.store import default_data_root

    return Path(os.environ.get("SYNGROUND_LINEAGE") or default_data_root() / "lineage.duckdb")


def refreshed_lineage() -> "Lineage":
    """The default lineage index, first brought up to date with the default data root: what a
    reader of the shards' lineage calls before it queries."""
    from synground_assets.resources.store import default_data_root

    lineage = Lineage(default_lineage_path())
    lineage.refresh(default_data_root())
    return lineage


def write_shard_lineage(folder: Path, tables: dict[str, pd.DataFrame]) -> None:
    """A shard's lineage rows as `<folder>/lineage/<table>.parquet` (empty tables are left out)."""
    target = folder / LINEAGE_FOLDER
    target.mkdir(exist_ok=True)
    for table, rows in tables.items():
        if len(rows):
            rows.to_parquet(target / f"{table}.parquet", index=False)


class Lineage:
    """The lineage index: `refresh` brings it up to date with the data root, `query` reads it."""

    def __init__(self, path: str | os.PathLike, busy_timeout_s: float = 600.0, config: dict | None = None):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.config = config or {}  # DuckDB settings, e.g. {"memory_limit": "4GB", "threads": 2} on a shared host

    def refresh(self, data_root: str | os.PathLike) -> dict:
        """Index the shards published under `data_root` since the last refresh (new and replaced
        ones), drop those that disappeared. Returns counts of shards (indexed, replaced, removed,
        unchanged, changed_while_indexing, failed, with the failures' errors) and the seconds it took."""
        from synground_assets.resources.lineage_index import refresh_index
        from synground_assets.resources.store import ShardStore

        start = time.monotonic()
        if not Path(data_root).is_dir():  # else every indexed shard would count as vanished
            raise FileNotFoundError(f"no data root at {data_root}: point SYNGROUND_DATA (or the store's root) at "
                                    f"the folder the shards are published in")
        with self._writer() as connection:
            counts = refresh_index(connection, ShardStore(data_root))
        return {**counts, "seconds": round(time.monotonic() - start, 3)}

    def replace(self, table: str, rows: pd.DataFrame, where: dict) -> None:
        """For the learning assets' own tables: delete the rows matching `where` (column -> value)
        and insert `rows`, in one transaction."""
        if table not in DIRECT_TABLES:
            raise ValueError(f"{table!r} is not written directly; expected one of {', '.join(DIRECT_TABLES)} "
                             f"(shard lineage goes into the shard's {LINEAGE_FOLDER}/ folder)")
        with self._writer() as connection:
            connection.execute("BEGIN TRANSACTION")
            clause = " AND ".join(f"{column} = ?" for column in where)
            connection.execute(f"DELETE FROM {table} WHERE {clause}", list(where.values()))
            if len(rows):
                connection.register("incoming_rows", rows)
                connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
                connection.unregister("incoming_rows")
            connection.execute("COMMIT")

    def query(self, sql: str, parameters: list | None = None) -> pd.DataFrame:
        """Run a read-only query on the index as it is (refresh first to see the latest shards)."""
        if not self.path.exists():
            raise FileNotFoundError(f"no lineage index at {self.path}: build it with "
                                    f"`python -m synground_assets.cli index` (or Lineage.refresh)")
        connection = self._connect(read_only=True)
        try:
            return connection.execute(sql, parameters or []).df()
        finally:
            connection.close()

    @contextmanager
    def _writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The one writer of the index: an exclusive lock file first (another builder waits), then
        the database, whose schema is brought up to date."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            connection = self._connect(read_only=False)
            try:
                _ensure_schema(connection, self.path)
                yield connection
            finally:
                connection.close()  # an uncommitted transaction is rolled back

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting while another process (a reader's shell, a builder) holds it."""
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only, config=self.config)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _ensure_schema(connection: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Create the tables and (re)create the views, unless this code's schema is there already (a
    fingerprint of it is kept in `index_schema`). A database of the layout before the index (rows
    without a publish id) cannot be brought up to date: it names the fix."""
    schema = {**TABLES, **DIRECT_TABLES, INDEXED_SHARDS: _INDEXED_SHARDS_COLUMNS}
    fingerprint = hashlib.sha256(json.dumps([schema, VIEWS], sort_keys=True).encode()).hexdigest()
    connection.execute(f"CREATE TABLE IF NOT EXISTS {INDEX_SCHEMA} (fingerprint VARCHAR)")
    if connection.execute(f"SELECT count(*) FROM {INDEX_SCHEMA} WHERE fingerprint = ?", [fingerprint]).fetchone()[0]:
        return
    old = connection.execute("""SELECT count(*) FROM information_schema.tables t WHERE table_name = 'boxes'
        AND NOT EXISTS (SELECT 1 FROM information_schema.columns c
                        WHERE c.table_name = 'boxes' AND c.column_name = 'publish_id')""").fetchone()[0]
    if old:
        raise RuntimeError(f"{path} holds lineage in the layout before the index (no publish_id); move it "
                           f"away and run `python -m synground_assets.cli index` to rebuild it from the shards "
                           f"(shards published before lineage files existed need re-materializing)")
    for name, columns in schema.items():
        connection.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
    for name, query in VIEWS.items():
        connection.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")
    connection.execute(f"DELETE FROM {INDEX_SCHEMA}")
    connection.execute(f"INSERT INTO {INDEX_SCHEMA} VALUES (?)", [fingerprint])
