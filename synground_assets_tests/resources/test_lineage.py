"""Lineage writes: a shard's rows in several tables replaced together, or not at all."""

import duckdb
import pandas as pd
import pytest

from synground_assets.resources.lineage import Lineage


def descriptions(*items: str) -> pd.DataFrame:
    return pd.DataFrame({"item_id": list(items), "description": ["a cat"] * len(items), "recipe": "r", "shard": "00000"})


def skipped(*items: str) -> pd.DataFrame:
    return pd.DataFrame({"item_id": list(items), "reason": "bad", "stage": "descriptions", "recipe": "r",
                         "shard": "00000"})


def test_replace_many_replaces_a_shard_in_every_table_at_once(tmp_path):
    lineage = Lineage(tmp_path / "lineage.duckdb")
    where = {"recipe": "r", "shard": "00000"}
    lineage.replace_many([("descriptions", descriptions("a", "b"), where), ("skipped_items", skipped("c"), where)])
    lineage.replace_many([("descriptions", descriptions("a"), where), ("skipped_items", skipped(), where)])
    assert lineage.query("SELECT item_id FROM descriptions").item_id.tolist() == ["a"]
    assert lineage.query("SELECT count(*) AS n FROM skipped_items").n[0] == 0


def test_a_failing_table_leaves_every_table_of_the_shard_as_it_was(tmp_path):
    lineage = Lineage(tmp_path / "lineage.duckdb")
    where = {"recipe": "r", "shard": "00000"}
    lineage.replace_many([("descriptions", descriptions("a"), where), ("skipped_items", skipped("c"), where)])
    with pytest.raises(duckdb.Error):  # the same item twice breaks the primary key
        lineage.replace_many([("skipped_items", skipped(), where), ("descriptions", descriptions("b", "b"), where)])
    assert lineage.query("SELECT item_id FROM descriptions").item_id.tolist() == ["a"]
    assert lineage.query("SELECT item_id FROM skipped_items").item_id.tolist() == ["c"]
