"""`python -m synground_assets.cli summary`: where the outputs are and what they hold."""

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m synground_assets.cli")
    parser.add_argument("command", choices=["summary"])
    parser.parse_args(argv)
    summary()


if __name__ == "__main__":
    main()
