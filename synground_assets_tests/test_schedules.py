"""The scheduled backfill: each tick requests the missing shards of the scheduled recipes, once."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid
from datetime import datetime, timezone

import dagster as dg
import pytest

from synground_assets.config.recipes import RecipeError, recipe_book
from synground_assets.definitions import GENERATION_ASSETS, defs
from synground_assets.ops.dagster_internals import DagsterEvent
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource
from synground_assets.schedules import (
    RANGE_END,
    RANGE_START,
    build_missing_shards_schedule,
    missing_shards_schedule,
    runs_of,
    schedule_settings,
)

TICK = datetime(2026, 3, 1, 2, 0, tzinfo=timezone.utc)
NEXT_TICK = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)
SHAPES = [f"shapes|{i:05d}" for i in range(recipe_book().get("shapes").num_shards)]


def scheduled(**settings) -> dg.ScheduleDefinition:
    book = dataclasses.replace(recipe_book(), schedule={"recipes": ["shapes"], **settings})
    return build_missing_shards_schedule(book)


def tick(schedule: dg.ScheduleDefinition, instance: dg.DagsterInstance, when: datetime = TICK):
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
    )
    return schedule.evaluate_tick(context)


def requested(result) -> list[str]:
    """Each run request as the keys it covers: one key, or 'first...last' for a range."""
    return [request.partition_key or f"{request.tags[RANGE_START]}...{request.tags[RANGE_END]}"
            for request in result.run_requests or []]


def record_boxes(instance: dg.DagsterInstance, *keys: str) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization("boxes", partition=key))


def add_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, tags: dict[str, str]) -> dg.DagsterRun:
    return instance.add_run(dg.DagsterRun(job_name="generation", run_id=str(uuid.uuid4()), status=status, tags=tags))


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_the_built_in_schedule_fills_shapes_and_is_registered():
    assert schedule_settings(recipe_book()).recipes == ("shapes",)
    assert defs.get_repository_def().get_schedule_def("missing_shards").job_name == "generation"
    assert missing_shards_schedule.cron_schedule == "0 2 * * *"
    assert missing_shards_schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_a_tick_requests_runs_of_consecutive_missing_shards_with_a_run_key_per_run_and_tick(instance):
    record_boxes(instance, "shapes|00001")
    result = tick(missing_shards_schedule, instance)
    assert requested(result) == ["shapes|00000", "shapes|00002...shapes|00003"]
    run_keys = [request.run_key for request in result.run_requests]
    assert len(set(run_keys)) == 2
    assert result.run_requests[0].tags["dagster/partition"] == "shapes|00000"
    again = tick(missing_shards_schedule, instance)  # the daemon re-evaluating the same tick
    assert [request.run_key for request in again.run_requests] == run_keys


def test_shards_per_run_caps_each_run(instance, monkeypatch):
    monkeypatch.setenv("SYNGROUND_SHARDS_PER_RUN", "3")
    assert requested(tick(missing_shards_schedule, instance)) == ["shapes|00000...shapes|00002", "shapes|00003"]


def test_runs_are_cut_at_gaps_at_recipe_changes_and_at_k():
    keys = ["a|00000", "a|00001", "a|00002", "a|00004", "b|00005", "b|00006"]
    assert runs_of(keys, 2) == [["a|00000", "a|00001"], ["a|00002"], ["a|00004"], ["b|00005", "b|00006"]]


def test_shards_per_tick_caps_a_tick_and_the_next_tick_continues(instance):
    schedule = scheduled(shards_per_tick=2)
    assert requested(tick(schedule, instance)) == ["shapes|00000...shapes|00001"]
    record_boxes(instance, "shapes|00000", "shapes|00001")
    assert requested(tick(schedule, instance, NEXT_TICK)) == ["shapes|00002...shapes|00003"]


def test_nothing_is_requested_when_every_shard_has_boxes(instance):
    record_boxes(instance, *SHAPES)
    result = tick(missing_shards_schedule, instance)
    assert not result.run_requests
    assert "every shard of shapes has boxes" in result.skip_message


def test_a_shard_being_made_is_not_requested_again_and_a_failed_one_is_retried(instance):
    add_run(instance, dg.DagsterRunStatus.STARTED, {"dagster/partition": "shapes|00000"})
    add_run(instance, dg.DagsterRunStatus.STARTING, {"dagster/asset_partition_range_start": "shapes|00001",
                                                   "dagster/asset_partition_range_end": "shapes|00002"})
    add_run(instance, dg.DagsterRunStatus.FAILURE, {"dagster/partition": "shapes|00003"})
    assert requested(tick(missing_shards_schedule, instance)) == ["shapes|00003"]


def test_a_started_run_whose_process_died_is_requested_again_and_a_live_one_is_not(instance):
    finished = subprocess.Popen(["true"])
    finished.wait()
    for key, pid in [("shapes|00000", finished.pid), ("shapes|00001", os.getpid())]:
        run = add_run(instance, dg.DagsterRunStatus.STARTED, {"dagster/partition": key})
        instance.report_dagster_event(DagsterEvent("PIPELINE_START", job_name=run.job_name, pid=pid), run.run_id)
    assert requested(tick(missing_shards_schedule, instance)) == ["shapes|00000", "shapes|00002...shapes|00003"]


def test_a_shard_materialized_through_dagster_counts_as_done(project_home, instance):
    result = dg.materialize(
        GENERATION_ASSETS, partition_key="shapes|00002", instance=instance,
        resources={"store": StoreResource(), "lineage": LineageResource(), "suite": ModelSuiteResource()},
    )
    assert result.success
    assert requested(tick(missing_shards_schedule, instance)) == ["shapes|00000...shapes|00001", "shapes|00003"]


def test_no_scheduled_recipe_skips_with_the_reason(instance):
    result = tick(scheduled(recipes=[]), instance)
    assert not result.run_requests and "no recipe is scheduled" in result.skip_message


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"recipes": ["shape"]}, "schedule, field 'recipes': no recipe named 'shape'; known recipes:"),
        ({"recipes": "shapes"}, "field 'recipes': expected a list of recipe names"),
        ({"shards_per_tick": 0}, "field 'shards_per_tick': expected an integer >= 1, got 0"),
        ({"cron": "every night"}, "invalid cron schedule 'every night'"),
        ({"running": "yes"}, "field 'running': expected true or false"),
        ({"shards": 3}, "schedule: unknown field(s) shards"),
    ],
)
def test_a_bad_schedule_section_names_the_field(settings, message):
    with pytest.raises(RecipeError, match="recipes.yaml") as error:
        scheduled(**settings)
    assert message in str(error.value)
