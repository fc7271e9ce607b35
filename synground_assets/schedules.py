"""The scheduled backfill: each tick requests the shards of the scheduled recipes whose boxes are missing.

Configured by the recipe book's `schedule:` section (synground_assets/recipes.yaml):

    schedule:
      cron: "0 2 * * *"     # when ticks fire: a standard five-field cron expression
      timezone: UTC         # the time zone of the cron expression
      recipes: [shapes]     # the recipes to fill, each up to its `num_shards`
      shards_per_tick: 8    # at most this many shards per recipe per tick
      running: false        # on as soon as the code location loads (else switch it on in the UI)

A tick requests one run per missing shard (partition `<recipe>|<shard>`, every generation asset),
so a failing shard fails alone: its `boxes` stay missing and the next tick requests it again. A
shard whose run is still queued or in progress is not requested twice. The run key names the
shard and the tick, so a tick the daemon evaluates again launches nothing twice. The daemon
evaluates schedules: `dagster dev` runs it next to the UI (`dagster-daemon run` in a deployment).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dagster as dg

from synground_assets.partitions import shard_partitions
from synground_assets.recipes import RecipeBook, RecipeError, _Fields, recipe_book, shard_key

GENERATION_GROUP = "generation"
BOXES = dg.AssetKey("boxes")
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"

generation_job = dg.define_asset_job(
    "generation",
    selection=dg.AssetSelection.groups(GENERATION_GROUP),
    description="Every generation asset (concepts -> boxes) over the chosen recipe x shard partitions.",
)


@dataclass(frozen=True)
class ScheduleSettings:
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    recipes: tuple[str, ...] = ()
    shards_per_tick: int = 8
    running: bool = False


def schedule_settings(book: RecipeBook) -> ScheduleSettings:
    """Read and check the book's `schedule:` section; an error names the file, field and fix."""
    fields = _Fields(book.path, "schedule", book.schedule)
    default = ScheduleSettings()
    recipes = fields.data.pop("recipes", [])
    if not isinstance(recipes, list) or not all(isinstance(name, str) for name in recipes):
        fields.data["recipes"] = recipes
        raise fields.fail("recipes", "a list of recipe names, e.g. [shapes]")
    unknown = [name for name in recipes if name not in book.recipes]
    if unknown:
        raise RecipeError(
            f"{book.path}: schedule, field 'recipes': no recipe named {', '.join(map(repr, unknown))}; "
            f"known recipes: {', '.join(sorted(book.recipes))}"
        )
    settings = ScheduleSettings(
        cron=fields.string("cron", default.cron),
        timezone=fields.string("timezone", default.timezone),
        recipes=tuple(dict.fromkeys(recipes)),
        shards_per_tick=fields.integer("shards_per_tick", default.shards_per_tick),
        running=fields.boolean("running", default.running),
    )
    fields.done()
    return settings


def missing_shards(book: RecipeBook, recipe: str, done: set[str], limit: int) -> list[str]:
    """The first `limit` partition keys of the recipe's dataset (shards 0..num_shards-1) not in `done`."""
    keys = [f"{recipe}|{shard_key(i)}" for i in range(book.get(recipe).num_shards)]
    return [key for key in keys if key not in done][:limit]


def in_flight_partitions(instance: dg.DagsterInstance) -> set[str]:
    """Partition keys that a queued or running run (of any job, a range run included) will write."""
    keys: set[str] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        if "dagster/partition" in run.tags:
            keys.add(run.tags["dagster/partition"])
        elif RANGE_START in run.tags and RANGE_END in run.tags:
            span = dg.PartitionKeyRange(run.tags[RANGE_START], run.tags[RANGE_END])
            keys.update(shard_partitions.get_partition_keys_in_range(span))
    return keys


def build_missing_shards_schedule(book: RecipeBook) -> dg.ScheduleDefinition:
    settings = schedule_settings(book)
    status = dg.DefaultScheduleStatus.RUNNING if settings.running else dg.DefaultScheduleStatus.STOPPED
    try:
        @dg.schedule(
            name="missing_shards",
            cron_schedule=settings.cron,
            execution_timezone=settings.timezone,
            job=generation_job,
            default_status=status,
            description=(
                f"Materializes the shards of {', '.join(settings.recipes) or 'no recipe'} whose boxes are "
                f"missing, up to {settings.shards_per_tick} per recipe per tick (recipe book: {book.path})."
            ),
        )
        def missing_shards_schedule(context: dg.ScheduleEvaluationContext):
            if not settings.recipes:
                return dg.SkipReason(f"no recipe is scheduled: list some under schedule: recipes: in {book.path}")
            done = context.instance.get_materialized_partitions(BOXES) | in_flight_partitions(context.instance)
            tick = _tick_time(context).isoformat()
            requests = [
                dg.RunRequest(run_key=f"{key}@{tick}", partition_key=key, tags={"synground/scheduled": "missing_shards"})
                for recipe in settings.recipes
                for key in missing_shards(book, recipe, done, settings.shards_per_tick)
            ]
            if not requests:
                return dg.SkipReason(f"every shard of {', '.join(settings.recipes)} has boxes or is being made")
            context.log.info(f"requesting {len(requests)} shard(s): {', '.join(r.partition_key for r in requests)}")
            return requests
    except dg.DagsterInvalidDefinitionError as exc:
        raise RecipeError(f"{book.path}: schedule: {exc}") from exc
    return missing_shards_schedule


def _tick_time(context: dg.ScheduleEvaluationContext) -> datetime:
    return context.scheduled_execution_time or datetime.now()


missing_shards_schedule = build_missing_shards_schedule(recipe_book())
