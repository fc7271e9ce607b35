"""The cost of an export holding its own images: hard links against copies.

Materializes `--shards` shapes shards through Dagster (images of `--size` px), then runs the
`exports` asset `--repeats` times in each image mode (`hardlink`, `copy`) and measures:

- seconds of the whole export (verification, images, the five formats, the manifest's sha256s) and of
  placing the images alone (verify + link or copy, `place_images` into a scratch folder);
- bytes the export adds to the disk (blocks of the files no shard shares with it), in total and for
  `images/`, beside the apparent size of the export.

    python -m bench.throughput.export_release                       # 8 shards of 64 items, 128 px
    python -m bench.throughput.export_release --partition-range 'shapes|00000...shapes|00001'   # 2 shards
    python -m bench.throughput.export_release --size 512 --out bench/results/export_release_512.json

Prints a table and writes bench/results/export_release.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import yaml

from bench.harness import Stopwatch, result_path, write_result

MODES = ("hardlink", "copy")


def use_recipe_size(home: Path, size: int) -> None:
    """Point the recipe book at a copy whose shapes recipe draws `size` px images."""
    from synground_assets.config.recipes import BUILTIN_RECIPES

    book = yaml.safe_load(Path(BUILTIN_RECIPES).read_text())
    book["recipes"]["shapes"]["roles"]["image_generator"]["options"]["size"] = size
    (home / "recipes.yaml").write_text(yaml.safe_dump(book, sort_keys=False))
    os.environ["SYNGROUND_RECIPES"] = str(home / "recipes.yaml")


def inodes(paths) -> dict[tuple[int, int], int]:
    """(device, inode) -> bytes on disk, of every regular file listed."""
    found = {}
    for path in paths:
        stat = os.lstat(path)
        if not os.path.islink(path) and os.path.isfile(path):
            found[(stat.st_dev, stat.st_ino)] = stat.st_blocks * 512
    return found


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


def added_bytes(root: Path, export: Path, sub: str = "") -> int:
    """Bytes on disk of the export's files (under `sub`) that no file outside the export shares."""
    outside = inodes(p for p in files_under(root) if export not in p.parents)
    inside = inodes(files_under(export / sub if sub else export))
    return sum(size for key, size in inside.items() if key not in outside)


def run(args) -> dict:
    home = Path(tempfile.mkdtemp(prefix="bench-export-"))
    os.environ["SYNGROUND_HOME"] = str(home)
    for name in ("SYNGROUND_DATA", "SYNGROUND_LINEAGE"):
        os.environ.pop(name, None)
    use_recipe_size(home, args.size)

    import dagster as dg

    from synground_assets.assets.exports import exports, materialize_images, recipe_triplets
    from synground_assets.definitions import GENERATION_ASSETS
    from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource
    from synground_assets.resources.store import ShardStore, default_data_root

    resources = {"store": StoreResource(), "suite": ModelSuiteResource(), "lineage": LineageResource()}
    instance = dg.DagsterInstance.ephemeral()
    shards = [f"{i:05d}" for i in range(args.first_shard, args.first_shard + args.shards)]
    with Stopwatch() as generation:
        for shard in shards:
            assert dg.materialize(GENERATION_ASSETS, partition_key=f"shapes|{shard}", instance=instance,
                                  resources=resources).success
    generate_s = generation.wall
    store = ShardStore(default_data_root())
    timings = {mode: {"export_s": [], "place_images_s": []} for mode in MODES}
    sizes = {}
    for _ in range(args.repeats):  # the modes interleaved, so a busy spell of the machine hits both
        for mode in MODES:
            config = {"ops": {"exports": {"config": {"images": mode}}}}
            with Stopwatch() as watch:
                assert dg.materialize([exports], partition_key="shapes", instance=instance, resources=resources,
                                      run_config=config).success
            timings[mode]["export_s"].append(watch.wall)
            export = store.shard_dir("shapes", "exports", "all").resolve()
            manifest = json.loads((export / "manifest.json").read_text())
            sizes[mode] = {
                "images": manifest["images"]["hardlinked"] + manifest["images"]["copied"],
                "export_added_bytes": added_bytes(store.root, export),
                "images_added_bytes": added_bytes(store.root, export, "images"),
                "images_bytes": manifest["images"]["bytes"],
                "export_apparent_bytes": sum(p.stat().st_size for p in files_under(export)),
            }
            with tempfile.TemporaryDirectory(dir=store.root) as scratch:  # same file system as the shards
                triplets = recipe_triplets(store, "shapes", shards)
                with Stopwatch() as watch:
                    materialize_images(triplets, Path(scratch), mode)
                timings[mode]["place_images_s"].append(watch.wall)
    rows = [{"mode": mode, **sizes[mode], **{name: statistics.median(values) for name, values in timings[mode].items()},
             **{f"{name}_all": values for name, values in timings[mode].items()}} for mode in MODES]
    return {"shards": args.shards, "size_px": args.size, "repeats": args.repeats,
            "generate_s": generate_s, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--partition-range", help="e.g. 'shapes|00000...shapes|00007' (overrides --shards)")
    parser.add_argument("--size", type=int, default=128, help="shapes image size in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=result_path("export_release"))
    args = parser.parse_args()
    if args.partition_range:
        first, last = (int(key.split("|")[1]) for key in args.partition_range.split("..."))
        args.first_shard, args.shards = first, last - first + 1
    else:
        args.first_shard = 0
    result = run(args)
    print(f"{args.shards} shapes shards, {args.size} px images, median of {args.repeats} "
          f"(generation took {result['generate_s']:.1f} s)")
    print(f"{'mode':<9} {'images':>6} {'export s':>9} {'place s':>8} {'added MB':>9} {'images MB':>10} "
          f"{'img bytes MB':>12} {'apparent MB':>11}")
    for row in result["rows"]:
        print(f"{row['mode']:<9} {row['images']:>6} {row['export_s']:>9.2f} {row['place_images_s']:>8.3f} "
              f"{row['export_added_bytes'] / 1e6:>9.2f} {row['images_added_bytes'] / 1e6:>10.2f} "
              f"{row['images_bytes'] / 1e6:>12.2f} {row['export_apparent_bytes'] / 1e6:>11.2f}")
    write_result(result, args.out)


if __name__ == "__main__":
    main()
