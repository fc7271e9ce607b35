"""Run tags set from the recipe, so the run queue can limit GPU work and route runs to workers.

Dagster pools are fixed per asset, so a `gpu` pool on the generation assets also held back the runs
of CPU-only recipes such as `shapes`. Instead, each run submitted to the queue gets:

- `synground/device`: `gpu` when a recipe of the run needs a GPU (`needs_gpu: true`, or a role with
  `device: cuda`), else `cpu`. The queued run coordinator's tag concurrency limit on
  `synground/device: gpu` caps GPU runs; CPU runs are only bound by `max_concurrent_runs`.
- `dagster-celery/queue` (when `celery_queues` is configured): the Celery queue for that device,
  so GPU runs go to the workers that own a GPU and CPU runs to CPU workers.

A tag the user set on the run (or its backfill) is kept. `dagster asset materialize` executes in
the shell that calls it, without the queue, so these limits apply to runs launched from the UI,
schedules, backfills and `python -m synground_assets.ops.scale.backfill`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dagster import Field, Permissive

from synground_assets.config.recipes import Recipe, RecipeBook, RecipeError, recipe_book
from synground_assets.ops.dagster_internals import QueuedRunCoordinator, SubmitRunContext

DEVICE_TAG = "synground/device"
CELERY_QUEUE_TAG = "dagster-celery/queue"
PARTITION_TAG = "dagster/partition"
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")

log = logging.getLogger(__name__)


def recipe_device(recipe: Recipe) -> str:
    """`gpu` or `cpu`: what a generation run of this recipe needs."""
    uses_cuda = any(spec.device == "cuda" for spec in recipe.roles.values())
    return "gpu" if recipe.needs_gpu or uses_cuda else "cpu"


def recipes_of_run(tags: Mapping[str, str], book: RecipeBook) -> list[str]:
    """The recipes whose partitions a run writes, read from Dagster's partition tags.

    A key names its recipe in one of its `|`-separated parts (`shapes|00003`, the checkpoint's
    `shapes`, the scores' `shapes_test|shapes`). Keys are ordered by recipe first, so a range
    covers every recipe between the recipes of its two ends."""
    def named(key: str) -> list[str]:
        return [part for part in key.split("|") if part in book.recipes]

    if PARTITION_TAG in tags:
        return named(tags[PARTITION_TAG])
    if all(tag in tags for tag in RANGE_TAGS):
        ends = [recipe for tag in RANGE_TAGS for recipe in named(tags[tag])]
        if ends:
            return [name for name in sorted(book.recipes) if min(ends) <= name <= max(ends)]
    return []


def recipe_run_tags(tags: Mapping[str, str], book: RecipeBook, celery_queues: Mapping[str, str]) -> dict[str, str]:
    """The tags to add to a run with these tags (none for a run that names no recipe)."""
    recipes = recipes_of_run(tags, book)
    if not recipes:
        return {}
    device = tags.get(DEVICE_TAG) or ("gpu" if any(recipe_device(book.get(r)) == "gpu" for r in recipes) else "cpu")
    added = {DEVICE_TAG: device}
    if device in celery_queues and CELERY_QUEUE_TAG not in tags:
        added[CELERY_QUEUE_TAG] = celery_queues[device]
    return {key: value for key, value in added.items() if tags.get(key) != value}


class RecipeRunCoordinator(QueuedRunCoordinator):
    """Dagster's queued run coordinator, adding the recipe's device (and Celery queue) tags to each
    run as it is queued, before the queue's tag concurrency limits look at it.

    Configured in dagster.yaml like the queued coordinator, plus `celery_queues: {gpu: Q, cpu: Q}`."""

    def __init__(self, celery_queues: Mapping[str, str] | None = None, **kwargs: Any):
        self.celery_queues = dict(celery_queues or {})
        super().__init__(**kwargs)

    @classmethod
    def config_type(cls):
        return {
            **QueuedRunCoordinator.config_type(),
            "celery_queues": Field(Permissive(), is_required=False,
                                   description="Celery queue per device, e.g. {gpu: gpu, cpu: cpu}."),
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value: Mapping[str, Any]):
        coordinator = super().from_config_value(inst_data, config_value)
        coordinator.celery_queues = dict(config_value.get("celery_queues") or {})
        return coordinator

    def submit_run(self, context: SubmitRunContext):
        run = context.dagster_run
        try:
            tags = recipe_run_tags(run.tags, recipe_book(), self.celery_queues)
        except RecipeError as exc:  # a run of a recipe no longer in the book: queue it untagged
            log.warning(f"run {run.run_id}: no device tag: {exc}")
            tags = {}
        if tags:
            self._instance.add_run_tags(run.run_id, tags)
            run = self._instance.get_run_by_id(run.run_id) or run
        return super().submit_run(SubmitRunContext(run, context.workspace))
