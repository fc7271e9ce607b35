"""The scheduled backfill: each tick requests the shards of the scheduled recipes whose boxes are missing.

Configured by the recipe book's `schedule:` section (synground_assets/config/recipes.yaml):

    schedule:
      cron: "0 2 * * *"     # when ticks fire: a standard five-field cron expression
      timezone: UTC         # the time zone of the cron expression
      recipes: [shapes]     # the recipes to fill, each up to its `num_shards`
      shards_per_tick: 8    # at most this many shards per recipe per tick
      running: false        # on as soon as the code location loads (else switch it on in the UI)

A tick requests runs of up to K consecutive missing shards each (K: `SYNGROUND_SHARDS_PER_RUN`,
default 8; one run loads each model once for its shards), so a failing run fails alone: its
`boxes` stay missing and the next tick requests them again. A shard whose run is queued or in
progress is not requested twice; a run `run_health` judges dead (the run launcher's health check,
or on a local instance the run's process ids) no longer counts as in progress, so its shards are
requested again even before run monitoring marks it failed. The run key names the shards and the tick, so a
tick the daemon evaluates again launches nothing twice. The daemon evaluates schedules: `dagster
dev` runs it next to the UI (`dagster-daemon run` in a deployment).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import dagster as dg

from synground_assets.config.recipes import RecipeBook, RecipeError, _Fields, recipe_book, shard_key
from synground_assets.ops.run_health import Health, judge_run
from synground_assets.ops.scale.profile import shards_per_run
from synground_assets.partitions import shard_partitions

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


def runs_of(keys: list[str], per_run: int) -> list[list[str]]:
    """Missing keys cut into runs of at most `per_run` keys, each a range of consecutive shards."""
    runs: list[list[str]] = []
    for key in keys:
        last = runs[-1] if runs else None
        if last and len(last) < per_run and _follows(last[-1], key):
            last.append(key)
        else:
            runs.append([key])
    return runs


def _follows(key: str, next_key: str) -> bool:
    recipe, shard = key.split("|")
    next_recipe, next_shard = next_key.split("|")
    return recipe == next_recipe and int(next_shard) == int(shard) + 1


def run_request(keys: list[str], tick: str) -> dg.RunRequest:
    tags = {"synground/scheduled": "missing_shards"}
    if len(keys) == 1:
        return dg.RunRequest(run_key=f"{keys[0]}@{tick}", partition_key=keys[0], tags=tags)
    return dg.RunRequest(run_key=f"{keys[0]}...{keys[-1]}@{tick}",
                         tags={**tags, RANGE_START: keys[0], RANGE_END: keys[-1]})


def in_flight_partitions(instance: dg.DagsterInstance) -> set[str]:
    """Partition keys that a queued or running run (of any job, a range run included) will write; a
    run `run_health` judges dead does not count."""
    keys: set[str] = set()
    now = time.time()
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        run = record.dagster_run
        if judge_run(instance, record, now).health == Health.DEAD:
            continue
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
            runs = [keys for recipe in settings.recipes
                    for keys in runs_of(missing_shards(book, recipe, done, settings.shards_per_tick), shards_per_run())]
            if not runs:
                return dg.SkipReason(f"every shard of {', '.join(settings.recipes)} has boxes or is being made")
            context.log.info(f"requesting {sum(map(len, runs))} shard(s) in {len(runs)} run(s): "
                             + ", ".join(keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}" for keys in runs))
            return [run_request(keys, tick) for keys in runs]
    except dg.DagsterInvalidDefinitionError as exc:
        raise RecipeError(f"{book.path}: schedule: {exc}") from exc
    return missing_shards_schedule


def _tick_time(context: dg.ScheduleEvaluationContext) -> datetime:
    return context.scheduled_execution_time or datetime.now()


missing_shards_schedule = build_missing_shards_schedule(recipe_book())
