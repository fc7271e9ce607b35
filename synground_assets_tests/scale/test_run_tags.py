"""Runs are tagged from their recipe as they are queued, so the GPU limit holds back GPU runs only."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest

from synground_assets.config.recipes import recipe_book
from synground_assets.ops.dagster_internals import (
    InProcessCodeLocationOrigin,
    LoadableTargetOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
    SubmitRunContext,
    TagConcurrencyLimitsCounter,
)
from synground_assets.ops.scale import profile
from synground_assets.ops.scale.run_tags import DEVICE_TAG, recipe_device, recipe_run_tags, recipes_of_run

ORIGIN = RemoteJobOrigin(RemoteRepositoryOrigin(InProcessCodeLocationOrigin(
    LoadableTargetOrigin(module_name="synground_assets.definitions")), "__repository__"), "generation")
GPU_LIMIT = [{"key": DEVICE_TAG, "value": "gpu", "limit": 1}]
RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def test_recipes_name_their_device():
    book = recipe_book()
    assert recipe_device(book.get("shapes")) == recipe_device(book.get("tiny-concept2text")) == "cpu"
    assert recipe_device(book.get("paper-concept2text")) == "gpu"


@pytest.mark.parametrize(("tags", "recipes"), [
    ({"dagster/partition": "shapes|00003"}, ["shapes"]),
    ({"dagster/partition": "shapes"}, ["shapes"]),  # the checkpoint's partition
    ({"dagster/partition": "shapes_test|paper-image2text"}, ["paper-image2text"]),  # the scores' partition
    (dict(zip(RANGE, ["shapes|00000", "shapes|00007"])), ["shapes"]),
    (dict(zip(RANGE, ["paper-gligen|00060", "shapes|00001"])),
     [r for r in sorted(recipe_book().recipes) if "paper-gligen" <= r <= "shapes"]),
    ({}, []),
])
def test_the_recipes_of_a_run_come_from_its_partition_tags(tags, recipes):
    assert recipes_of_run(tags, recipe_book()) == recipes


def test_tags_add_the_device_and_its_celery_queue_but_keep_what_the_user_set():
    book, queues = recipe_book(), {"gpu": "gpu-workers", "cpu": "cpu-workers"}
    assert recipe_run_tags({"dagster/partition": "paper-gligen|00000"}, book, queues) == {
        DEVICE_TAG: "gpu", "dagster-celery/queue": "gpu-workers"}
    assert recipe_run_tags({"dagster/partition": "shapes|00000"}, book, {}) == {DEVICE_TAG: "cpu"}
    assert recipe_run_tags({"dagster/partition": "shapes|00000", DEVICE_TAG: "gpu", "dagster-celery/queue": "mine"},
                           book, queues) == {}
    assert recipe_run_tags({"dagster/partition": "nothing"}, book, queues) == {}


def test_queued_runs_of_a_cpu_recipe_are_not_held_back_by_a_running_gpu_run():
    coordinator = {"module": "synground_assets.ops.scale.run_tags", "class": "RecipeRunCoordinator",
                   "config": {"tag_concurrency_limits": GPU_LIMIT}}
    with dg.instance_for_test(overrides={"run_coordinator": coordinator}) as instance:
        def queued(key: str) -> dg.DagsterRun:
            run = instance.add_run(dg.DagsterRun(job_name="generation", run_id=str(uuid.uuid4()),
                                                 tags={"dagster/partition": key}, remote_job_origin=ORIGIN))
            return instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))  # as instance.submit_run

        running_gpu = queued("paper-concept2text|00000")
        waiting = [queued(key) for key in ["paper-concept2text|00001", "shapes|00000", "shapes|00001"]]
        assert [run.status for run in waiting] == [dg.DagsterRunStatus.QUEUED] * 3
        assert [run.tags[DEVICE_TAG] for run in [running_gpu, *waiting]] == ["gpu", "gpu", "cpu", "cpu"]
        counter = TagConcurrencyLimitsCounter(GPU_LIMIT, [running_gpu])  # what the queue daemon asks
        assert [counter.is_blocked(run) for run in waiting] == [True, False, False]


def test_the_profile_chooses_the_backfill_policy_and_executor(monkeypatch):
    assert profile.backfill_policy() == dg.BackfillPolicy.single_run() and profile.executor() is None
    monkeypatch.setenv("SYNGROUND_PROFILE", "scale")
    monkeypatch.setenv("SYNGROUND_SHARDS_PER_RUN", "4")
    assert profile.backfill_policy() == dg.BackfillPolicy.multi_run(max_partitions_per_run=4)
    assert profile.executor() is dg.in_process_executor
    monkeypatch.setenv("SYNGROUND_SHARDS_PER_RUN", "0")
    with pytest.raises(profile.ProfileError, match="SYNGROUND_SHARDS_PER_RUN='0': expected an integer >= 1"):
        profile.backfill_policy()
    monkeypatch.setenv("SYNGROUND_PROFILE", "cluster")
    with pytest.raises(profile.ProfileError, match="SYNGROUND_PROFILE='cluster': expected one of local, scale"):
        profile.executor()
