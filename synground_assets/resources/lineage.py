"""Lineage in one DuckDB file: every box -> phrase -> image -> description -> concept set.

Each generation asset writes one table per stage, keyed by item/phrase/box id, with who made each
row (adapter, model id, revision, settings), where (recipe, shard, Dagster partition key and run
id) and with which code (code version). A shard's rows are replaced in one transaction, so a rerun
never duplicates them. DuckDB allows one writing process per file: writers take an exclusive file
lock first and hold the database only for the few milliseconds of their transaction, so any number
of shards materializing at once (multiprocess executor, several runs) queue instead of failing.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import pandas as pd

_COMMON = """
    recipe VARCHAR NOT NULL, shard VARCHAR NOT NULL, partition_key VARCHAR, run_id VARCHAR,
    code_version VARCHAR, materialized_at TIMESTAMP, adapter VARCHAR, model_id VARCHAR,
    revision VARCHAR, settings JSON
"""

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
    # Pointing-game accuracy per (benchmark, recipe): base, fine-tuned, baselines, gain.
    "benchmark_scores": """benchmark VARCHAR, recipe VARCHAR, queries INTEGER, base DOUBLE, finetuned DOUBLE,
        center DOUBLE, random DOUBLE, gain DOUBLE, mlflow_run_id VARCHAR, run_id VARCHAR, code_version VARCHAR,
        materialized_at TIMESTAMP""",
    # Which shards (and how many triplets of each) trained a checkpoint.
    "checkpoint_shards": """checkpoint_id VARCHAR, recipe VARCHAR, shard VARCHAR, triplets INTEGER,
        run_id VARCHAR, code_version VARCHAR, materialized_at TIMESTAMP""",
}

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


_SCHEMA_READY: set[str] = set()  # database files this process has already brought up to date


def default_lineage_path() -> Path:
    from synground_assets.resources.store import default_data_root

    return Path(os.environ.get("SYNGROUND_LINEAGE") or default_data_root() / "lineage.duckdb")


class Lineage:
    def __init__(self, path: str | os.PathLike, busy_timeout_s: float = 300.0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s

    @contextmanager
    def _writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one writer at a time, across processes
            connection = self._connect(read_only=False)
            try:
                yield connection
            finally:
                connection.close()

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting while a reader (e.g. someone's `duckdb` shell) holds it."""
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @staticmethod
    def _ensure_schema(connection: duckdb.DuckDBPyConnection) -> None:
        """Create the tables and (re)create the views; done once per file and process."""
        for name, columns in TABLES.items():
            connection.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
        for name, query in VIEWS.items():
            connection.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")

    def replace_shard(self, table: str, recipe: str, shard: str, rows: pd.DataFrame, where: dict | None = None) -> None:
        """Replace all rows of one shard (optionally narrowed by more `where` column values)."""
        self.replace(table, rows, {"recipe": recipe, "shard": shard, **(where or {})})

    def replace(self, table: str, rows: pd.DataFrame, where: dict) -> None:
        """Delete the rows matching `where` (column -> value) and insert `rows`, in one transaction."""
        self.replace_many([(table, rows, where)])

    def replace_many(self, changes: list[tuple[str, pd.DataFrame, dict]]) -> None:
        """Several `replace`s (table, rows, where) in one transaction: a shard's rows in every table it
        writes land together, and the file is opened once."""
        for table, _, _ in changes:
            if table not in TABLES:
                raise ValueError(f"unknown lineage table {table!r}; expected one of {', '.join(TABLES)}")
        with self._writer() as connection:
            if str(self.path) not in _SCHEMA_READY:
                self._ensure_schema(connection)
                _SCHEMA_READY.add(str(self.path))
            connection.execute("BEGIN TRANSACTION")
            try:
                for table, rows, where in changes:
                    clause = " AND ".join(f"{column} = ?" for column in where)
                    connection.execute(f"DELETE FROM {table} WHERE {clause}", list(where.values()))
                    if len(rows):
                        connection.register("incoming_rows", rows)
                        connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
                        connection.unregister("incoming_rows")
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def query(self, sql: str, parameters: list | None = None) -> pd.DataFrame:
        """Run a read-only query (the schema must exist: something was materialized)."""
        if not self.path.exists():
            raise FileNotFoundError(f"no lineage database at {self.path}: materialize a shard first")
        connection = self._connect(read_only=True)
        try:
            return connection.execute(sql, parameters or []).df()
        finally:
            connection.close()
