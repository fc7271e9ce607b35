"""The scale profile against real services: PostgreSQL, Redis, the daemon, the Celery run launcher
and two workers ("GPU 0" and "GPU 1"), started once for this module and stopped after. Nothing is
mocked: runs go through the daemon's queue, Celery and the workers' own processes. Redis and
PostgreSQL ask for a password, which no log may show."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_postgres import PostgresRunStorage

from synground_assets.config.recipes import BUILTIN_RECIPES
from synground_assets.devtools.sandbox import CLIENT_ENV, Sandbox, missing_services, wait_for_runs
from synground_assets.ops.scale import backfill
from synground_assets.resources.lineage import Lineage
from synground_assets.resources.store import MANIFEST, STAGING, ShardStore

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
WORKERS = {"gpu0": "0", "gpu1": "1"}
PASSWORD = f"sg-pw-{secrets.token_hex(8)}"  # Redis's and PostgreSQL's; must appear in no log


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
           "DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS": "1",  # run retries launched within a second
           "SYNGROUND_RELAUNCH_INTERVAL_S": "2",  # the lost_retries sensor
           # The daemon gives up on a code server that does not answer in 20 s (Dagster's default: 60 s).
           "DAGSTER_GRPC_TIMEOUT_SECONDS": "20"}
    with Sandbox(env, FAST, password=PASSWORD) as box:
        box.start(WORKERS)
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
    from synground_assets.ops.run_health import Health, judge_run

    sandbox.start_daemon()
    run_id = launch_run(sandbox, "shapes-large|00001")
    wait_until_images_start(sandbox.instance, run_id)
    sandbox.stop("redis")
    [record] = sandbox.instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))
    verdict = judge_run(sandbox.instance, record)
    assert verdict.health == Health.UNKNOWN and "cannot be reached" in verdict.reason, verdict
    time.sleep(3)  # run monitoring polls every second meanwhile
    sandbox.start_redis()
    client = sandbox.redis_client()
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


def run_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Every message of the run's event log, with each step failure's description."""
    messages = []
    for entry in instance.all_logs(run_id):
        messages.append(entry.message or "")
        event = entry.dagster_event
        if event is not None:
            messages.append(event.message or "")
            if event.event_type == dg.DagsterEventType.STEP_FAILURE:
                failure = event.step_failure_data
                messages.append((failure.user_failure_data.description if failure.user_failure_data else None)
                                or (failure.error.message if failure.error else ""))
    return messages


def wait_until(check, what: str, timeout_s: float = 180, poll_s: float = 0.5):
    """`check()`'s first truthy answer, or an error naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def publishes(data: Path, recipe: str, shard: str) -> dict[str, list[str]]:
    """Per stage, the run id of every version folder of the shard (each publish leaves one)."""
    return {stage: sorted(json.loads((version / MANIFEST).read_text())["run_id"]
                          for version in (data / recipe / stage).glob(f".v-{shard}-*"))
            for stage in STAGES}


def materialization_counts(instance: dg.DagsterInstance, partition: str) -> dict[str, int]:
    return {stage: len(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage), asset_partitions=[partition]), limit=100).records)
        for stage in STAGES}


def kill_worker_of(sandbox, pid: str) -> None:
    os.kill(int(pid), signal.SIGKILL)
    name = next(name for name, process in sandbox.workers.items() if str(process.pid) == pid)
    sandbox.workers.pop(name).wait()


def test_a_retry_the_daemon_could_not_launch_is_relaunched_once_the_code_location_answers(sandbox):
    """Issue 30, item 1: the code server did not answer the daemon's retry in time, Dagster tagged
    the run dagster/will_retry=false for good, and the shard stayed a hole."""
    from synground_assets.relaunch import FAILED_TO_RETRY, RELAUNCH_OF, RELAUNCH_STATE

    sandbox.ensure_workers(WORKERS)
    sandbox.start_daemon()
    run_id = launch_run(sandbox, "shapes-large|00002")
    victim = wait_until_images_start(sandbox.instance, run_id)
    sandbox.send_signal("code_server", signal.SIGSTOP)  # busy or restarting: it answers nothing
    try:
        kill_worker_of(sandbox, victim)
        lost = wait_until(lambda: (run := sandbox.instance.get_run_by_id(run_id)).tags.get("dagster/will_retry")
                          == "false" and FAILED_TO_RETRY in run_messages(sandbox.instance, run_id) and run,
                          "the daemon giving up on the retry", 240)
    finally:
        sandbox.send_signal("code_server", signal.SIGCONT)
    assert lost.status == dg.DagsterRunStatus.FAILURE and "dagster/auto_retry_run_id" not in lost.tags

    [relaunch] = wait_for_runs(sandbox.instance, dg.RunsFilter(tags={RELAUNCH_OF: run_id}), 1, timeout_s=300)
    assert relaunch.status == dg.DagsterRunStatus.SUCCESS and relaunch.tags["synground/worker_pid"] != victim
    assert relaunch.tags["dagster/partition"] == "shapes-large|00002"
    assert "could not be launched" in relaunch.tags["synground/relaunch_reason"]
    assert sandbox.instance.get_run_by_id(run_id).tags[RELAUNCH_STATE] == "requested"
    assert any(m.startswith("Relaunched by the lost_retries sensor (1/2)") for m in run_messages(sandbox.instance,
                                                                                                  run_id))
    data = Path(sandbox.env["SYNGROUND_DATA"])
    store = ShardStore(data)
    assert all("00002" in store.shards("shapes-large", stage) for stage in STAGES)  # no hole
    made = publishes(data, "shapes-large", "00002")
    killed_in = {stage for stage, runs in made.items() if relaunch.run_id in runs}
    assert "images" in killed_in and "boxes" in killed_in  # the steps that had not succeeded, from the relaunch
    assert all(json.loads((data / "shapes-large" / stage / "00002" / MANIFEST).read_text())["run_id"] ==
               relaunch.run_id for stage in killed_in)

    time.sleep(8)  # several sensor ticks later: still one relaunch
    assert len(sandbox.instance.get_runs(filters=dg.RunsFilter(tags={RELAUNCH_OF: run_id}))) == 1
    sandbox.ensure_workers(WORKERS)


def test_a_worker_frozen_past_its_heartbeats_resumes_and_publishes_nothing(sandbox):
    """Issue 30, item 2: the resumed worker published the shards its retry was publishing, its run
    went FAILURE -> SUCCESS and each partition had two materializations."""
    sandbox.ensure_workers(WORKERS)
    sandbox.start_daemon()
    partition = "shapes-large|00003"
    run_id = launch_run(sandbox, partition)
    victim = wait_until_images_start(sandbox.instance, run_id)
    name = next(name for name, process in sandbox.workers.items() if str(process.pid) == victim)
    sandbox.send_signal(name, signal.SIGSTOP)  # a VM pause, a swap storm
    try:
        failed = wait_until(lambda: (run := sandbox.instance.get_run_by_id(run_id)).status ==
                            dg.DagsterRunStatus.FAILURE and run, "run monitoring failing the frozen run", 120)
        wait_until(lambda: sandbox.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id})),
                   "the retry", 120)
    finally:
        sandbox.send_signal(name, signal.SIGCONT)  # resumes while its retry runs
    assert failed.status == dg.DagsterRunStatus.FAILURE
    silent = [m for m in run_messages(sandbox.instance, run_id) if f"(pid {victim}) silent for" in m]
    assert silent and not any("its process is gone" in m for m in run_messages(sandbox.instance, run_id)), silent

    [retry] = wait_for_runs(sandbox.instance, dg.RunsFilter(tags={"dagster/parent_run_id": run_id}), 1, timeout_s=300)
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    refused = wait_until(lambda: [m for m in run_messages(sandbox.instance, run_id)
                                  if f"images {partition}: not published" in m],
                         "the resumed run's refused publish", 240)
    assert "no longer started" in refused[0]
    time.sleep(3)  # whatever the resumed process would still do, it has done
    assert sandbox.instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE  # never flips to SUCCESS

    made = publishes(Path(sandbox.env["SYNGROUND_DATA"]), "shapes-large", "00003")
    assert all(len(runs) == 1 for runs in made.values()), made  # one publish per shard
    assert {runs[0] for stage, runs in made.items() if stage in ("images", "phrases", "boxes")} == {retry.run_id}
    assert materialization_counts(sandbox.instance, partition) == {stage: 1 for stage in STAGES}


def test_no_password_reaches_a_log_not_even_through_a_redis_outage(sandbox):
    """Issue 30, item 4: every health check during a Redis outage printed the broker URL, password
    and all, in the daemon's log."""
    sandbox.ensure_workers(WORKERS)
    sandbox.start_daemon()
    run_id = launch_run(sandbox, "shapes-large|00004")
    wait_until_images_start(sandbox.instance, run_id)
    daemon_log = sandbox.log("daemon")
    before = daemon_log.stat().st_size
    sandbox.stop("redis")
    try:  # run monitoring checks the run every second: each check is logged as a failed health check
        wait_until(lambda: "cannot be reached" in daemon_log.read_text(errors="replace")[before:],
                   "a failed health check in the daemon's log", 60)
    finally:
        sandbox.start_redis()
    wait_for_runs(sandbox.instance, dg.RunsFilter(run_ids=[run_id]), 1)

    assert "redis://:***@127.0.0.1" in daemon_log.read_text(errors="replace")[before:]  # masked, not left out
    logs = sorted(sandbox.root.glob("*.log"))
    assert {"daemon.log", "code_server.log", "webserver.log", "gpu0.log", "gpu1.log"} <= {log.name for log in logs}
    leaks = {log.name: log.read_text(errors="replace").count(PASSWORD) for log in logs}
    assert not any(leaks.values()), leaks


def test_a_write_waits_out_a_postgresql_outage_of_a_few_seconds(sandbox):
    """Issue 30, minor: dagster-postgres gives up connecting after about 6 s, so a step that logged an
    event while PostgreSQL was down for longer failed, and its run was retried."""
    import threading

    instance = sandbox.instance
    run = instance.add_run(dg.DagsterRun(job_name="outage_probe", run_id=f"outage-{secrets.token_hex(4)}"))
    outage_s = 12
    sandbox.stop_postgres()
    back = threading.Timer(outage_s, sandbox.start_postgres)
    back.start()
    started = time.monotonic()
    try:
        instance.report_engine_event("written during a PostgreSQL outage", run)  # the event log storage
        instance.add_run_tags(run.run_id, {"synground/outage": "waited"})  # the run storage
    finally:
        back.join()
    assert time.monotonic() - started >= outage_s - 1  # it waited for PostgreSQL, it did not give up
    assert "written during a PostgreSQL outage" in run_messages(instance, run.run_id)
    assert instance.get_run_by_id(run.run_id).tags["synground/outage"] == "waited"
