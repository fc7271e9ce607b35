"""The `lost_retries` sensor (relaunch.py) on a real instance: which failed runs it relaunches, with
what, and that it never relaunches one twice. The full fault (a frozen code server while a worker
dies) is in scale/test_services.py."""

import sys

import dagster as dg
import pytest

from synground_assets.ops.dagster_internals import AUTO_RETRY_RUN_ID_TAG, WILL_RETRY_TAG
from synground_assets.relaunch import (
    FAILED_TO_RETRY,
    MAX_RELAUNCHES_TAG,
    RELAUNCH_NUMBER,
    RELAUNCH_OF,
    RELAUNCH_REASON,
    RELAUNCH_STATE,
    find_lost_retries,
    lost_retries_sensor,
    relaunch_requests,
)


@dg.asset
def first() -> int:
    return 1


@dg.asset
def second(first: int) -> int:
    raise RuntimeError("the worker was lost")


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def failed_run(instance, tags: dict | None = None, retry_failed: bool = True) -> dg.DagsterRun:
    """A run whose `first` step succeeded and `second` failed, which the daemon then tried to retry
    and could not (as `consume_new_runs_for_automatic_reexecution` records it)."""
    result = dg.materialize([first, second], instance=instance, tags={"team": "vision", **(tags or {})},
                            raise_on_error=False)
    run = instance.get_run_by_id(result.run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    if retry_failed:
        from dagster._core.events import EngineEventData
        from dagster._utils.error import serializable_error_info_from_exc_info

        try:
            raise TimeoutError("DEADLINE_EXCEEDED: the code server did not answer within 60 s")
        except TimeoutError:
            error = serializable_error_info_from_exc_info(sys.exc_info())
        instance.report_engine_event(FAILED_TO_RETRY, run, engine_event_data=EngineEventData(error=error))
        instance.add_run_tags(run.run_id, {WILL_RETRY_TAG: "false"})
    return instance.get_run_by_id(run.run_id)


def test_a_run_whose_retry_could_not_be_launched_is_relaunched_from_its_failure_once(instance):
    run = failed_run(instance)
    context = dg.build_sensor_context(instance=instance)
    assert lost_retries_sensor(context).skip_message == "no lost retry"  # the sensor relaunches generation runs
    [request] = relaunch_requests(instance, context.log)

    assert request.run_key == f"relaunch:{run.run_id}"
    assert request.asset_selection == [dg.AssetKey("second")]  # `first` succeeded: not redone
    assert request.tags[RELAUNCH_OF] == run.run_id and request.tags[RELAUNCH_NUMBER] == "1"
    assert request.tags["team"] == "vision" and not any(key.startswith("dagster/") for key in request.tags)
    assert "could not be launched (TimeoutError: DEADLINE_EXCEEDED" in request.tags[RELAUNCH_REASON]
    run = instance.get_run_by_id(run.run_id)
    assert run.tags[RELAUNCH_STATE] == "requested"
    messages = [r.event_log_entry.dagster_event.message for r in instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records]
    assert any(message.startswith("Relaunched by the lost_retries sensor (1/2)") for message in messages)

    # The relaunch exists (as the sensor daemon creates it): never a second one.
    instance.create_run_for_job(dg.define_asset_job("relaunch", [first, second]).resolve(
        asset_graph=dg.Definitions(assets=[first, second]).resolve_asset_graph()), tags=request.tags)
    assert find_lost_retries(instance) == ([], [])
    assert relaunch_requests(instance, context.log).skip_message == "no lost retry"


def test_runs_dagster_does_not_retry_by_design_or_retried_are_left_alone(instance):
    failed_run(instance, retry_failed=False)  # out of retries, or not to be retried: not a lost retry
    retried = failed_run(instance)
    instance.add_run_tags(retried.run_id, {AUTO_RETRY_RUN_ID_TAG: failed_run(instance, retry_failed=False).run_id})
    assert find_lost_retries(instance) == ([], [])


def test_a_relaunch_chain_stops_at_its_budget(instance):
    second_relaunch = failed_run(instance, {RELAUNCH_NUMBER: "2", MAX_RELAUNCHES_TAG: "2"})
    assert find_lost_retries(instance) == ([], [second_relaunch.run_id])
    first_relaunch = failed_run(instance, {RELAUNCH_NUMBER: "1", MAX_RELAUNCHES_TAG: "2"})
    [lost], _ = find_lost_retries(instance)
    assert lost.run_id == first_relaunch.run_id and lost.number == 2
