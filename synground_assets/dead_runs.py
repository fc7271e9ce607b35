"""Runs whose process died: find them, mark them failed and give their pool slots back.

A `dagster asset materialize` killed with SIGKILL (or by the OOM killer, or a reboot) cannot report
its end: its run stays STARTED and keeps its `gpu` pool slot, so every later GPU step waits
forever. Dagster's run monitoring cannot see this with the default run launcher (it has no worker
health check) and the command line has no daemon at all. So this module judges a run by the
processes Dagster recorded for it: the pid of its `RUN_START` event (the run's process) and of each
`STEP_START` event (step subprocesses). When none of them is alive any more (a pid reused by a
newer process does not count), the run is dead: it is marked failed through the instance
(`report_run_failed`, which the schedule and the UI then see) and its concurrency slots are freed.

Process ids are local: this judges runs that ran on this machine (the laptop profile: one
machine, one instance). A deployment whose runs execute elsewhere relies on its run launcher's
own worker health check (run monitoring in dagster.yaml).

Used by `python -m synground_assets.cli cleanup` and by the `dead_runs` sensor (daemon running).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

# Seconds a run may stay STARTING (launched, no process has reported yet) before it counts as dead;
# the same bound as `run_monitoring.start_timeout_seconds` in dagster.yaml.
START_TIMEOUT_S = 180
_PROCESS_EVENTS = {dg.DagsterEventType.RUN_START, dg.DagsterEventType.STEP_START}


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    job_name: str
    status: str
    reason: str


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def process_alive(pid: int, not_started_after: float) -> bool:
    """Whether `pid` is a live process that existed at `not_started_after` (epoch seconds): a
    zombie is dead, and a pid reused by a process started later is not the one we look for."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): the signal test is all we have
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": state is field 3
    if fields[0] in ("Z", "X"):
        return False
    boot = _boot_time()
    if boot is None:
        return True
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in clock ticks
    return started <= not_started_after + 1.0  # 1 s: the tick rounding of both clocks


def run_processes(instance: dg.DagsterInstance, run_id: str) -> list[tuple[int, float]]:
    """(pid, event time) of every process that reported the run's start or a step's start."""
    records = instance.get_records_for_run(run_id, of_type=_PROCESS_EVENTS).records
    return [(r.event_log_entry.dagster_event.pid, r.event_log_entry.timestamp) for r in records
            if r.event_log_entry.dagster_event is not None and r.event_log_entry.dagster_event.pid]


def why_dead(instance: dg.DagsterInstance, record: dg.RunRecord, now: float, start_timeout_s: float) -> str | None:
    """Why an in-progress run is dead, or None while it may still be alive."""
    processes = run_processes(instance, record.dagster_run.run_id)
    if not processes:  # launched, no process reported yet: wait from its last status change
        waited = now - record.update_timestamp.timestamp()
        return f"no process reported its start within {start_timeout_s:.0f} s" if waited > start_timeout_s else None
    if any(process_alive(pid, at) for pid, at in processes):
        return None
    pids = ", ".join(sorted({str(pid) for pid, _ in processes}))
    return f"its process(es) (pid {pids}) on this machine are gone; it was killed or crashed without reporting"


def is_local_instance(instance: dg.DagsterInstance) -> bool:
    """SQLite run storage: the laptop profile, whose runs all run on this machine. A shared instance
    (PostgreSQL) holds runs of other machines, whose pids mean nothing here."""
    from synground_assets.dagster_internals import InMemoryRunStorage, SqliteRunStorage

    return isinstance(instance.run_storage, (SqliteRunStorage, InMemoryRunStorage))


def find_dead_runs(instance: dg.DagsterInstance, start_timeout_s: float = START_TIMEOUT_S) -> list[DeadRun]:
    """Runs STARTING or STARTED whose processes are all gone (a local instance only: see above)."""
    if not is_local_instance(instance):
        return []
    records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING,
                                                               dg.DagsterRunStatus.STARTED]))
    now = time.time()
    dead = []
    for record in records:
        reason = why_dead(instance, record, now, start_timeout_s)
        if reason:
            run = record.dagster_run
            dead.append(DeadRun(run.run_id, run.job_name, run.status.value, reason))
    return dead


def fail_dead_run(instance: dg.DagsterInstance, dead: DeadRun) -> None:
    """Mark the run failed (as Dagster's own run monitoring does), unless it has finished, and free
    its pool slots."""
    run = instance.get_run_by_id(dead.run_id)
    if run is None:
        raise dg.DagsterRunNotFoundError(f"no run {dead.run_id} in this instance", invalid_run_id=dead.run_id)
    if not run.is_finished:
        instance.report_run_failed(run, f"Marked failed by synground cleanup: {dead.reason}.")
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(dead.run_id)


def clean_up_dead_runs(instance: dg.DagsterInstance, dry_run: bool = False,
                       start_timeout_s: float = START_TIMEOUT_S) -> list[DeadRun]:
    dead = find_dead_runs(instance, start_timeout_s)
    if not dry_run:
        for run in dead:
            fail_dead_run(instance, run)
    return dead


@dg.sensor(name="dead_runs", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Marks runs whose process died (killed, crashed) as failed and frees their pool slots.")
def dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    dead = clean_up_dead_runs(context.instance)
    for run in dead:
        context.log.warning(f"run {run.run_id} ({run.job_name}) marked failed: {run.reason}")
    return dg.SkipReason(f"marked {len(dead)} dead run(s) failed: {', '.join(r.run_id for r in dead)}" if dead
                         else "no dead run")
