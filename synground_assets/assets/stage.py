"""What every generation asset does around its core step, written once.

For each shard of the run: write the shard through the store's atomic publish, record its lineage
rows and its skipped items, log progress. A stage supplies only `write_shard`, which reads its
inputs, calls its role and writes files into the folder it is given.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import dagster as dg
import pandas as pd

from synground_assets import code_version
from synground_assets.partitions import shard_partitions, split_shard_key
from synground_assets.recipes import Recipe, recipe_book
from synground_assets.resources import LineageResource, StoreResource
from synground_assets.resources.store import ShardStore
from synground_assets.roles.base import AdapterInfo

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ShardOutput:
    """What one shard's write produced: lineage rows per table, skipped items, numbers, previews."""

    lineage: dict[str, pd.DataFrame]
    info: AdapterInfo
    counts: dict[str, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item_id, reason)
    preview: list = field(default_factory=list)  # stage-specific preview material


# Lineage tables that several stages write (the quality filters' records): a stage replaces its own rows only.
STAGED_TABLES = ("removals", "shard_quality")

ShardWriter = Callable[[Recipe, str, ShardStore, Path], ShardOutput]


def generation_asset(*, gpu: bool = True, **kwargs):
    """`dg.asset` with what every generation stage shares: recipe x shard partitions, a range of
    shards in one run (so models load once), the `generation` group and, for model stages, a slot
    of the `gpu` pool."""
    return dg.asset(
        partitions_def=shard_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        code_version="1",
        group_name="generation",
        pool="gpu" if gpu else None,
        **kwargs,
    )


class Progress:
    """Items done / total, items/s and ETA, logged at most every `every_s` seconds."""

    def __init__(self, log, what: str, total: int, every_s: float = 10.0):
        self.log, self.what, self.total, self.every_s = log, what, total, every_s
        self.done = 0
        self.start = self.last = time.monotonic()

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else float("inf")
            self.log.info(f"{self.what}: {self.done}/{self.total} items, {rate:.1f} items/s, ETA {eta:.0f} s")


def run_batched(
    items: Sequence[T], batch_size: int, call: Callable[[Sequence[T]], list[R]], item_id: Callable[[T], str],
    progress: Progress | None = None,
) -> tuple[list[R | None], list[tuple[str, str]]]:
    """Call a role on batches; a failing batch is retried item by item so one bad item is skipped
    (with its reason) instead of failing the shard. Returns results aligned with items (None where
    skipped) and the skipped (item_id, reason) pairs."""
    results: list[R | None] = []
    skipped: list[tuple[str, str]] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        try:
            outputs = call(batch)
            if len(outputs) != len(batch):
                raise RuntimeError(f"the role returned {len(outputs)} results for {len(batch)} items")
            results.extend(outputs)
        except Exception:  # noqa: BLE001 - isolate the bad items below
            for item in batch:
                try:
                    results.append(call([item])[0])
                except Exception as exc:  # noqa: BLE001 - recorded, not dropped
                    results.append(None)
                    skipped.append((item_id(item), f"{type(exc).__name__}: {exc}"))
        if progress:
            progress.advance(len(batch))
    return results, skipped


def lineage_columns(context: dg.AssetExecutionContext, recipe: str, shard: str, info: AdapterInfo) -> dict:
    return {
        "recipe": recipe,
        "shard": shard,
        "partition_key": f"{recipe}|{shard}",
        "run_id": context.run_id,
        "code_version": code_version(),
        "materialized_at": datetime.now(timezone.utc).replace(tzinfo=None),
        "adapter": info.adapter,
        "model_id": info.model_id,
        "revision": info.revision or "",
        "settings": json.dumps(info.settings, sort_keys=True, default=str),
    }


def materialize_shards(
    context: dg.AssetExecutionContext, store: StoreResource, lineage: LineageResource, asset: str,
    write_shard: ShardWriter,
) -> list[ShardOutput]:
    """Run one stage over every shard of this run (one, or a range in a single-run backfill)."""
    shard_store, lineage_db = store.store(), lineage.lineage()
    outputs = []
    keys = context.partition_keys
    for number, key in enumerate(keys, start=1):
        recipe_name, shard = split_shard_key(key)
        recipe = recipe_book().get(recipe_name)
        with shard_store.writing(recipe_name, asset, shard) as folder:
            output = write_shard(recipe, shard, shard_store, folder)
        common = lineage_columns(context, recipe_name, shard, output.info)
        where = {"recipe": recipe_name, "shard": shard}
        skipped = pd.DataFrame(output.skipped, columns=["item_id", "reason"]).assign(stage=asset, **common)
        lineage_db.replace_many([(table, rows.assign(**common), {**where, "stage": asset} if table in STAGED_TABLES else where)
                                 for table, rows in output.lineage.items()]
                                + [("skipped_items", skipped, {**where, "stage": asset})])
        for item, reason in output.skipped:
            context.log.warning(f"{asset} {recipe_name}|{shard}: skipped {item}: {reason}")
        context.log.info(f"{asset}: shard {number}/{len(keys)} ({recipe_name}|{shard}) published: {output.counts}")
        outputs.append(output)
    return outputs


def summary_metadata(outputs: list[ShardOutput]) -> dict:
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
    }
