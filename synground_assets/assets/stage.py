"""What every generation asset does around its stage (`pipeline/`), written once.

For each shard of the run: call the stage, write what it returns (tables, PNG files) into a staging
folder, add its lineage rows and skipped items there as Parquet files (`lineage/<table>.parquet`),
publish it all with the store's one atomic rename, log progress. Each publish first checks that the
run is still the STARTED run of record (a worker frozen past its heartbeats resumes in a run that
was failed and retried meanwhile: it fails, recorded, and publishes nothing). An asset supplies only
`run_shard`, which reads the shard's inputs from the store and calls its stage. No step opens the
lineage database: it is an index built from these files (`Lineage.refresh`).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Callable

import dagster as dg
import pandas as pd

from synground_assets import code_version
from synground_assets.assets.provenance import Provenance
from synground_assets.config.recipes import Recipe, recipe_book
from synground_assets.ops.run_health import RunNotStartedError, ensure_run_is_started
from synground_assets.ops.scale import profile
from synground_assets.partitions import shard_partitions, split_shard_key
from synground_assets.pipeline.result import StageResult
from synground_assets.pipeline.writing import PngWriter
from synground_assets.resources import StoreResource
from synground_assets.resources.lineage import write_shard_lineage
from synground_assets.resources.store import ShardStore, write_table
from synground_assets.roles.base import AdapterInfo

# (recipe, shard, store, files) -> what to publish; `files` writes images into the staging folder
# in the background (pipeline/writing.py), for a stage that streams them out as it goes.
ShardRunner = Callable[[Recipe, str, ShardStore, PngWriter], StageResult]


def generation_asset(**kwargs):
    """`dg.asset` with what every generation stage shares: recipe x shard partitions, a range of
    shards per run (so models load once; how many, the profile says) and the `generation` group.
    No pool: GPU work is limited per run by the recipe's `synground/device` tag (ops/scale/run_tags.py),
    since a pool would also hold back the runs of CPU-only recipes."""
    return dg.asset(
        partitions_def=shard_partitions,
        backfill_policy=profile.backfill_policy(),
        code_version="1",
        group_name="generation",
        **kwargs,
    )


def lineage_columns(provenance: Provenance, recipe: str, shard: str, info: AdapterInfo) -> dict:
    return {
        "recipe": recipe,
        "shard": shard,
        "partition_key": f"{recipe}|{shard}",
        **provenance.columns(),
        "adapter": info.adapter,
        "model_id": info.model_id,
        "revision": info.revision or "",
        "settings": json.dumps(info.settings, sort_keys=True, default=str),
    }


def materialize_shards(
    context: dg.AssetExecutionContext, store: StoreResource, asset: str, run_shard: ShardRunner,
) -> list[StageResult]:
    """Run one stage over every shard of this run (one, or a range in a single-run backfill)."""
    shard_store = store.store()
    provenance = Provenance.of(context)
    results = []
    keys = context.partition_keys
    if not keys:
        raise no_shards_failure(context)
    for number, key in enumerate(keys, start=1):
        recipe_name, shard = split_shard_key(key)
        recipe = recipe_book().get(recipe_name)
        try:
            with shard_store.writing(recipe_name, asset, shard, run_id=context.run_id,
                                     before_publish=lambda: ensure_run_is_started(context.instance, context.run_id)
                                     ) as folder:
                with PngWriter(folder) as files:
                    result = run_shard(recipe, shard, shard_store, files)
                    write_result(folder, result, files)
                common = lineage_columns(provenance, recipe_name, shard, result.info)
                skipped = pd.DataFrame(result.skipped, columns=["item_id", "reason"]).assign(stage=asset)
                write_shard_lineage(folder, {**result.lineage, "skipped_items": skipped}, common)
        except RunNotStartedError as exc:
            raise not_started_failure(asset, key, exc) from exc
        if result.skipped:
            context.log.warning(skipped_message(asset, key, result.skipped))
        context.log.info(f"{asset}: shard {number}/{len(keys)} ({recipe_name}|{shard}) published: {result.counts}")
        results.append(result)
    return results


SKIPS_LOGGED = 5  # items named in a shard's warning; all of them are in the lineage


def skipped_message(asset: str, key: str, skipped: list[tuple[str, str]]) -> str:
    """One warning per shard, not one per item: every log line is an event in the instance's
    storage (a database insert on the scale profile), and a weak model can skip a tenth of a
    million items. The first few are named; the lineage's `skipped_items` table has all."""
    named = "; ".join(f"{item}: {reason}" for item, reason in skipped[:SKIPS_LOGGED])
    more = f"; and {len(skipped) - SKIPS_LOGGED} more" if len(skipped) > SKIPS_LOGGED else ""
    return (f"{asset} {key}: skipped {len(skipped)} item(s): {named}{more} (all of them, with their reasons, in "
            f"the lineage index: SELECT * FROM skipped_items WHERE partition_key = '{key}' AND stage = '{asset}')")


def write_result(folder: Path, result: StageResult, files: PngWriter) -> None:
    """The stage's tables and the images it returned (not streamed out) into the staging folder."""
    for file, image in result.images.items():
        files.put(file, image)
    for name, frame in result.tables.items():
        write_table(folder, frame, name)


def not_started_failure(asset: str, key: str, exc: RunNotStartedError) -> dg.Failure:
    """The run was failed (and retried) while this process was frozen or cut off: the shard it made
    is dropped, the retry's is the one of record. Not retried: the retry exists already."""
    return dg.Failure(f"{asset} {key}: not published: {exc}", allow_retries=False,
                      metadata={"refused_publish": dg.MetadataValue.text(key)})


def no_shards_failure(context: dg.AssetExecutionContext) -> dg.Failure:
    """A reversed range ('shapes|00003...shapes|00001') selects nothing: say so before any work."""
    tags = context.run.tags
    asked = f"{tags.get('dagster/asset_partition_range_start')}...{tags.get('dagster/asset_partition_range_end')}"
    return dg.Failure(
        f"the partition range {asked} selects no shard (its start comes after its end); nothing was "
        "written. Give the first shard first, e.g. --partition-range 'shapes|00001...shapes|00003'",
        allow_retries=False,
    )


def summary_metadata(outputs: list[StageResult]) -> dict:
    """Counts summed over the run's shards, plus who made them."""
    totals: dict[str, int] = {}
    for output in outputs:
        for name, value in output.counts.items():
            totals[name] = totals.get(name, 0) + value
    info = outputs[0].info
    return {
        **{name: dg.MetadataValue.int(value) for name, value in totals.items()},
        "skipped": dg.MetadataValue.int(sum(len(o.skipped) for o in outputs)),
        "shards": dg.MetadataValue.int(len(outputs)),
        "adapter": info.adapter,
        "model_id": info.model_id,
        "revision": info.revision or "",
        "code_version": code_version(),
        **worker_metadata(),
    }


def worker_metadata() -> dict:
    """Which process made the shards, and on which GPU(s): with many workers, where to look."""
    return {
        "worker_host": socket.gethostname(),
        "worker_pid": dg.MetadataValue.int(os.getpid()),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }
