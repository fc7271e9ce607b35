"""The box stage against its detector's bare calls, and optionally against the box stage of another
checkout of this project (e.g. a `git worktree` of an earlier commit), in one process.

Builds one shard of a tiny recipe (concepts, descriptions, images written as PNG, phrases), then
times, alternating within each round (bench.harness; best and median of `--repeats`):

- bare: the detector adapter's `detect` on the shard's batches, images already decoded in memory;
- bare + decode: the same, each image decoded from its PNG file first (as the stage must);
- the stage (`pipeline.boxes.box_phrases`: reads the images ahead, filters, previews), and the
  other checkout's stage on the same inputs and the same detector, when `--old` names one.

Items the tiny detector cannot take (it fails to tokenize some phrases) are left out of every path.
With `--old`, the two stages' outputs are compared (table, removals, skips, counts, lineage tables,
preview pixels) and the script fails when they differ. Wall time and process CPU time are printed and
written to bench/results/box_stage.json.

    git worktree add /tmp/box-old 2ebaadd
    OMP_NUM_THREADS=1 python -m bench.throughput.box_stage --items 64 --repeats 15 --old /tmp/box-old
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import re
import shutil
import sys
import tempfile
from pathlib import Path

from bench.harness import alternate, write_result


def old_package(checkout: Path, into: Path) -> str:
    """The checkout's package copied under another name (its imports renamed) and imported from there,
    next to this one: its submodules resolve through the package's own path, not `sys.path`."""
    name = "synground_assets_old"
    shutil.copytree(checkout / "synground_assets", into / name)
    for path in (into / name).rglob("*.py"):
        path.write_text(re.sub(r"\bsynground_assets\b", name, path.read_text()))
    spec = importlib.util.spec_from_file_location(name, into / name / "__init__.py",
                                                  submodule_search_locations=[str(into / name)])
    sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[name])
    return name


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--recipe", default="tiny-concept2text")
    parser.add_argument("--old", type=Path, help="another checkout of this project: its box stage is timed too")
    args = parser.parse_args(argv)

    import pandas as pd
    import torch
    from PIL import Image

    from bench.throughput.gpu_stages import adapter_recipe, bench_shard, bench_suite, detector_work
    from synground_assets.pipeline.batching import batches
    from synground_assets.pipeline.boxes import BoxInputs, box_phrases

    torch.manual_seed(0)
    recipe, shard = adapter_recipe(args.recipe, args.items, torch.device("cpu")), "00000"
    suite, work = bench_suite(recipe), Path(tempfile.mkdtemp(prefix="synground-box-stage-"))
    image_folder = work / "images"
    _, _, drawn, phrases = bench_shard(recipe, shard, suite, image_folder)
    drawn = drawn.table
    failing = {item for item, _ in box_phrases(recipe, shard, BoxInputs(drawn, phrases, image_folder), suite).skipped}
    images = drawn[~drawn.item_id.isin(failing)].reset_index(drop=True)
    inputs = BoxInputs(images, phrases, image_folder)
    files, pictures, work_items = detector_work(images, phrases, image_folder)
    detector, size = suite.detector(recipe.name), recipe.roles["detector"].batch_size

    def bare(image_of):
        return [detector.detect([image_of(item) for item, _ in batch], [texts for _, texts in batch])
                for batch in batches(work_items, size)]

    calls = {"bare (images in memory)": lambda: bare(pictures.__getitem__),
             "bare + PNG decode": lambda: bare(lambda item: Image.open(image_folder / files[item]).convert("RGB")),
             "stage": lambda: box_phrases(recipe, shard, inputs, suite)}
    if args.old:
        old_boxes = importlib.import_module(f"{old_package(args.old, work / 'old')}.pipeline.boxes")
        calls["stage, --old"] = lambda: old_boxes.box_phrases(recipe, shard, inputs, suite)
    timings = alternate(calls, args.repeats, warmup=True)  # warm-up at these shapes
    n, base, base_decode = len(work_items), timings["bare (images in memory)"].best, timings["bare + PNG decode"].best
    print(f"{args.recipe}: {n} items ({len(failing)} left out), {args.repeats} rounds, "
          f"torch threads {torch.get_num_threads()}")
    rows = {}
    for name, timing in timings.items():
        best, median = timing.best, timing.median
        print(f"  {name:24s} {n / best:7.1f} items/s (median {n / median:7.1f})  bare/this {base / best:.3f}  "
              f"bare+decode/this {base_decode / best:.3f}  CPU {timing.cpu_best:.3f} s")
        rows[name] = {"items_per_s": n / best, "items_per_s_median": n / median, "bare_over_this": base / best,
                      "bare_decode_over_this": base_decode / best, **timing.summary()}
    write_result({"recipe": args.recipe, "items": n, "left_out": len(failing), "rounds": args.repeats,
                  "torch_threads": torch.get_num_threads(), "old": str(args.old or ""), "calls": rows}, "box_stage")
    if args.old:
        new, old = calls["stage"](), calls["stage, --old"]()
        pd.testing.assert_frame_equal(new.table, old.table)
        assert [dataclasses.astuple(r) for r in new.removals] == [dataclasses.astuple(r) for r in old.removals]
        assert (new.skipped, new.counts) == (old.skipped, old.counts)
        assert new.lineage.keys() == old.lineage.keys()
        for key in new.lineage:
            pd.testing.assert_frame_equal(new.lineage[key], old.lineage[key])
        assert [tile.tobytes() for tile in new.preview] == [tile.tobytes() for tile in old.preview]
        print("  the two stages' outputs are equal (table, removals, skips, counts, lineage, preview pixels)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
