"""The lineage index's schema: the tables filled from shards' lineage files, the tables the learning
assets write directly, the index's own records and the views the queries of docs/outputs-and-lineage.md read. Shared by
the index (`lineage.py`) and its builder (`lineage_index.py`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb

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
    # Detector ensembles (quality/ensemble.py): each fused box's proposals, one row per detector that
    # proposed it (`agreed`: enough detectors did, the box went on; else its removal says why).
    "box_proposals": f"""box_id VARCHAR, phrase_id VARCHAR, item_id VARCHAR, detector VARCHAR, x0 DOUBLE, y0 DOUBLE,
        x1 DOUBLE, y1 DOUBLE, score DOUBLE, iou_with_fused DOUBLE, agreeing INTEGER, agreed BOOLEAN, {_COMMON}""",
    # Crop verification (quality/verify.py): every judged box's P(yes), P(no), margin and crop window.
    "box_verdicts": f"""box_id VARCHAR, phrase_id VARCHAR, item_id VARCHAR, p_yes DOUBLE, p_no DOUBLE, margin DOUBLE,
        crop_x0 INTEGER, crop_y0 INTEGER, crop_x1 INTEGER, crop_y1 INTEGER, kept BOOLEAN, {_COMMON}""",
    # One row per boxes shard: the yield numbers, so yield questions never scan every phrase.
    "shard_yields": f"phrases INTEGER, phrases_with_box INTEGER, boxes INTEGER, {_COMMON}",
    # Items a stage could not process, with the reason (kept, not silently dropped).
    "skipped_items": f"stage VARCHAR, item_id VARCHAR, reason VARCHAR, {_COMMON}",
    # What the quality filters removed (quality/): one row per removed image attempt, description or box.
    "removals": f"""stage VARCHAR, item_id VARCHAR, phrase_id VARCHAR, box_id VARCHAR, filter VARCHAR, value DOUBLE,
        threshold DOUBLE, detail VARCHAR, {_COMMON}""",
    # Per shard, stage and filter: units in, removed, kept (the quality report's rows).
    "shard_quality": f"""stage VARCHAR, unit VARCHAR, items_in INTEGER, filter VARCHAR, removed INTEGER,
        kept INTEGER, {_COMMON}""",
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

# Tables the refresh derives for the cross-shard dedup lookup (resources/dedup_tables.py); a version's
# rows go with the version, as in the shard tables (each has a `publish_id`).
DERIVED_TABLES = {
    # Per asset folder the refresh listed and indexed whole: the folder's stamp read before the
    # listing (ShardStore.folder_stamp) and its shards of the layout before links. While the folder's
    # stamp is still this one, `indexed_shards` holds every shard the folder publishes, as published.
    "indexed_folders": "recipe VARCHAR, asset VARCHAR, stamp VARCHAR, legacy VARCHAR[]",
    # The images and descriptions versions with a row lacking the lookup key (indexed before the
    # column existed): the lookup reads them from their files.
    "incomplete_versions": "recipe VARCHAR, asset VARCHAR, shard VARCHAR, publish_id VARCHAR",
    # Each image's hash cut into the bit bands of `hash_bands(distance)`, for each distance in
    # `banded_distances`; key = band << 56 | the band's bits (a band is at most 32 bits wide when there
    # are several), so a lookup is one equality join on a number.
    "image_bands": """key UBIGINT, phash_bits UBIGINT, recipe VARCHAR, distance UTINYINT, item_id VARCHAR,
        phash VARCHAR, shard VARCHAR, publish_id VARCHAR""",
    "banded_distances": "distance INTEGER",
    # Each description's key (16 hex digits of `description_key`) as a number.
    "description_keys": "key UBIGINT, recipe VARCHAR, item_id VARCHAR, description VARCHAR, shard VARCHAR, "
                        "publish_id VARCHAR",
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



_SCHEMA = {**TABLES, **DIRECT_TABLES, INDEXED_SHARDS: _INDEXED_SHARDS_COLUMNS, **DERIVED_TABLES}
# Kept in `index_schema`: readers that rely on the derived tables check it (an index last written by
# older code may hold shards whose derived rows it never wrote).
SCHEMA_FINGERPRINT = hashlib.sha256(json.dumps([_SCHEMA, VIEWS], sort_keys=True).encode()).hexdigest()


def ensure_schema(connection: duckdb.DuckDBPyConnection, path: Path) -> bool:
    """Create the tables and (re)create the views, unless this code's schema is there already (a
    fingerprint of it is kept in `index_schema`); True when it was not: the derived tables are then
    created empty, for the caller to fill. A database of the layout before the index (rows without
    a publish id) cannot be brought up to date: it names the fix."""
    connection.execute(f"CREATE TABLE IF NOT EXISTS {INDEX_SCHEMA} (fingerprint VARCHAR)")
    if connection.execute(f"SELECT count(*) FROM {INDEX_SCHEMA} WHERE fingerprint = ?",
                          [SCHEMA_FINGERPRINT]).fetchone()[0]:
        return False
    old = connection.execute("""SELECT count(*) FROM information_schema.tables t WHERE table_name = 'boxes'
        AND NOT EXISTS (SELECT 1 FROM information_schema.columns c
                        WHERE c.table_name = 'boxes' AND c.column_name = 'publish_id')""").fetchone()[0]
    if old:
        raise RuntimeError(f"{path} holds lineage in the layout before the index (no publish_id); move it "
                           f"away and run `python -m synground_assets.ops.cli index` to rebuild it from the shards "
                           f"(shards published before lineage files existed need re-materializing)")
    for name in DERIVED_TABLES:  # derived from the others: rebuilt whole, whatever shape older code gave them
        connection.execute(f"DROP TABLE IF EXISTS {name}")
    for name, columns in _SCHEMA.items():
        connection.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
    for name, query in VIEWS.items():
        connection.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")
    connection.execute(f"DELETE FROM {INDEX_SCHEMA}")
    connection.execute(f"INSERT INTO {INDEX_SCHEMA} VALUES (?)", [SCHEMA_FINGERPRINT])
    return True
