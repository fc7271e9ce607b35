"""`python -m synground_assets.cli summary`: where the outputs are and what they hold.
`python -m synground_assets.cli cleanup`: mark runs whose process died as failed, free their slots."""

from __future__ import annotations

import argparse

from synground_assets.resources.lineage import Lineage, default_lineage_path
from synground_assets.resources.store import ShardStore, default_data_root

STAGES = ("concepts", "descriptions", "images", "phrases", "boxes")


def summary() -> None:
    store = ShardStore(default_data_root())
    print(f"data root:       {store.root}")
    print(f"lineage (DuckDB): {default_lineage_path()}")
    recipes = sorted(p.name for p in store.root.iterdir() if p.is_dir()) if store.root.is_dir() else []
    for recipe in recipes:
        counts = ", ".join(f"{stage} {len(store.shards(recipe, stage))}" for stage in STAGES)
        print(f"recipe {recipe}: shards published: {counts}")
    if default_lineage_path().exists():
        print("\nyield per recipe (phrases with a box / kept phrases):")
        print(Lineage(default_lineage_path()).query("SELECT * FROM yield_per_recipe").to_string(index=False))
    print("\nopen the UI:  make ui   (dagster dev on http://127.0.0.1:3000)")


def cleanup(dry_run: bool, run_ids: list[str], start_timeout_s: float) -> None:
    """The command line has no daemon to notice a killed run: this does what run monitoring would."""
    import dagster as dg

    from synground_assets.dead_runs import DeadRun, clean_up_dead_runs, fail_dead_run, is_local_instance

    with dg.DagsterInstance.get() as instance:
        if run_ids:
            dead = [DeadRun(run_id, "?", "?", "named on the command line") for run_id in run_ids]
            for run in dead:
                fail_dead_run(instance, run)
        else:
            if not is_local_instance(instance):
                print("this instance is shared (not SQLite): the processes of runs on other machines cannot be "
                      "judged from here; name a run you know is dead with --run-id")
                return
            dead = clean_up_dead_runs(instance, dry_run=dry_run, start_timeout_s=start_timeout_s)
    verb = "would mark" if dry_run else "marked"
    for run in dead:
        print(f"{verb} run {run.run_id} failed and freed its pool slots: {run.reason}")
    if not dead:
        print("no dead run: every STARTING/STARTED run has a live process")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m synground_assets.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("summary", help="where the outputs are and what they hold")
    clean = commands.add_parser("cleanup", help="mark runs whose process died as failed and free their pool slots")
    clean.add_argument("--dry-run", action="store_true", help="list the dead runs, change nothing")
    clean.add_argument("--run-id", action="append", default=[], help="mark this run failed and free its slots")
    clean.add_argument("--start-timeout", type=float, default=180.0,
                       help="seconds a run may go without a process reporting its start (default 180)")
    args = parser.parse_args(argv)
    if args.command == "summary":
        summary()
    else:
        cleanup(args.dry_run, args.run_id, args.start_timeout)


if __name__ == "__main__":
    main()
