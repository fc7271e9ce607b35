"""The `dead_runs` sensor: runs whose process died are marked failed and their pool slots freed.

A `dagster asset materialize` killed with SIGKILL (or by the OOM killer, or a reboot) cannot report
its end: its run stays STARTED and keeps its `gpu` pool slot, so every later GPU step waits
forever. Dagster's run monitoring cannot see this with the default run launcher (it has no worker
health check). With the daemon running, this sensor applies `run_health`'s rules every minute;
without one, `python -m synground_assets.ops.cli cleanup` does the same.
"""

from __future__ import annotations

import dagster as dg

from synground_assets.ops.run_health import clean_up_dead_runs


@dg.sensor(name="dead_runs", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Marks runs whose process died (killed, crashed) as failed and frees their pool slots.")
def dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    dead = clean_up_dead_runs(context.instance)
    for run in dead:
        context.log.warning(f"run {run.run_id} ({run.job_name}) marked failed: {run.reason}")
    return dg.SkipReason(f"marked {len(dead)} dead run(s) failed: {', '.join(r.run_id for r in dead)}" if dead
                         else "no dead run")
