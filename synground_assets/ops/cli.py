"""`python -m synground_assets.ops.cli summary|index|cleanup|instance`: what the outputs hold; bring the
lineage index up to date; mark runs whose process died as failed; create a fresh Dagster instance.

`summary` prints the data root, the shards per recipe and stage, the triplets and yield per recipe
(after refreshing the lineage index), the pointing game that `benchmark_scores` recorded (base model,
fine-tuned model, centre baseline) with its MLflow run, and how to open the Dagster and MLflow UIs.
`index` removes the leftovers of crashed writes under the data root and refreshes the lineage index
(for a cron job or a deployment step); it exits non-zero when a shard could not be indexed, naming
it. `cleanup` does what run monitoring would for the command line, which has no daemon: runs whose
process died are marked failed and their pool slots freed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from synground_assets.resources.lineage import Lineage, default_lineage_path
from synground_assets.resources.store import ShardStore, default_data_root

STAGES = ("concepts", "descriptions", "images", "phrases", "boxes")


def tell(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summary() -> None:
    store = ShardStore(default_data_root())
    print(f"data root:       {store.root}")
    print(f"lineage (DuckDB): {default_lineage_path()}")
    recipes = sorted(p.name for p in store.root.iterdir() if p.is_dir()) if store.root.is_dir() else []
    for recipe in recipes:
        counts = ", ".join(f"{stage} {len(store.shards(recipe, stage))}" for stage in STAGES)
        print(f"recipe {recipe}: shards published: {counts}")
    if store.root.is_dir():
        lineage = Lineage(default_lineage_path(), on_wait=tell)
        lineage.refresh(store.root)
        yields = lineage.query("SELECT * FROM yield_per_recipe")
        print("\nyield per recipe (phrases with a box / kept phrases):")
        print(yields.to_string(index=False))
        for row in yields.itertuples():
            print(f"{row.recipe}: {row.boxes} triplets (image, phrase, box) from {row.shards} shard(s), "
                  f"yield {row.phrases_with_box / row.phrases:.1%}" if row.phrases else f"{row.recipe}: no phrase")
        print_scores(lineage.query(LATEST_SCORES))
    from synground_assets.resources.tracking import default_tracking_uri  # mlflow: imported when needed

    tracking_uri = default_tracking_uri()
    print("\nopen the UIs:")
    print("  make ui   (dagster dev on http://127.0.0.1:3000: assets, runs and their full event logs)")
    if tracking_uri.startswith("http"):
        print(f"  MLflow: {tracking_uri}")
    else:
        print(f"  .venv/bin/mlflow ui --backend-store-uri {tracking_uri} -h 127.0.0.1 -p 5000   "
              "(then http://127.0.0.1:5000)")


# The newest score of each (benchmark, recipe), as `benchmark_scores` recorded it.
LATEST_SCORES = """SELECT * FROM benchmark_scores
    QUALIFY row_number() OVER (PARTITION BY benchmark, recipe ORDER BY materialized_at DESC) = 1
    ORDER BY recipe, benchmark"""


def print_scores(scores) -> None:
    """Pointing game per scored (recipe, benchmark): the centre baseline, the base and fine-tuned model."""
    if scores.empty:
        print("\nno benchmark scored yet: materialize finetuned_checkpoint, then benchmark_scores "
              "(e.g. partition 'shapes_test|shapes')")
        return
    for row in scores.itertuples():
        print(f"\npointing game, recipe {row.recipe} on {row.benchmark} ({row.queries} queries):")
        print(f"  centre baseline   {row.center:.3f}")
        print(f"  base model        {row.base:.3f}")
        print(f"  fine-tuned model  {row.finetuned:.3f}   ({row.gain:+.3f} over the base model)")
        print(f"  MLflow run        {run_address(row.mlflow_run_id)}")


def run_address(run_id: str) -> str:
    """The run's id and its page in the MLflow UI (the local `mlflow ui` address unless the store is a server)."""
    from synground_assets.resources.tracking import TrackedRun, Tracking

    tracking = Tracking()
    try:
        experiment_id = tracking.client.get_run(run_id).info.experiment_id
    except Exception as error:  # the store moved or is unreachable: the id still names the run
        return f"{run_id} (not found in {tracking.tracking_uri}: {type(error).__name__})"
    return f"{run_id}  {TrackedRun(tracking.client, run_id, experiment_id, tracking.tracking_uri).url}"


def index() -> int:
    store = ShardStore(default_data_root())
    cleaned = store.clean()
    counts = Lineage(default_lineage_path(), on_wait=tell).refresh(store.root)
    print(f"lineage index {default_lineage_path()} from {store.root}: {counts['indexed']} shard(s) indexed, "
          f"{counts['replaced']} replaced, {counts['removed']} removed, {counts['unchanged']} unchanged, "
          f"{counts['failed']} failed, in {counts['seconds']:.1f} s; {cleaned} leftover(s) of crashed writes removed")
    for error in counts["errors"]:
        print(f"not indexed: {error}", file=sys.stderr)
    for vanished in counts["vanished"]:
        print(f"vanished (its rows dropped from the index): {vanished}", file=sys.stderr)
    return 1 if counts["failed"] else 0


def cleanup(dry_run: bool, run_ids: list[str], start_timeout_s: float) -> None:
    """The command line has no daemon to notice a killed run: this applies `run_health`'s rules."""
    import dagster as dg

    from synground_assets.ops.run_health import DeadRun, can_judge, clean_up_dead_runs, fail_dead_run

    with dg.DagsterInstance.get() as instance:
        if run_ids:
            named = [DeadRun(run_id, "?", "?", "named on the command line") for run_id in run_ids]
            dead = [dataclasses.replace(run, ended=tuple(fail_dead_run(instance, run))) for run in named]
        else:
            if not can_judge(instance):
                print("this instance is shared (not SQLite) and its run launcher has no worker health check: the "
                      "processes of runs on other machines cannot be judged from here; name a run you know is dead "
                      "with --run-id")
                return
            dead = clean_up_dead_runs(instance, dry_run=dry_run, start_timeout_s=start_timeout_s)
    verb = "would mark" if dry_run else "marked"
    for run in dead:
        print(f"{verb} run {run.run_id} failed and freed its pool slots: {run.reason}")
        if run.ended:
            print(f"  ended its leftover process(es): pid {', '.join(map(str, run.ended))}")
    if not dead:
        print("no dead run: every STARTING/STARTED run has a live process")


def create_instance() -> None:
    """Create the Dagster instance's storage ($DAGSTER_HOME: runs, event index, schedules) in this one
    process. Several processes creating a fresh SQLite instance at once race on its schema and can
    leave it broken for good ("alembic_version has more than one head present"): `make setup` runs
    this before anything else uses the instance. Safe to run again."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        instance.get_runs(limit=1)
        instance.event_log_storage.get_concurrency_keys()
        instance.all_instigator_state()
        print(f"Dagster instance ready in {instance.root_directory}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synground_assets.ops.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("summary", help="where the outputs are and what they hold")
    commands.add_parser("index", help="remove leftovers of crashed writes and refresh the lineage index")
    commands.add_parser("instance", help="create the Dagster instance's storage once, before first use ($DAGSTER_HOME)")
    clean = commands.add_parser("cleanup", help="mark runs whose process died as failed and free their pool slots")
    clean.add_argument("--dry-run", action="store_true", help="list the dead runs, change nothing")
    clean.add_argument("--run-id", action="append", default=[], help="mark this run failed and free its slots")
    clean.add_argument("--start-timeout", type=float, default=180.0,
                       help="seconds a run may go without a process reporting its start (default 180)")
    args = parser.parse_args(argv)
    if args.command == "index":
        return index()
    if args.command == "cleanup":
        cleanup(args.dry_run, args.run_id, args.start_timeout)
    elif args.command == "instance":
        create_instance()
    else:
        summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
