"""Issue 11, items 4 and 5 through Dagster: a reversed shard range fails at once with a clear
message; a phrase no detector could box, written into a phrases table, becomes a recorded skip."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from synground_assets.assets.boxes import boxes
from synground_assets.definitions import GENERATION_ASSETS, defs
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource
from synground_assets.resources.lineage import refreshed_lineage
from synground_assets.resources.store import ShardStore, default_data_root

RESOURCES = {"store": StoreResource(), "lineage": LineageResource(), "suite": ModelSuiteResource()}


def test_a_reversed_range_fails_its_first_step_with_a_clear_message_and_writes_nothing(project_home):
    result = defs.resolve_job_def("generation").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        tags={"dagster/asset_partition_range_start": "shapes|00003",
              "dagster/asset_partition_range_end": "shapes|00001"},
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "concepts"
    message = failure.step_failure_data.user_failure_data.description
    assert "shapes|00003...shapes|00001 selects no shard" in message and "IndexError" not in message
    assert not (default_data_root() / "shapes").exists()


def test_blank_and_punctuation_phrases_in_a_phrases_table_become_recorded_skips(project_home):
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(GENERATION_ASSETS, partition_key="shapes|00000", instance=instance,
                          resources=RESOURCES).success
    store = ShardStore(default_data_root())
    path = store.shard_dir("shapes", "phrases", "00000") / "table.parquet"
    table = pd.read_parquet(path)
    broken = table.index[table.kept][:3]
    table.loc[broken, "phrase"] = ["   ", ".", "a"]
    table.to_parquet(path, index=False)

    assert dg.materialize([boxes], partition_key="shapes|00000", instance=instance, resources=RESOURCES).success
    broken_ids = set(table.loc[broken, "phrase_id"])
    assert not broken_ids & set(store.read_table("shapes", "boxes", "00000").phrase_id)
    skipped = refreshed_lineage().query(
        "SELECT item_id, reason FROM skipped_items WHERE stage = 'boxes' AND recipe = 'shapes'")
    assert len(skipped) == 3
    assert sorted(skipped.item_id) == sorted(table.loc[broken, "item_id"])
    reasons = " | ".join(skipped.reason)
    assert "empty phrase" in reasons and "no letter or digit" in reasons and "only stop words" in reasons
