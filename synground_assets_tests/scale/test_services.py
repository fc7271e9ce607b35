"""The scale profile against real services: PostgreSQL, Redis, the daemon, the Celery run launcher
and two workers ("GPU 0" and "GPU 1"), started once for this module and stopped after. Nothing is
mocked: runs go through the daemon's queue, Celery and the workers' own processes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_postgres import PostgresRunStorage

from synground_assets.devtools.sandbox import CLIENT_ENV, Sandbox, missing_services, wait_for_runs
from synground_assets.recipes import BUILTIN_RECIPES
from synground_assets.resources.lineage import Lineage
from synground_assets.resources.store import MANIFEST, STAGING, ShardStore
from synground_assets.scale import backfill

MISSING = missing_services()
if MISSING:
    reason = f"needs PostgreSQL, Redis and the [scale] extra; missing: {', '.join(MISSING)}"
    if os.environ.get("SYNGROUND_REQUIRE_SERVICES"):  # CI: a missing service is a failure, not a skip
        raise RuntimeError(reason)
    pytest.skip(reason, allow_module_level=True)

SHARDS_PER_RUN = 2
STAGES = ("concepts", "descriptions", "images", "phrases", "boxes")
FAST = {  # the daemon, monitoring and heartbeats on a test's time scale
    "run_coordinator": {"config": {"dequeue_interval_seconds": 1}},
    "run_launcher": {"config": {"heartbeat_seconds": 1}},
    "run_monitoring": {"poll_interval_seconds": 1, "start_timeout_seconds": 120},
    "run_retries": {"max_retries": 1},
}


def service_test_recipes(folder: Path) -> Path:
    """The built-in book with small `shapes` shards, and `shapes-large` whose shards take long
    enough to kill a worker in the middle of one."""
    book = yaml.safe_load(BUILTIN_RECIPES.read_text())
    shapes = book["recipes"]["shapes"]
    shapes["shard_size"] = 6
    shapes["roles"]["image_generator"]["options"]["size"] = 64
    large = yaml.safe_load(yaml.safe_dump(shapes))
    large.update(shard_size=32, notes="shapes, large shards (service tests)")
    large["roles"]["image_generator"]["options"]["size"] = 192
    book["recipes"]["shapes-large"] = large
    path = folder / "recipes.yaml"
    path.write_text(yaml.safe_dump(book))
    return path


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    recipes = service_test_recipes(tmp_path_factory.mktemp("recipes"))
    env = {"SYNGROUND_RECIPES": str(recipes), "SYNGROUND_SHARDS_PER_RUN": str(SHARDS_PER_RUN),
           "DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS": "1"}  # run retries launched within a second
    with Sandbox(env, FAST) as box:
        box.start({"gpu0": "0", "gpu1": "1"})
        with pytest.MonkeyPatch.context() as patch:
            for key in CLIENT_ENV:
                patch.setenv(key, box.env[key])
            with dg.DagsterInstance.get() as instance:
                box.instance = instance
                yield box


def shard_files(root: Path, recipe: str, shard: str) -> dict[str, str]:
    """sha256 of every data file of the shard's stages (its lineage rows and publish manifest,
    which name the run and the time, left out)."""
    digests = {}
    for stage in STAGES:
        folder = root / recipe / stage / shard
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and relative.parts[0] != "lineage" and relative.name != MANIFEST:
                digests[f"{stage}/{relative}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def lineage_box_counts(sandbox) -> tuple[int, int]:
    """Rows and distinct ids of the `boxes` lineage index, brought up to date with the data root."""
    lineage = Lineage(sandbox.env["SYNGROUND_LINEAGE"])
    lineage.refresh(sandbox.env["SYNGROUND_DATA"])
    counts = lineage.query("SELECT count(*) AS rows, count(DISTINCT box_id) AS ids FROM boxes")
    return int(counts.rows[0]), int(counts.ids[0])


def test_a_backfill_from_the_command_line_becomes_runs_spread_over_both_workers(sandbox):
    keys = backfill.partition_keys("shapes|00000...shapes|00007")
    backfill_id = backfill.launch_backfill(backfill.http_post(sandbox.url), backfill.backfill_variables(keys))
    sandbox.start_daemon()
    runs = wait_for_runs(sandbox.instance, dg.RunsFilter(tags={"dagster/backfill": backfill_id}), 8 // SHARDS_PER_RUN)

    assert isinstance(sandbox.instance.run_storage, PostgresRunStorage)
    assert len(runs) == 8 // SHARDS_PER_RUN and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    assert all(run.tags["synground/device"] == "cpu" and run.tags["dagster-celery/queue"] == "cpu" for run in runs)
    worker_pids = {str(process.pid): name for name, process in sandbox.workers.items()}
    assert all(run.tags["synground/worker_pid"] in worker_pids for run in runs)
    assert {run.tags["synground/cuda_visible_devices"] for run in runs} == {"0", "1"}  # both workers took work
    for run in runs:  # the assets ran in the worker's own process, on its GPU, K shards per run
        boxes = [event.asset_materialization for event in sandbox.instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
            if event.asset_key == dg.AssetKey("boxes")]
        assert len(boxes) == SHARDS_PER_RUN
        for materialization in boxes:
            assert str(materialization.metadata["worker_pid"].value) == run.tags["synground/worker_pid"]
            assert materialization.metadata["cuda_visible_devices"].value == run.tags["synground/cuda_visible_devices"]

    store = ShardStore(sandbox.env["SYNGROUND_DATA"])
    assert store.shards("shapes", "boxes") == [key.split("|")[1] for key in keys]
    published = sum(len(store.read_table("shapes", "boxes", key.split("|")[1])) for key in keys)
    assert lineage_box_counts(sandbox) == (published, published) and published > 0


def test_a_worker_killed_in_the_middle_of_a_shard_costs_a_retry_not_a_hole(sandbox, tmp_path):
    sandbox.start_daemon()
    run_id = launch_run(sandbox, "shapes-large|00000")
    victim = wait_until_images_start(sandbox.instance, run_id)
    os.kill(int(victim), signal.SIGKILL)
    name = next(name for name, process in sandbox.workers.items() if str(process.pid) == victim)
    sandbox.workers.pop(name).wait()

    [killed] = wait_for_runs(sandbox.instance, dg.RunsFilter(run_ids=[run_id]), 1, timeout_s=60)
    assert killed.status == dg.DagsterRunStatus.FAILURE
    [retry] = wait_for_runs(sandbox.instance, dg.RunsFilter(tags={"dagster/parent_run_id": run_id}), 1)
    assert retry.status == dg.DagsterRunStatus.SUCCESS and retry.tags["synground/worker_pid"] != victim

    data = Path(sandbox.env["SYNGROUND_DATA"])
    store = ShardStore(data)
    assert all(store.shards("shapes-large", stage) == ["00000"] for stage in STAGES)
    staging = [p for stage in STAGES for p in (data / "shapes-large" / stage).iterdir() if p.name.startswith(STAGING)]
    assert staging == []  # the killed write's staging folder was removed by the retry's write
    rows, ids = lineage_box_counts(sandbox)
    assert rows == ids and rows >= len(store.read_table("shapes-large", "boxes", "00000"))
    assert shard_files(data, "shapes-large", "00000") == clean_run(sandbox, tmp_path, "shapes-large|00000")


LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}
"""


def wait_until_images_start(instance: dg.DagsterInstance, run_id: str, timeout_s: float = 120) -> str:
    """The pid of the worker running `run_id`, as soon as its `images` step has started."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        starts = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
        if any(record.event_log_entry.step_key == "images" for record in starts):
            return instance.get_run_by_id(run_id).tags["synground/worker_pid"]
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never started its images step")


def clean_run(sandbox, folder: Path, key: str) -> dict[str, str]:
    """The same shard made by one uninterrupted run from the command line, on a local instance and a
    data root of its own (the scale profile's in-process executor: one process instead of one per step)."""
    home = folder / "dagster_home"
    home.mkdir()
    env = {**sandbox.env, "DAGSTER_HOME": str(home), "SYNGROUND_DATA": str(folder / "data"),
           "SYNGROUND_LINEAGE": str(folder / "lineage.duckdb")}
    subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-m",
            "synground_assets.definitions",
            "--select",
            "group:generation",
            "--partition",
            key,
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    recipe, shard = key.split("|")
    return shard_files(folder / "data", recipe, shard)


def test_a_redis_restart_in_the_middle_of_a_run_fails_nothing_and_writes_each_shard_once(sandbox):
    """Issue 19, item 1: the heartbeat thread died on the restart's ConnectionError, so every run was
    then failed as dead and retried while it still ran: each shard written twice at once."""
    import redis

    from synground_assets.run_health import Health, judge_run

    sandbox.start_daemon()
    run_id = launch_run(sandbox, "shapes-large|00001")
    wait_until_images_start(sandbox.instance, run_id)
    sandbox.stop("redis")
    [record] = sandbox.instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))
    verdict = judge_run(sandbox.instance, record)
    assert verdict.health == Health.UNKNOWN and "cannot be reached" in verdict.reason, verdict
    time.sleep(3)  # run monitoring polls every second meanwhile
    sandbox.start_redis()
    client = redis.Redis(port=sandbox.redis_port)
    deadline = time.monotonic() + 15
    while not client.keys("synground:celery-worker:*"):  # the heartbeats resume
        assert time.monotonic() < deadline, "no worker beat again after the Redis restart"
        time.sleep(0.2)

    [done] = wait_for_runs(sandbox.instance, dg.RunsFilter(run_ids=[run_id]), 1)
    assert done.status == dg.DagsterRunStatus.SUCCESS
    assert not sandbox.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))  # no retry
    data = Path(sandbox.env["SYNGROUND_DATA"])
    for stage in STAGES:  # one publish per stage, by this run
        folder = data / "shapes-large" / stage
        assert [p.name for p in folder.iterdir() if p.name.startswith(".v-00001-")] == [os.readlink(folder / "00001")]
        assert json.loads((folder / "00001" / MANIFEST).read_text())["run_id"] == run_id


def launch_run(sandbox, partition: str) -> str:
    launched = backfill.http_post(sandbox.url)(LAUNCH_RUN, {"executionParams": {
        "selector": {"repositoryLocationName": "synground_assets", "repositoryName": "__repository__",
                     "jobName": "generation"},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
    }})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


# What the UI asks on its first page: the event log (assets) and the run storage (daemon heartbeats).
FIRST_PAGE = ["{ assetsOrError { __typename } }", "{ instance { daemonHealth { allDaemonStatuses { daemonType } } } }"]


def test_the_webserver_answers_its_first_request_after_a_postgresql_restart(sandbox):
    """Issue 19, minor: its pooled connections died with the restart and the first requests got HTTP
    500 ("server closed the connection unexpectedly")."""
    post = backfill.http_post(sandbox.url)
    for query in FIRST_PAGE:  # the webserver's connections are open
        post(query, {})
    sandbox.restart_postgres()
    assert post(FIRST_PAGE[0], {})["assetsOrError"]["__typename"] == "AssetConnection"
    assert post(FIRST_PAGE[1], {})["instance"]["daemonHealth"]["allDaemonStatuses"]
