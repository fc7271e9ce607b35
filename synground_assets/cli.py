"""`python -m synground_assets.cli summary|index`: what the outputs hold; bring the lineage index up to date.

`summary` prints the data root, the shards per recipe and stage, and the yield per recipe (after
refreshing the lineage index). `index` removes the leftovers of crashed writes under the data root
and refreshes the lineage index (for a cron job or a deployment step); it exits non-zero when a
shard could not be indexed, naming it.
"""

from __future__ import annotations

import argparse
import sys

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
    if store.root.is_dir():
        lineage = Lineage(default_lineage_path())
        lineage.refresh(store.root)
        print("\nyield per recipe (phrases with a box / kept phrases):")
        print(lineage.query("SELECT * FROM yield_per_recipe").to_string(index=False))
    print("\nopen the UI:  make ui   (dagster dev on http://127.0.0.1:3000)")


def index() -> int:
    store = ShardStore(default_data_root())
    cleaned = store.clean()
    counts = Lineage(default_lineage_path()).refresh(store.root)
    print(f"lineage index {default_lineage_path()} from {store.root}: {counts['indexed']} shard(s) indexed, "
          f"{counts['replaced']} replaced, {counts['removed']} removed, {counts['unchanged']} unchanged, "
          f"{counts['failed']} failed, in {counts['seconds']:.1f} s; {cleaned} leftover(s) of crashed writes removed")
    for error in counts["errors"]:
        print(f"not indexed: {error}", file=sys.stderr)
    return 1 if counts["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synground_assets.cli")
    parser.add_argument("command", choices=["summary", "index"])
    command = parser.parse_args(argv).command
    if command == "index":
        return index()
    summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
