"""Scale-out on this machine: 16 `shapes` shards through the daemon and the Celery run launcher with
one worker, then with two (throughput ratio, ideal 2.0), and the per-run overhead of the Celery
launcher against Dagster's default launcher (same runs of one small shard, same instance storage).

    python -m bench.orchestration.scale_out [--shards 16] [--per-run 2] [--overhead-runs 4]

Real services (PostgreSQL, Redis, code server, webserver, daemon, workers) from deploy/dagster.yaml,
started in a private sandbox (synground_assets/devtools/sandbox.py). Writes bench/results/scale_out.json.
Index build time per shard at 16,000 shards: bench.throughput.lineage.
The times are Dagster's own (run records: creation, start, end), read back through bench.harness.
"""

from __future__ import annotations

import argparse
import os
import time

import dagster as dg

from bench.harness import Timings, write_result
from synground_assets.devtools.sandbox import CLIENT_ENV, Sandbox, succeeded, wait_for_runs
from synground_assets.ops.scale import backfill

FAST = {
    "run_coordinator": {"config": {"dequeue_interval_seconds": 1}},
    "run_launcher": {"config": {"heartbeat_seconds": 2}},
    "run_monitoring": {"poll_interval_seconds": 2},
}
DEFAULT_LAUNCHER = {"run_launcher": None}  # Dagster's default launcher: a run process started by the code server


def span_s(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> float:
    """From the first run's creation to the last run's end (the backfill's wall time)."""
    records = instance.get_run_records(filters=dg.RunsFilter(run_ids=[run.run_id for run in runs]))
    return max(r.end_time for r in records) - min(r.create_timestamp.timestamp() for r in records)


def environment(box: Sandbox) -> None:
    for key in CLIENT_ENV:
        os.environ[key] = box.env[key]


def backfill_throughput(workers: int, shards: int, per_run: int) -> dict:
    with Sandbox({"SYNGROUND_SHARDS_PER_RUN": str(per_run)}, FAST) as box:
        box.start({f"gpu{i}": str(i) for i in range(workers)})
        environment(box)
        box.start_daemon()
        time.sleep(20)  # the daemon's first backfill pass; a backfill made now waits for its next (30 s loop)
        with dg.DagsterInstance.get() as instance:
            keys = backfill.partition_keys(f"shapes|00000...shapes|{shards - 1:05d}")
            backfill_id = backfill.launch_backfill(backfill.http_post(box.url), backfill.backfill_variables(keys))
            runs = succeeded(wait_for_runs(instance, dg.RunsFilter(tags={"dagster/backfill": backfill_id}),
                                           -(-shards // per_run), 1800, poll_s=0.5))
            wall = span_s(instance, runs)
            by_worker = {}
            for run in runs:
                by_worker[run.tags["synground/worker"]] = by_worker.get(run.tags["synground/worker"], 0) + 1
    return {"workers": workers, "shards": shards, "runs": len(runs), "wall_s": round(wall, 2),
            "shards_per_s": round(shards / wall, 4), "runs_per_worker": by_worker}


def launcher_overhead(launcher: str, count: int) -> dict:
    """`count` runs of one small shard, one after the other: launch-to-end time minus step time."""
    overrides = {**FAST, **(DEFAULT_LAUNCHER if launcher == "default" else {})}
    with Sandbox({"SYNGROUND_PROFILE": "scale"}, overrides) as box:
        box.start({"gpu0": "0"} if launcher == "celery" else {})
        environment(box)
        box.start_daemon()
        post = backfill.http_post(box.url)
        totals, steps = [], []
        with dg.DagsterInstance.get() as instance:
            for shard in range(count):
                tag = {"bench/run": f"{launcher}-{shard}"}
                answer = post(LAUNCH_RUN, {"executionParams": {
                    "selector": {"repositoryLocationName": "synground_assets", "repositoryName": "__repository__",
                                 "jobName": "generation"},
                    "executionMetadata": {"tags": [{"key": "dagster/partition", "value": f"shapes|{shard:05d}"},
                                                   *[{"key": k, "value": v} for k, v in tag.items()]]}}})["launchRun"]
                assert answer["__typename"] == "LaunchRunSuccess", answer
                [run] = succeeded(wait_for_runs(instance, dg.RunsFilter(tags=tag), 1, 1800, poll_s=0.5))
                [record] = instance.get_run_records(filters=dg.RunsFilter(run_ids=[run.run_id]))
                stats = instance.get_run_stats(run.run_id)
                totals.append(record.end_time - record.create_timestamp.timestamp())
                steps.append(stats.end_time - stats.start_time)
    overhead = Timings(wall=[total - step for total, step in zip(totals, steps)])
    return {"launcher": launcher, "runs": count, "launch_to_end_s": [round(t, 2) for t in totals],
            "overhead_s_median": round(overhead.median, 2)}


LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on Error { message }
  }
}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--per-run", type=int, default=2)
    parser.add_argument("--overhead-runs", type=int, default=4)
    args = parser.parse_args()
    load_before = os.getloadavg()
    one, two = (backfill_throughput(workers, args.shards, args.per_run) for workers in (1, 2))
    celery, default = (launcher_overhead(name, args.overhead_runs) for name in ("celery", "default"))
    result = {
        "one_worker": one,
        "two_workers": two,
        "throughput_ratio": round(two["shards_per_s"] / one["shards_per_s"], 3),
        "launcher_overhead": {
            "celery": celery,
            "default": default,
            "celery_minus_default_s": round(celery["overhead_s_median"] - default["overhead_s_median"], 2),
        },
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    write_result(result, "scale_out")
    print(f"{'':24}{'wall s':>10}{'shards/s':>10}  runs per worker")
    for row in (one, two):
        label = f"{row['workers']} worker(s), {row['shards']} shards"
        print(f"{label}{row['wall_s']:>10}{row['shards_per_s']:>10}  {row['runs_per_worker']}")
    print(f"throughput ratio (2 vs 1 worker, ideal 2.0): {result['throughput_ratio']}")
    print(f"per-run overhead (launch to end minus steps), median: celery {celery['overhead_s_median']} s, "
          f"default {default['overhead_s_median']} s")
    print(f"load average before {load_before}, after {result['loadavg_after']} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
