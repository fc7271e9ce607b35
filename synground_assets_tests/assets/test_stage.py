"""The publish of every generation shard (assets/stage.py): refused once its run is no longer the
STARTED run of record, recorded as the step's failure, nothing published."""

import dagster as dg
import pandas as pd

from synground_assets.assets.stage import generation_asset, materialize_shards
from synground_assets.pipeline.result import StageResult
from synground_assets.resources import StoreResource
from synground_assets.resources.store import ShardStore
from synground_assets.roles.base import AdapterInfo

INFO = AdapterInfo("test", "none")


def shard_stage(mark_failed: bool):
    """A one-table stage; with `mark_failed`, run monitoring fails the run while the shard is made
    (as when the worker was frozen past its heartbeats and resumed)."""

    @generation_asset(name="concepts")
    def stage(context: dg.AssetExecutionContext, store: StoreResource) -> dg.MaterializeResult:
        def run_shard(recipe, shard, shard_store, files) -> StageResult:
            if mark_failed:
                context.instance.report_run_failed(context.run, "Celery worker gpu0 (pid 1) silent for 9 s")
            return StageResult(INFO, {"table.parquet": pd.DataFrame({"concept": ["cat"]})}, {}, {"concepts": 1})

        materialize_shards(context, store, "concepts", run_shard)
        return dg.MaterializeResult()

    return stage


def run(tmp_path, mark_failed: bool) -> tuple[dg.ExecuteInProcessResult, dg.DagsterInstance]:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([shard_stage(mark_failed)], instance=instance, partition_key="shapes|00000",
                            resources={"store": StoreResource(root=str(tmp_path / "data"))}, raise_on_error=False)
    return result, instance


def test_a_shard_is_published_while_its_run_is_started(tmp_path):
    result, _ = run(tmp_path, mark_failed=False)
    assert result.success
    assert ShardStore(tmp_path / "data").read_table("shapes", "concepts", "00000").concept.tolist() == ["cat"]


def test_a_shard_of_a_run_failed_meanwhile_is_not_published_and_the_refusal_is_recorded(tmp_path):
    """Issue 30, item 2: a worker frozen past its heartbeats resumed and published the shards its
    retry was publishing; its run flipped from FAILURE to SUCCESS with a second materialization."""
    result, instance = run(tmp_path, mark_failed=True)
    [failure] = [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.user_failure_data.description
    assert "concepts shapes|00000: not published" in message and "is FAILURE, no longer started" in message
    assert ShardStore(tmp_path / "data").shards("shapes", "concepts") == []
    assert not [path for path in (tmp_path / "data" / "shapes" / "concepts").iterdir() if path.name != ".shards"]
    assert not instance.fetch_materializations(dg.AssetKey("concepts"), limit=10).records
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
