"""What the cross-shard dedup costs per shard as earlier shards pile up: the published files read
(the path before the lineage index answered) against one index query (resources/dedup_index.py).

Builds N earlier published shards of `images` and `descriptions` (64 items each, random perceptual
hashes and descriptions, some planted near-copies), in the store's own layout and with the
lineage rows the stages write, indexes them (`Lineage.refresh`), then times the lookups of shard N
for 64 new hashes and description keys, at N = 100, 1,000 and 10,000 (--shards):

- files, cold: `earlier_shard_rows` in a fresh process (every earlier table read once);
- files, warm: the same process again (versions cached: what a range run pays after its first shard);
- index: `earlier_image_hashes` + `earlier_descriptions`, the index up to date;
- index, lagging: the same with the last --unindexed shards published after the refresh (read from files).

Every lookup must find the same duplicates as a scan of every earlier row; the script checks it.
`--planted every` (the default) puts the near-copies of shard 0's items in every earlier shard, so
the matches grow with N (what a store holds whose shards were not deduped); `--planted new` only in
shard N, as the pipeline publishes (it removes copies before publishing): the matches stay few.
`--no-file-timings` skips the two file columns (minutes at 10,000 shards; the scan that checks the
answers still runs).

    python -m bench.throughput.dedup_lookup [--shards 100 1000 10000] [--repeats 5] [--planted every|new] \
        [--no-file-timings]

Prints a table and writes bench/results/dedup_lookup.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import uuid
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from bench.harness import RESULTS, Stopwatch, check_target, repeat, result_path, write_result

RECIPE = "shapes"
ITEMS = 64
MAX_DISTANCE = 4
FLAT = 2.0  # the lookup at the most earlier shards / at the fewest, for 'flat'


def shard_key(index: int) -> str:
    return f"{index:05d}"


def shard_rows(index: int, rng: np.random.Generator, base: np.ndarray,
               plant: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One shard's images (item_id, phash) and descriptions (item_id, description): random, except
    (`plant`) a few items that copy (a few bits off) a hash or a text of the first shard."""
    from synground_assets.records.items import item_id

    ids = [item_id(RECIPE, index, i) for i in range(ITEMS)]
    values = rng.integers(0, 2**63, ITEMS, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    texts = [f"a picture of thing {index}-{i} number {rng.integers(1e9)}" for i in range(ITEMS)]
    if index and plant:
        values[:2] = base[:2] ^ np.uint64(0b101)  # 2 bits from shard 0's first hashes
        texts[0] = "A picture of thing 0-0, copied."
    return (pd.DataFrame({"item_id": ids, "phash": [f"{int(v):016x}" for v in values]}),
            pd.DataFrame({"item_id": ids, "description": texts}))


def publish(store, asset: str, shard: str, table: pd.DataFrame, lineage: pd.DataFrame) -> None:
    """A shard published in the store's layout. ShardStore.writing would first clean the asset
    folder, one listing of every earlier shard per write: the bench builds 10,000 shards, so it
    lays the folder out and publishes it with the store's own rename instead."""
    from synground_assets.resources.lineage import write_shard_lineage
    from synground_assets.resources.store import _publish, write_table

    final = store.shard_dir(RECIPE, asset, shard)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".tmp-{shard}-bench-{uuid.uuid4().hex}"
    staging.mkdir()
    write_table(staging, table)
    common = {"recipe": RECIPE, "shard": shard, "partition_key": f"{RECIPE}|{shard}", "run_id": "bench",
              "code_version": "bench", "adapter": "bench", "model_id": "bench", "revision": "", "settings": "{}"}
    write_shard_lineage(staging, {asset: lineage.assign(**common)})
    _publish(staging, final, uuid.uuid4().hex)


def build(store, first: int, last: int, rng: np.random.Generator, base: np.ndarray, plant: bool = True) -> None:
    from synground_assets.quality.images import hash_bits
    from synground_assets.quality.text import description_key

    for index in range(first, last):
        images, descriptions = shard_rows(index, rng, base, plant)
        publish(store, "images", shard_key(index), images, images.assign(phash_bits=hash_bits(images.phash)))
        publish(store, "descriptions", shard_key(index), descriptions,
                descriptions.assign(description_key=descriptions.description.map(description_key)))


def new_shard(index: int, base: np.ndarray,
              planted: str = "every") -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Shard N's (item, hash) and (item, text): a few near-copies of earlier items (with --planted
    new, its text copy is of shard 0's first text, the earlier shards holding no copy of their own)."""
    rng = np.random.default_rng(index)
    images, descriptions = shard_rows(index, rng, base)
    if planted == "new":
        first = shard_rows(0, np.random.default_rng(0), base)[1].description[0]
        descriptions.loc[0, "description"] = first.upper() + "!"  # the same once normalised
    return list(zip(images.item_id, images.phash)), list(zip(descriptions.item_id, descriptions.description))


def lookups(root: Path, index_path: Path, shard: str, hashes, texts) -> tuple[dict, dict]:
    """The duplicates found through the index (falling back to files where it lags)."""
    from synground_assets.quality.images import find_near_duplicates
    from synground_assets.quality.text import description_key, find_duplicate_texts
    from synground_assets.resources.dedup_index import earlier_descriptions, earlier_image_hashes
    from synground_assets.resources.store import ShardStore

    store = ShardStore(root)
    images = earlier_image_hashes(store, index_path, RECIPE, shard, [h for _, h in hashes], MAX_DISTANCE)
    described = earlier_descriptions(store, index_path, RECIPE, shard, [description_key(t) for _, t in texts])
    return (find_near_duplicates(hashes, list(zip(images.item_id, images.phash)), MAX_DISTANCE),
            find_duplicate_texts(texts, list(zip(described.item_id, described.description))))


def scans(root: Path, shard: str, hashes, texts) -> tuple[dict, dict]:
    """The duplicates found by reading every earlier shard's table (the path before the index)."""
    from synground_assets.quality.images import find_near_duplicates
    from synground_assets.quality.text import find_duplicate_texts
    from synground_assets.resources.published import earlier_shard_rows
    from synground_assets.resources.store import ShardStore

    store = ShardStore(root)
    images = earlier_shard_rows(store, RECIPE, "images", shard, ["item_id", "phash"])
    described = earlier_shard_rows(store, RECIPE, "descriptions", shard, ["item_id", "description"])
    return (find_near_duplicates(hashes, list(zip(images.item_id, images.phash)), MAX_DISTANCE),
            find_duplicate_texts(texts, list(zip(described.item_id, described.description))))


def timed(call, repeats: int) -> tuple[float, object]:
    """The median seconds of `repeats` calls, and the last call's answer."""
    timing = repeat(call, repeats)
    return timing.median, timing.last


def cold_scan_seconds(root: Path, shard: str, base_hex: list[str], planted: str) -> float:
    """`scans` in a fresh process (modules imported first): what a run's first shard pays, no table cached."""
    code = ("import numpy as np\nimport bench.throughput.dedup_lookup as d\nfrom bench.harness import Stopwatch\n"
            f"base = np.array([int(h, 16) for h in {base_hex!r}], dtype=np.uint64)\n"
            f"h, t = d.new_shard({int(shard)}, base, {planted!r})\nd.scans(d.Path({str(root)!r}), '00000', h, t)\n"
            f"with Stopwatch() as watch:\n    d.scans(d.Path({str(root)!r}), {shard!r}, h, t)\nprint(watch.wall)")
    # `-c` puts the working folder first on the path: the checkout's root, where `bench` is.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=RESULTS.parents[1])
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--unindexed", type=int, default=10, help="shards published after the last refresh")
    parser.add_argument("--planted", choices=["every", "new"], default="every",
                        help="near-copies of shard 0 in every earlier shard, or only in the new one")
    parser.add_argument("--no-file-timings", action="store_true", help="skip the files columns")
    parser.add_argument("--output", type=Path, default=result_path("dedup_lookup"))
    args = parser.parse_args()
    if min(args.shards) <= args.unindexed:
        parser.error(f"every --shards count must exceed --unindexed ({args.unindexed}): the index must hold some "
                     f"earlier shards; got {min(args.shards)}")

    from synground_assets.resources.lineage import Lineage
    from synground_assets.resources.store import ShardStore

    work = Path(tempfile.mkdtemp(prefix="synground-dedup-"))
    root, index_path = work / "data", work / "data" / "lineage.duckdb"
    store = ShardStore(root)
    rng = np.random.default_rng(0)
    base = np.array([int(h, 16) for h in shard_rows(0, np.random.default_rng(0), np.zeros(2, np.uint64))[0].phash],
                    dtype=np.uint64)
    built, results = 0, {}
    for count in sorted(args.shards):
        plant = args.planted == "every"
        with Stopwatch() as watch:
            build(store, built, count - args.unindexed, rng, base, plant)
        built_s = watch.wall
        refresh = Lineage(index_path).refresh(root)
        build(store, count - args.unindexed, count, rng, base, plant)  # published after the refresh
        built = count
        shard = shard_key(count)
        hashes, texts = new_shard(count, base, args.planted)
        expected = scans(root, shard, hashes, texts)
        assert expected[0] and expected[1], "no planted duplicate found: the bench checks nothing"
        lookup = partial(lookups, root, index_path, shard, hashes, texts)
        lagging_s, lagging = timed(lookup, args.repeats)
        Lineage(index_path).refresh(root)
        index_s, answered = timed(lookup, args.repeats)
        assert answered == lagging == expected, (count, answered, lagging, expected)
        warm_s, cold_s = None, None
        if not args.no_file_timings:
            warm_s, _ = timed(partial(scans, root, shard, hashes, texts), args.repeats)
            cold_s = cold_scan_seconds(root, shard, [f"{int(v):016x}" for v in base], args.planted)
        results[count] = {"files_cold_s": cold_s, "files_warm_s": warm_s, "index_s": index_s,
                          "index_lagging_s": lagging_s, "unindexed_shards": args.unindexed,
                          "image_duplicates": len(expected[0]), "description_duplicates": len(expected[1]),
                          "build_s": built_s, "refresh_s": refresh["seconds"]}
        print(f"{count} earlier shards: {results[count]}", flush=True)
    write_result({"items_per_shard": ITEMS, "max_distance": MAX_DISTANCE, "repeats": args.repeats,
                  "planted": args.planted, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                  "by_earlier_shards": results}, args.output)
    print(f"\nper shard lookup (64 hashes + 64 description keys), median of {args.repeats}, seconds")
    print(f"  {'earlier shards':>14s} {'files cold':>11s} {'files warm':>11s} {'index':>8s} "
          f"{'index, ' + str(args.unindexed) + ' unindexed':>22s}")
    def seconds(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    for count, r in results.items():
        print(f"  {count:14d} {seconds(r['files_cold_s']):>11s} {seconds(r['files_warm_s']):>11s} {r['index_s']:8.3f} "
              f"{r['index_lagging_s']:22.3f}")
    if len(results) > 1:
        fewest, most = min(results), max(results)
        growth = results[most]["index_s"] / results[fewest]["index_s"]
        print(f"\nindex lookup {results[fewest]['index_s']:.3f} s -> {results[most]['index_s']:.3f} s from {fewest} "
              f"to {most} earlier shards" + ("" if args.planted == "new" else "; this data plants copies in every "
              "earlier shard, so the matches grow with the shards: --planted new for data as the pipeline "
              "publishes it"))
        check_target(f"a flat index lookup, growth from {fewest} to {most} earlier shards", growth, FLAT, unit="x")


if __name__ == "__main__":
    main()
