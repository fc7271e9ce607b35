"""Dagster itself at the paper's partition count: 15,600 materialized shards of one recipe in a
PostgreSQL-backed instance, with the code location's shard keys at max_shards=16,000 (x every
recipe of the built-in book).

    python -m bench.orchestration.paper_partitions [--dataset-shards 15600] [--real-shards 24] [--holes 8]
        [--backfill-shards 2000 (0: none)] [--backfill-minutes 5] [--max-concurrent-runs 1]
        [--recipes shapes,...: only these recipes in the book]

Real services from deploy/dagster.yaml in a private sandbox (synground_assets/devtools/sandbox.py:
PostgreSQL, Redis, code server, webserver, daemon, one Celery worker), with a copy of the built-in
recipe book whose `max_shards` is 16,000 and whose `shapes` dataset is --dataset-shards shards. It
measures, in order:

1. services up (code server, webserver, worker; the code location loaded), definitions import and
   listing every partition key in this process;
2. --real-shards `shapes` shards materialized by real runs (a backfill through the daemon and the
   worker); the rest of the dataset, except --holes shards spread over it, recorded as reported
   materializations of the five generation assets: one event at a time
   (`report_runless_asset_event`), then in batches (the event log's `store_event_batch`), events/s;
3. `get_materialized_partitions(boxes)`; the `missing_shards` schedule's tick, in this process (split
   into its parts) and as the UI's "test schedule" asks the code server (`scheduleDryRun`);
4. the asset's partitions page in headless Chromium (time until it shows the materialized count),
   first (cold) and again, then the catalog;
5. a backfill of --backfill-shards shards (multi-run policy, `SYNGROUND_SHARDS_PER_RUN` shards a run)
   followed for --backfill-minutes: runs created, handed to Celery and finished per minute, failed
   runs and why, the schedule's tick while they are in flight; then the backfill is canceled. The run
   queue hands Celery at most --max-concurrent-runs runs (default: the number of workers, as
   deploy/dagster.yaml says; 64 reproduces the runs failed while waiting in Celery's queue).

Writes bench/results/orchestration_scale.json. Every service is stopped when it ends, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import yaml

from bench import harness
from bench.harness import Stopwatch, write_result

RESULTS = harness.RESULTS
REPO = RESULTS.parents[1]
BUILTIN_BOOK = REPO / "synground_assets" / "config" / "recipes.yaml"
GENERATION_ASSETS = ("concepts", "descriptions", "images", "phrases", "boxes")
BOXES = dg.AssetKey("boxes")
RECIPE = "shapes"
BENCH_TAG = "bench/orchestration"
WORKERS = {"gpu0": "0"}  # one Celery worker (queues gpu and cpu)
FAST = {
    "run_coordinator": {"config": {"dequeue_interval_seconds": 1, "max_concurrent_runs": len(WORKERS)}},
    "run_launcher": {"config": {"heartbeat_seconds": 2}},
    "run_monitoring": {"poll_interval_seconds": 2},
}
SCHEDULE_SELECTOR = {"repositoryLocationName": "synground_assets", "repositoryName": "__repository__",
                     "scheduleName": "missing_shards"}
SCHEDULE_DRY_RUN = """
mutation DryRun($selector: ScheduleSelector!, $timestamp: Float) {
  scheduleDryRun(selectorData: $selector, timestamp: $timestamp) {
    __typename
    ... on DryRunInstigationTick { evaluationResult { runRequests { runKey } skipReason error { message } } }
    ... on PythonError { message }
  }
}
"""
PARTITION_STATS = """
query Stats($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode { partitionStats { numMaterialized numPartitions } } }
}
"""
CANCEL_BACKFILL = """
mutation Cancel($id: String!) {
  cancelPartitionBackfill(backfillId: $id) { __typename ... on PythonError { message } }
}
"""


def write_book(folder: Path, max_shards: int, dataset_shards: int, recipes: list[str] | None = None) -> Path:
    """The built-in recipe book (or only `recipes` of it) with `max_shards` shard keys and a `shapes`
    dataset of `dataset_shards`."""
    book = yaml.safe_load(BUILTIN_BOOK.read_text())
    if recipes:
        book["recipes"] = {name: book["recipes"][name] for name in dict.fromkeys([RECIPE, *recipes])}
    book["max_shards"] = max_shards
    book["recipes"][RECIPE]["num_shards"] = dataset_shards
    book["schedule"]["recipes"] = [RECIPE]
    path = folder / "recipes.yaml"
    path.write_text(yaml.safe_dump(book, sort_keys=False))
    return path


def timed(function: Callable, *args, **kwargs) -> tuple[object, float]:
    with Stopwatch() as watch:
        result = function(*args, **kwargs)
    return result, watch.wall


def repeat_s(function: Callable, times: int) -> list[float]:
    return [round(seconds, 3) for seconds in harness.repeat(function, times).wall]


def shard_key_of(index: int) -> str:
    return f"{RECIPE}|{index:05d}"


def hole_indices(dataset_shards: int, real_shards: int, holes: int) -> set[int]:
    """`holes` shards left missing, spread evenly over the reported part of the dataset."""
    span = dataset_shards - real_shards
    return {real_shards + (i * span) // holes + span // (2 * holes) for i in range(holes)} if holes else set()


# -- 1, 2: services, real runs, reported events ---------------------------------------------------
def real_runs(instance, post, shards: int, per_run: int) -> dict:
    from synground_assets.devtools.sandbox import succeeded, wait_for_runs
    from synground_assets.ops.scale import backfill

    keys = [shard_key_of(i) for i in range(shards)]
    with Stopwatch() as watch:
        backfill_id = backfill.launch_backfill(post, backfill.backfill_variables(keys, tags={BENCH_TAG: "real"}))
        runs = succeeded(wait_for_runs(instance, dg.RunsFilter(tags={"dagster/backfill": backfill_id}),
                                       -(-shards // per_run), 1800))
    wall = watch.wall
    return {"shards": shards, "runs": len(runs), "wall_s": round(wall, 1),
            "shards_per_min": round(60 * shards / wall, 1)}


def materialization(asset: str, index: int) -> dg.AssetMaterialization:
    """What a run's step records for one shard of an asset: the multi-partition key and its dimension tags."""
    return dg.AssetMaterialization(
        asset_key=asset,
        partition=dg.MultiPartitionKey({"recipe": RECIPE, "shard": f"{index:05d}"}),
        tags={"dagster/partition/recipe": RECIPE, "dagster/partition/shard": f"{index:05d}"},
        metadata={"bench": "reported"},
    )


def event_entry(event: dg.AssetMaterialization):
    """The event log entry `report_runless_asset_event` writes for a materialization."""
    from synground_assets.ops.dagster_internals import DagsterEvent, StepMaterializationData

    dagster_event = DagsterEvent(event_type_value=dg.DagsterEventType.ASSET_MATERIALIZATION.value,
                                 event_specific_data=StepMaterializationData(event), job_name="")
    return dg.EventLogEntry(user_message="", level=20, job_name="", run_id="", error_info=None,
                         timestamp=time.time(), step_key=None, dagster_event=dagster_event)


def report_events(instance, indices: list[int], single: int, batch_size: int) -> dict:
    """The first `single` shards' events one at a time, the rest in batches (one asset per batch:
    the batch updates the asset's latest materialization from its last event)."""
    one_by_one, batched = indices[:single], indices[single:]
    with Stopwatch() as watch:
        for asset in GENERATION_ASSETS:
            for index in one_by_one:
                instance.report_runless_asset_event(materialization(asset, index))
    single_s = watch.wall
    with Stopwatch() as watch:
        for asset in GENERATION_ASSETS:
            for offset in range(0, len(batched), batch_size):
                entries = [event_entry(materialization(asset, i)) for i in batched[offset:offset + batch_size]]
                instance.event_log_storage.store_event_batch(entries)
    batch_s = watch.wall
    single_events, batch_events = len(one_by_one) * len(GENERATION_ASSETS), len(batched) * len(GENERATION_ASSETS)
    return {
        "shards": len(indices), "assets": len(GENERATION_ASSETS),
        "one_at_a_time": {"events": single_events, "s": round(single_s, 1),
                          "events_per_s": round(single_events / single_s, 1) if single_s else None},
        "batched": {"events": batch_events, "batch_size": batch_size, "s": round(batch_s, 1),
                    "events_per_s": round(batch_events / batch_s, 1) if batch_s else None},
    }


# -- 3: what the schedule reads ------------------------------------------------------------------
def schedule_tick_in_process(instance) -> dict:
    """The tick as the code server evaluates it, and its parts."""
    from synground_assets.config.recipes import recipe_book
    from synground_assets.schedules import in_flight_partitions, missing_shards, missing_shards_schedule

    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime.now(timezone.utc))
    result, tick_s = timed(missing_shards_schedule, context)
    done, materialized_s = timed(instance.get_materialized_partitions, BOXES)
    flight, flight_s = timed(in_flight_partitions, instance)
    _, missing_s = timed(missing_shards, recipe_book(), RECIPE, done | flight, 8)
    requests = result if isinstance(result, list) else []
    return {"tick_s": round(tick_s, 3), "get_materialized_partitions_s": round(materialized_s, 3),
            "in_flight_partitions_s": round(flight_s, 3), "in_flight_partitions": len(flight),
            "missing_shards_s": round(missing_s, 4), "run_requests": len(requests),
            "shards_requested": sum(len(_keys_of(request)) for request in requests),
            "skip_reason": getattr(result, "skip_message", None)}


def _keys_of(request: dg.RunRequest) -> list[str]:
    if request.partition_key:
        return [request.partition_key]
    start, end = request.tags.get("dagster/asset_partition_range_start"), request.tags.get(
        "dagster/asset_partition_range_end")
    return [start, end] if start != end else [start]


def schedule_dry_run(post) -> dict:
    answer, seconds = timed(post, SCHEDULE_DRY_RUN, {"selector": SCHEDULE_SELECTOR, "timestamp": time.time()})
    result = answer["scheduleDryRun"]
    evaluation = result.get("evaluationResult") or {}
    if result["__typename"] != "DryRunInstigationTick" or evaluation.get("error"):
        raise RuntimeError(f"scheduleDryRun failed: {result}")
    return {"s": round(seconds, 3), "run_requests": len(evaluation.get("runRequests") or []),
            "skip_reason": evaluation.get("skipReason")}


# -- 4: the UI -----------------------------------------------------------------------------------
def open_browser():
    from synground_assets.devtools.browser import DRIVER, browser_paths, headless_chrome

    browser, driver = browser_paths()
    if not (browser and driver):
        raise SystemExit(f"no headless browser (browser={browser}, {DRIVER}={driver}): "
                         "apt-get install -y chromium chromium-driver")
    return headless_chrome(browser, driver)


def time_to_content(driver, url: str, pattern: str, timeout_s: float = 300) -> dict:
    """Seconds from asking for the page until its text matches `pattern`; what it matched."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    watch = Stopwatch().start()
    driver.get(url)
    found: list[str] = []

    def shows(d) -> bool:
        match = re.search(pattern, d.find_element(By.TAG_NAME, "body").text)
        if match:
            found.append(match.group(0))
        return bool(match)

    try:
        WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(shows)
    except Exception:  # noqa: BLE001 - report what the page showed instead
        text = driver.find_element(By.TAG_NAME, "body").text
        return {"s": None, "error": f"no {pattern!r} within {timeout_s} s; page shows: {text[:500]}"}
    return {"s": round(watch.lap(), 2), "shows": found[-1]}


def ui_pages(url: str, post, materialized: int, timeout_s: float) -> dict:
    """The boxes partitions page (first, then again) and the catalog, each until it shows its
    count; a screenshot of each under bench/results/."""
    from synground_assets.config.recipes import recipe_book

    book = recipe_book()
    every_key = len(book.recipes) * book.max_shards  # what the catalog shows for a shard-partitioned asset
    post("mutation { setNuxSeen }", {})  # else a first-visit dialog covers the pages
    partitions = (f"{url}/assets/boxes?view=partitions",
                  rf"Materialized \(({materialized:,}|{materialized})\)")
    pages = {"partitions_page_first": partitions, "partitions_page_again": partitions,
             "catalog": (f"{url}/assets", rf"({every_key:,}|{every_key}) partitions")}
    result = {}
    driver, profile = open_browser()
    try:
        for name, (page, pattern) in pages.items():
            result[f"{name}_s"] = time_to_content(driver, page, pattern, timeout_s)
            driver.save_screenshot(str(RESULTS / f"orchestration_scale-{name}.png"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    stats, seconds = timed(post, PARTITION_STATS, {"key": {"path": ["boxes"]}})
    result["graphql_partition_stats"] = {"s": round(seconds, 3), **stats["assetNodeOrError"]["partitionStats"]}
    return result


# -- 5: a backfill at scale ----------------------------------------------------------------------
def backfill_rates(instance, post, shards: int, dataset_shards: int, per_run: int, minutes: float) -> dict:
    from synground_assets.ops.scale import backfill

    keys = [shard_key_of(i) for i in range(dataset_shards - shards, dataset_shards)]
    variables = backfill.backfill_variables(keys, tags={BENCH_TAG: "backfill"})
    backfill_id, launch_s = timed(backfill.launch_backfill, post, variables)
    launched = Stopwatch().start()
    tags = {"dagster/backfill": backfill_id}
    timeline, ticks = [], []
    while (elapsed := launched.lap()) < 60 * minutes:
        records = instance.get_run_records(filters=dg.RunsFilter(tags=tags))
        statuses = Counter(record.dagster_run.status.value for record in records)
        timeline.append({"t_s": round(elapsed, 1), "runs": len(records), **statuses})
        if len(ticks) < 3 and elapsed > 60 * (len(ticks) + 1) * minutes / 4:
            ticks.append({"t_s": round(elapsed, 1), **schedule_tick_in_process(instance)})
        time.sleep(5)
    records = instance.get_run_records(filters=dg.RunsFilter(tags=tags))
    failed = [record.dagster_run for record in records if record.dagster_run.status == dg.DagsterRunStatus.FAILURE]
    reasons = Counter(_failure_reason(instance, run.run_id) for run in failed)
    cancel = _cancel(instance, post, backfill_id)
    return {
        "shards": shards, "runs_expected": -(-shards // per_run), "launch_mutation_s": round(launch_s, 2),
        "observed_s": round(launched.lap(), 1), "first_run_after_s": _first(timeline, "runs"),
        "per_minute": _per_minute(timeline), "final": timeline[-1] if timeline else {},
        "failure_reasons": dict(reasons), "schedule_ticks_in_flight": ticks, "cancel": cancel,
        "timeline": timeline,
    }


def _first(timeline: list[dict], field: str) -> float | None:
    return next((row["t_s"] for row in timeline if row.get(field)), None)


def _per_minute(timeline: list[dict]) -> dict:
    """Runs created (by the backfill daemon), handed to the run launcher (out of Dagster's queue) and
    finished (success, failure or canceled) per minute, from the first run's creation to the window's end."""
    first, last = _first(timeline, "runs"), timeline[-1] if timeline else {}
    if first is None or last["t_s"] <= first:
        return {}
    minutes = (last["t_s"] - first) / 60
    handed = last["runs"] - last.get("QUEUED", 0) - last.get("NOT_STARTED", 0)
    finished = sum(last.get(status, 0) for status in ("SUCCESS", "FAILURE", "CANCELED"))
    return {"window_min": round(minutes, 2), "created": round(last["runs"] / minutes, 1),
            "handed_to_launcher": round(handed / minutes, 1), "finished": round(finished / minutes, 1)}


def _failure_reason(instance, run_id: str) -> str:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    message = records[-1].event_log_entry.dagster_event.message if records else "no RUN_FAILURE event"
    return re.sub(r"\b[0-9a-f]{8}-[0-9a-f-]{27}\b|\d+", "#", message or "")[:160]


def _cancel(instance, post, backfill_id: str, timeout_s: float = 180) -> dict:
    answer, seconds = timed(post, CANCEL_BACKFILL, {"id": backfill_id})
    waiting = Stopwatch().start()
    while waiting.lap() < timeout_s:
        status = instance.get_backfill(backfill_id).status
        if status.value in ("CANCELED", "COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED"):
            break
        time.sleep(2)
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    return {"mutation": answer["cancelPartitionBackfill"]["__typename"], "mutation_s": round(seconds, 2),
            "backfill_status": status.value, "until_status_s": round(waiting.lap(), 1),
            "runs_by_status": dict(Counter(run.status.value for run in runs))}


# -- the bench -----------------------------------------------------------------------------------
def environment(box) -> None:
    from synground_assets.devtools.sandbox import CLIENT_ENV

    for key in (*CLIENT_ENV, "SYNGROUND_PROFILE", "SYNGROUND_DATA", "SYNGROUND_LINEAGE", "SYNGROUND_HOME",
                "SYNGROUND_SHARDS_PER_RUN"):
        os.environ[key] = box.env[key]


def definitions_load() -> dict:
    """In this process: the code location's import, then every partition key listed (twice)."""
    (_, import_s) = timed(__import__, "synground_assets.definitions")
    from synground_assets.partitions import shard_partitions

    keys, list_s = timed(shard_partitions.get_partition_keys)
    _, again_s = timed(shard_partitions.get_partition_keys)
    return {"import_s": round(import_s, 2), "partition_keys": len(keys), "list_keys_s": round(list_s, 2),
            "list_keys_again_s": round(again_s, 2)}


def run(args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="synground-orchestration-"))
    # Set before any synground_assets import: the code location reads its recipe book when imported.
    os.environ["SYNGROUND_RECIPES"] = str(write_book(folder, args.max_shards, args.dataset_shards,
                                                           args.recipes.split(",") if args.recipes else None))
    os.environ["SYNGROUND_SHARDS_PER_RUN"] = str(args.per_run)
    from synground_assets.devtools.sandbox import Sandbox, missing_services
    from synground_assets.ops.scale.backfill import http_post

    if missing_services():
        raise SystemExit(f"missing: {', '.join(missing_services())}")
    result: dict = {"max_shards": args.max_shards, "dataset_shards": args.dataset_shards, "per_run": args.per_run,
                    "workers": len(WORKERS), "max_concurrent_runs": args.max_concurrent_runs,
                    "recipes": args.recipes or "every recipe of the built-in book"}
    try:
        overrides = {**FAST, "run_coordinator": {"config": {
            **FAST["run_coordinator"]["config"], "max_concurrent_runs": args.max_concurrent_runs}}}
        with Sandbox({"SYNGROUND_RECIPES": os.environ["SYNGROUND_RECIPES"]}, overrides) as box:
            _, result["services_up_s"] = timed(box.start, WORKERS)
            environment(box)
            result["definitions"] = definitions_load()
            box.start_daemon()
            post = http_post(box.url, timeout_s=600)
            with dg.DagsterInstance.get() as instance:
                print("real runs ...", flush=True)
                result["real_runs"] = real_runs(instance, post, args.real_shards, args.per_run)
                holes = hole_indices(args.dataset_shards, args.real_shards, args.holes)
                reported = [i for i in range(args.real_shards, args.dataset_shards) if i not in holes]
                print(f"reporting {len(reported)} shards x {len(GENERATION_ASSETS)} assets ...", flush=True)
                result["reported"] = report_events(instance, reported, args.single_events, args.batch_size)
                materialized = len(instance.get_materialized_partitions(BOXES))
                result["materialized_boxes"] = materialized
                result["get_materialized_partitions_s"] = repeat_s(
                    lambda: instance.get_materialized_partitions(BOXES), 3)
                print("schedule tick ...", flush=True)
                result["schedule_tick"] = [schedule_tick_in_process(instance) for _ in range(3)]
                result["schedule_dry_run"] = [schedule_dry_run(post) for _ in range(3)]
                print("UI ...", flush=True)
                result["ui"] = ui_pages(box.url, post, materialized, args.page_timeout)
                if not args.backfill_shards:
                    return result
                print(f"backfill of {args.backfill_shards} shards for {args.backfill_minutes} min ...", flush=True)
                result["backfill"] = backfill_rates(instance, post, args.backfill_shards, args.dataset_shards,
                                                    args.per_run, args.backfill_minutes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def print_table(result: dict) -> None:
    rows = [
        ("services up (code server, webserver, worker, location loaded)", f"{result['services_up_s']:.1f} s"),
        ("definitions import / list every key "
         f"({result['definitions']['partition_keys']:,} keys)",
         f"{result['definitions']['import_s']} s / {result['definitions']['list_keys_s']} s"),
        (f"real runs: {result['real_runs']['shards']} shards in {result['real_runs']['runs']} runs",
         f"{result['real_runs']['wall_s']} s ({result['real_runs']['shards_per_min']} shards/min)"),
        ("reported events, one at a time", f"{result['reported']['one_at_a_time']['events_per_s']} events/s"),
        ("reported events, batched", "{events_per_s} events/s ({events:,} in {s} s)".format(
            **result["reported"]["batched"])),
        (f"get_materialized_partitions(boxes), {result['materialized_boxes']:,} keys",
         f"{result['get_materialized_partitions_s']} s"),
        ("missing_shards tick, in process", f"{[tick['tick_s'] for tick in result['schedule_tick']]} s"),
        ("missing_shards tick, scheduleDryRun (code server)", f"{[run['s'] for run in result['schedule_dry_run']]} s"),
    ]
    ui = result["ui"]
    for name in ("partitions_page_first_s", "partitions_page_again_s", "catalog_s"):
        page = ui[name]
        shown = page.get('shows') or page.get('error')
        rows.append((f"UI {name[:-2].replace('_', ' ')}", f"{page.get('s')} s  {shown}"))
    rows.append(("GraphQL partitionStats(boxes)", f"{ui['graphql_partition_stats']['s']} s"))
    fill = result.get("backfill")
    rows += [] if not fill else [
        (f"backfill {fill['shards']:,} shards: first run after", f"{fill['first_run_after_s']} s"),
        ("  runs per minute (created / handed to Celery / finished)",
         " / ".join(str(fill["per_minute"].get(k)) for k in ("created", "handed_to_launcher", "finished"))),
        ("  at the end of the window", json.dumps(fill["final"])),
        ("  ticks while in flight", f"{[tick['tick_s'] for tick in fill['schedule_ticks_in_flight']]} s"),
        ("  failures", json.dumps(fill["failure_reasons"])),
        ("  cancel", f"{fill['cancel']['backfill_status']} after {fill['cancel']['until_status_s']} s, "
                     f"{fill['cancel']['runs_by_status']}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"load average before {result['loadavg_before']}, after {result['loadavg_after']} on {result['cpus']} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-shards", type=int, default=16_000)
    parser.add_argument("--dataset-shards", type=int, default=15_600)
    parser.add_argument("--real-shards", type=int, default=24, help="shards materialized by real runs")
    parser.add_argument("--holes", type=int, default=8, help="shards left missing for the schedule to find")
    parser.add_argument("--single-events", type=int, default=100, help="shards reported one event at a time")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--per-run", type=int, default=8, help="SYNGROUND_SHARDS_PER_RUN")
    parser.add_argument("--backfill-shards", type=int, default=2000)
    parser.add_argument("--backfill-minutes", type=float, default=5)
    parser.add_argument("--max-concurrent-runs", type=int, default=len(WORKERS),
                        help="the run queue's limit (deploy/dagster.yaml: the number of workers)")
    parser.add_argument("--page-timeout", type=float, default=300, help="seconds a UI page may take to show")
    parser.add_argument("--recipes", help="comma-separated recipes to keep in the book (default: every one)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    result = run(args)
    result.update(loadavg_before=load_before, loadavg_after=os.getloadavg(), cpus=os.cpu_count())
    write_result(result, "orchestration_scale")
    print_table(result)


if __name__ == "__main__":
    main()
