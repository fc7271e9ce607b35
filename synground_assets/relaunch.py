"""The `lost_retries` sensor: a failed generation run whose automatic retry could not be launched is
launched again, once the code location answers.

Dagster's run retries (`run_retries` in dagster.yaml) are launched by the daemon, which asks the
code server for the retry's execution plan. When the code server does not answer in time (busy,
restarting, frozen), the daemon logs "Failed to retry run", tags the run `dagster/will_retry=false`
and never tries again (dagster/_daemon/auto_run_reexecution/auto_run_reexecution.py,
`consume_new_runs_for_automatic_reexecution`): a lost worker then leaves a hole, not a retry. This
sensor runs in the code server, so it is evaluated only when the code location answers; it picks
exactly those runs (FAILURE, `dagster/will_retry=false`, the daemon's "Failed to retry run" event,
no launched retry in `dagster/auto_retry_run_id`) and requests the steps that did not succeed,
as Dagster's own retry (`FROM_FAILURE`) would.

- Budget: a run is relaunched at most `synground/max_relaunches` times along its chain of
  relaunches (run tag; default `$SYNGROUND_MAX_RELAUNCHES`, else 2). Dagster's own `max_retries`
  still applies to each relaunched run.
- Record: the new run is tagged `synground/relaunch_of` (the failed run), `synground/relaunch_number`
  and `synground/relaunch_reason`; the failed run gets `synground/relaunch=requested` and an engine
  event saying why.
- Idempotent: one run key per failed run (`relaunch:<run id>`: the sensor daemon launches a run key
  once), and a failed run that already has a run tagged `synground/relaunch_of` with its id is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from synground_assets.config import settings
from synground_assets.ops.dagster_internals import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    AUTO_RETRY_RUN_ID_TAG,
    BACKFILL_ID_TAG,
    MAX_RETRIES_TAG,
    PARTITION_NAME_TAG,
    WILL_RETRY_TAG,
)
from synground_assets.ops.scale.backfill import GENERATION_ASSETS

FAILED_TO_RETRY = "Failed to retry run"  # the daemon's engine event, auto_run_reexecution.py
RELAUNCH_OF, RELAUNCH_NUMBER = "synground/relaunch_of", "synground/relaunch_number"
RELAUNCH_REASON, RELAUNCH_STATE = "synground/relaunch_reason", "synground/relaunch"
MAX_RELAUNCHES_TAG = "synground/max_relaunches"
DEFAULT_MAX_RELAUNCHES = 2
LOOKBACK_S = 24 * 3600  # failed runs older than this are left to the missing_shards schedule
# Tags a relaunch keeps: what the run computes, and the budgets; not who ran it or Dagster's bookkeeping.
KEPT_SYSTEM_TAGS = (PARTITION_NAME_TAG, ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG, MAX_RETRIES_TAG)
DROPPED_PREFIXES = ("dagster/", "dagster-celery/", "synground/worker", "synground/relaunch", ".dagster/")


@dataclass(frozen=True)
class LostRetry:
    run_id: str
    job_name: str
    reason: str
    number: int  # this relaunch's number along the chain (1 for the first)
    budget: int
    asset_keys: tuple[dg.AssetKey, ...]  # the assets of the steps that did not succeed
    tags: dict[str, str]

    @property
    def run_key(self) -> str:
        return f"relaunch:{self.run_id}"

    def run_request(self) -> dg.RunRequest:
        tags = {key: value for key, value in self.tags.items() if key != PARTITION_NAME_TAG}
        return dg.RunRequest(run_key=self.run_key, asset_selection=list(self.asset_keys),
                             partition_key=self.tags.get(PARTITION_NAME_TAG), tags={
                                 **tags, RELAUNCH_OF: self.run_id, RELAUNCH_NUMBER: str(self.number),
                                 MAX_RELAUNCHES_TAG: str(self.budget), RELAUNCH_REASON: self.reason[:1000]})


def default_budget() -> int:
    value = settings.max_relaunches() or str(DEFAULT_MAX_RELAUNCHES)
    if not value.isdigit():
        raise ValueError(f"SYNGROUND_MAX_RELAUNCHES={value!r}: expected an integer >= 0, e.g. 2")
    return int(value)


def retry_launch_failure(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The daemon's "Failed to retry run" event of this run, as text (its error's first line), if any."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    for record in reversed(records):
        event = record.event_log_entry.dagster_event
        if event is not None and event.message == FAILED_TO_RETRY:
            error = event.engine_event_data.error
            detail = error.message.strip().splitlines()[0] if error and error.message.strip() else "no detail"
            return f"Dagster's automatic retry could not be launched ({detail})"
    return None


def retry_was_launched(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether Dagster created a retry that was submitted (one never submitted is as good as none)."""
    retry_id = run.tags.get(AUTO_RETRY_RUN_ID_TAG)
    retry = instance.get_run_by_id(retry_id) if retry_id else None
    return retry is not None and retry.status != dg.DagsterRunStatus.NOT_STARTED


def unfinished_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[dg.AssetKey, ...]:
    """The assets of the run's steps that did not succeed (Dagster's FROM_FAILURE)."""
    succeeded = {record.event_log_entry.step_key for record in instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records}
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    keys = {output.properties.asset_key for step in plan.steps if step.key not in succeeded
            for output in step.outputs if output.properties is not None and output.properties.asset_key}
    return tuple(sorted(keys, key=lambda key: key.to_user_string()))


def kept_tags(run: dg.DagsterRun) -> dict[str, str]:
    return {key: value for key, value in run.tags.items()
            if key in KEPT_SYSTEM_TAGS or not key.startswith(DROPPED_PREFIXES)}


def backfill_over(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """A run of a canceled backfill is not relaunched (Dagster would not retry it either)."""
    backfill_id = run.tags.get(BACKFILL_ID_TAG)
    backfill = instance.get_backfill(backfill_id) if backfill_id else None
    return backfill is not None and backfill.status.value in ("CANCELED", "CANCELING")


def find_lost_retries(instance: dg.DagsterInstance, relaunchable: frozenset[dg.AssetKey] | None = None,
                      now: float | None = None) -> tuple[list[LostRetry], list[str]]:
    """Failed runs whose automatic retry could not be launched and that are to be relaunched (their
    unfinished assets all in `relaunchable`, None: any), and the ids of those left alone because
    their budget is spent."""
    import time

    now = time.time() if now is None else now
    lost, spent = [], []
    filters = dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], tags={WILL_RETRY_TAG: "false"},
                            updated_after=_utc(now - LOOKBACK_S))
    for run in instance.get_runs(filters=filters):
        if retry_was_launched(instance, run) or backfill_over(instance, run):
            continue
        reason = retry_launch_failure(instance, run.run_id)
        if reason is None:  # not retried by design: out of retries, or a step failure not to retry
            continue
        if instance.get_runs(filters=dg.RunsFilter(tags={RELAUNCH_OF: run.run_id}), limit=1):
            continue  # relaunched already
        number = int(run.tags.get(RELAUNCH_NUMBER) or 0) + 1
        budget = int(run.tags.get(MAX_RELAUNCHES_TAG) or default_budget())
        if number > budget:
            spent.append(run.run_id)
            continue
        assets = unfinished_assets(instance, run)
        if assets and (relaunchable is None or set(assets) <= relaunchable):
            lost.append(LostRetry(run.run_id, run.job_name, reason, number, budget, assets, kept_tags(run)))
    return lost, spent


def _utc(epoch: float):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def record_relaunch(instance: dg.DagsterInstance, lost: LostRetry) -> None:
    """Say on the failed run why it is launched again (once: the tag marks it requested)."""
    run = instance.get_run_by_id(lost.run_id)
    if run is None or run.tags.get(RELAUNCH_STATE) == "requested":
        return
    instance.add_run_tags(lost.run_id, {RELAUNCH_STATE: "requested"})
    instance.report_engine_event(
        f"Relaunched by the lost_retries sensor ({lost.number}/{lost.budget}): {lost.reason}; the new run is "
        f"tagged {RELAUNCH_OF}={lost.run_id}", run)


def relaunch_interval_s() -> int:
    return int(settings.relaunch_interval_s() or 60)


def relaunch_requests(instance: dg.DagsterInstance, log, relaunchable: frozenset[dg.AssetKey] | None = None):
    """What the sensor returns: a run request per lost retry (recorded on its failed run), or why none."""
    lost, spent = find_lost_retries(instance, relaunchable)
    for run_id in spent:
        log.warning(f"run {run_id}: its retry could not be launched and its relaunch budget is spent")
    if not lost:
        return dg.SkipReason(f"no lost retry{f'; budget spent for {len(spent)} run(s)' if spent else ''}")
    for item in lost:
        record_relaunch(instance, item)
        log.warning(f"relaunching run {item.run_id} ({item.number}/{item.budget}): {item.reason}")
    return [item.run_request() for item in lost]


# The generation stages: runs of many shards on many workers, the ones a lost worker leaves failed.
# (One sensor cannot target every asset: its job would mix partitioned and unpartitioned assets.)
GENERATION = dg.AssetSelection.groups("generation")
GENERATION_KEYS = frozenset(dg.AssetKey(name) for name in GENERATION_ASSETS)


@dg.sensor(name="lost_retries", minimum_interval_seconds=relaunch_interval_s(), target=GENERATION,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Relaunches a failed generation run whose automatic retry could not be launched (code "
                       "location busy or restarting), once per failed run, within its synground/max_relaunches "
                       "budget.")
def lost_retries_sensor(context: dg.SensorEvaluationContext):
    return relaunch_requests(context.instance, context.log, GENERATION_KEYS)
