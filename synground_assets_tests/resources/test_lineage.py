"""Lineage: rows published inside their shard, indexed into DuckDB incrementally by one builder at a time."""

import multiprocessing
import os
import resource
import shutil
import signal
from contextlib import contextmanager

import duckdb
import pandas as pd
import pytest

from synground_assets.resources.lineage import Lineage, write_shard_lineage
from synground_assets.resources.store import ShardStore, write_table


def publish(store: ShardStore, shard: str, items: int, description: str = "a cat", extra: dict | None = None) -> None:
    """A descriptions shard of `items` items with its lineage (and any `extra` tables)."""
    ids = [f"r:{shard}:{i:04d}" for i in range(items)]
    rows = pd.DataFrame({"item_id": ids, "description": description, "recipe": "r", "shard": shard})
    with store.writing("r", "descriptions", shard) as folder:
        write_table(folder, rows[["item_id", "description"]])
        write_shard_lineage(folder, {"descriptions": rows, **(extra or {})})


def count(lineage: Lineage, sql: str) -> int:
    return int(lineage.query(sql).iloc[0, 0])


@pytest.fixture
def store(tmp_path) -> ShardStore:
    return ShardStore(tmp_path / "data")


@pytest.fixture
def lineage(tmp_path) -> Lineage:
    return Lineage(tmp_path / "lineage.duckdb")


def test_a_crashed_write_publishes_neither_shard_nor_lineage(store, lineage):
    with pytest.raises(RuntimeError):
        with store.writing("r", "descriptions", "00000") as folder:
            write_shard_lineage(
                folder, {"descriptions": pd.DataFrame({"item_id": ["x"], "recipe": "r", "shard": "00000"})}
            )
            raise RuntimeError("killed after the lineage files, before the publish")
    assert store.shards("r", "descriptions") == []
    assert lineage.refresh(store.root)["indexed"] == 0
    assert count(lineage, "SELECT count(*) FROM descriptions") == 0


def unpublish(store: ShardStore, recipe: str, asset: str, shard: str) -> None:
    """What a user removing a shard by hand does: its link and its version folder go."""
    link = store.shard_dir(recipe, asset, shard)
    version = link.parent / os.readlink(link)
    link.unlink()
    shutil.rmtree(version)


def test_refresh_is_incremental_replaces_rematerialized_shards_and_drops_removed_ones(store, lineage):
    for shard in ("00000", "00001", "00002"):
        publish(store, shard, items=4)
    first = lineage.refresh(store.root)
    assert (first["indexed"], first["replaced"], first["removed"], first["failed"]) == (3, 0, 0, 0)
    second = lineage.refresh(store.root)
    assert (second["indexed"], second["unchanged"]) == (0, 3)

    publish(store, "00001", items=3, description="a dog")  # re-materialized, one item fewer
    unpublish(store, "r", "descriptions", "00002")
    third = lineage.refresh(store.root)
    assert (third["indexed"], third["replaced"], third["removed"], third["unchanged"]) == (0, 1, 1, 1)
    per_shard = lineage.query(
        "SELECT shard, count(*) AS n, min(description) AS d FROM descriptions GROUP BY ALL ORDER BY shard"
    )
    assert per_shard.values.tolist() == [["00000", 4, "a cat"], ["00001", 3, "a dog"]]
    assert count(lineage, "SELECT count(*) FROM indexed_shards") == 2


def test_a_table_the_index_does_not_know_is_created_from_the_files(store, lineage):
    removals = pd.DataFrame({"item_id": ["r:00000:0001"], "filter": ["near_duplicate"], "distance": [0.02],
                             "recipe": "r", "shard": "00000"})
    publish(store, "00000", items=2, extra={"removals": removals})
    assert lineage.refresh(store.root)["indexed"] == 1
    found = lineage.query("SELECT item_id, filter, distance, publish_id FROM removals")
    assert found[["item_id", "filter", "distance"]].values.tolist() == [["r:00000:0001", "near_duplicate", 0.02]]
    assert found.publish_id[0] == next(store.published()).publish_id
    publish(store, "00000", items=2)  # rewritten without removals: its rows go
    assert lineage.refresh(store.root)["replaced"] == 1
    assert count(lineage, "SELECT count(*) FROM removals") == 0


def test_a_bad_shard_is_reported_and_the_others_are_indexed(store, lineage):
    publish(store, "00000", items=2)
    publish(store, "00001", items=2, extra={"Bad-Name": pd.DataFrame({"a": [1]})})
    counts = lineage.refresh(store.root)
    assert (counts["indexed"], counts["failed"]) == (1, 1)
    assert "r/descriptions/00001" in counts["errors"][0] and "Bad-Name" in counts["errors"][0]
    assert count(lineage, "SELECT count(*) FROM descriptions") == 2


def _refresh_in_child(paths) -> dict:
    database, root = paths
    return Lineage(database).refresh(root)


def test_two_builders_started_at_once_give_the_index_one_builder_gives(store, lineage, tmp_path):
    for shard in range(40):
        publish(store, f"{shard:05d}", items=5)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_refresh_in_child, [(lineage.path, store.root)] * 2)
    assert sorted(result["indexed"] for result in results) == [0, 40]
    assert count(lineage, "SELECT count(*) FROM descriptions") == 200
    assert count(lineage, "SELECT count(DISTINCT item_id) FROM descriptions") == 200
    alone = Lineage(tmp_path / "alone.duckdb")
    alone.refresh(store.root)
    query = "SELECT item_id, description, publish_id FROM descriptions ORDER BY item_id"
    pd.testing.assert_frame_equal(lineage.query(query), alone.query(query))


def test_the_learning_tables_are_written_directly_and_shard_tables_are_not(lineage):
    scores = pd.DataFrame({"benchmark": ["b"], "recipe": ["r"], "base": [0.4], "finetuned": [0.5]})
    lineage.replace("benchmark_scores", scores, {"benchmark": "b", "recipe": "r"})
    lineage.replace("benchmark_scores", scores.assign(finetuned=0.6), {"benchmark": "b", "recipe": "r"})
    assert lineage.query("SELECT finetuned FROM benchmark_scores").finetuned.tolist() == [0.6]
    with pytest.raises(ValueError, match="lineage/ folder"):
        lineage.replace("boxes", pd.DataFrame(), {"recipe": "r"})


def test_a_database_of_the_layout_before_the_index_names_the_fix(lineage, store):
    with duckdb.connect(str(lineage.path)) as connection:
        connection.execute("CREATE TABLE boxes (box_id VARCHAR PRIMARY KEY, recipe VARCHAR, shard VARCHAR)")
    store.root.mkdir()
    with pytest.raises(RuntimeError, match="move it away and run `python -m synground_assets.ops.cli index`"):
        lineage.refresh(store.root)


def test_a_missing_data_root_is_an_error_not_an_empty_dataset(store, lineage):
    with pytest.raises(FileNotFoundError, match="no data root at .*SYNGROUND_DATA"):
        lineage.refresh(store.root)


def test_a_shard_republished_while_being_indexed_is_left_to_the_next_refresh(store, lineage, monkeypatch):
    publish(store, "00000", items=2)
    publish(store, "00001", items=2)
    seen = list(store.asset_folders())  # what the builder listed ...
    publish(store, "00001", items=3)  # ... before 00001 was re-published (its old version removed)
    monkeypatch.setattr(ShardStore, "asset_folders", lambda self: iter(seen))
    counts = lineage.refresh(store.root)
    assert (counts["indexed"], counts["changed_while_indexing"], counts["failed"]) == (1, 1, 0)
    assert count(lineage, "SELECT count(*) FROM indexed_folders") == 0  # its lookups list the folder
    monkeypatch.undo()
    assert lineage.refresh(store.root)["indexed"] == 1
    assert count(lineage, "SELECT count(*) FROM descriptions") == 5


def test_a_shard_whose_version_folder_was_deleted_is_reported_and_its_rows_dropped(store, lineage):
    """Issue 19, item 7: the link stays, its version folder is gone (removed by hand)."""
    publish(store, "00000", items=2)
    publish(store, "00001", items=3)
    assert lineage.refresh(store.root)["indexed"] == 2
    link = store.shard_dir("r", "descriptions", "00001")
    shutil.rmtree(link.parent / os.readlink(link))
    counts = lineage.refresh(store.root)
    assert (counts["removed"], counts["unchanged"], counts["failed"]) == (1, 1, 0)
    [vanished] = counts["vanished"]
    assert vanished.startswith("r/descriptions/00001: its link names ") and "rematerialize the shard" in vanished
    assert count(lineage, "SELECT count(*) FROM descriptions WHERE shard = '00001'") == 0
    assert count(lineage, "SELECT count(*) FROM indexed_shards") == 1


@contextmanager
def file_size_limit(limit: int):
    """Writes past `limit` bytes fail with EFBIG in this process, as writes fail on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_an_index_that_cannot_be_written_fails_with_the_cause_not_with_the_rollback(store, tmp_path):
    """Issue 19, item 6: the original error (here the file size limit, on a full disk "No space left on
    device") reaches the caller; neither "cannot rollback" nor "database has been invalidated" per shard."""
    for shard in range(4):
        publish(store, f"{shard:05d}", items=2000, description="a cat " * 40)
    lineage = Lineage(tmp_path / "small.duckdb")
    (tmp_path / "empty").mkdir()
    lineage.refresh(tmp_path / "empty")  # the schema, within the limit
    with pytest.raises(duckdb.Error) as error, file_size_limit(600_000):
        lineage.refresh(store.root)
    assert "File too large" in str(error.value)
    assert "cannot rollback" not in str(error.value) and "invalidated" not in str(error.value)
