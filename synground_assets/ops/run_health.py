"""Is this run dead? One rule set, for the `missing_shards` schedule, the `dead_runs` sensor and
`python -m synground_assets.ops.cli cleanup`.

A run that is STARTING or STARTED is judged:
1. No process has reported its start within `start_timeout_s` of its last status
   change: dead (what run monitoring's `start_timeout_seconds` does).
2. Where the run launcher has a worker health check (Celery, Kubernetes): its answer. FAILED is
   dead; RUNNING or SUCCESS alive; anything else, or a check that cannot be made (its broker is
   unreachable), is unknown, never dead.
3. Else, on a local instance (SQLite: every run's processes are on this machine), by the processes
   Dagster recorded for it: dead when its main process (the pid of its `RUN_START` event) is gone,
   even if step processes (`STEP_START`) live on: a step process whose parent was killed waits on
   its pipes forever. A run with no main process recorded is dead when every process is gone. A pid
   reused by a newer process does not count.
4. Else (a shared instance whose launcher cannot tell): unknown: pids of other machines mean
   nothing here.

A dead run is marked failed through the instance (`report_run_failed`, which the schedule and the
UI then see), its leftover processes on this machine are ended (step processes, and the training
job's launcher and ranks, which record themselves: `processes.guard_training_process`), then its
concurrency slots are freed. A training job publishes only while its run is STARTED
(`ensure_run_started`), so an orphan that outlived its run publishes nothing.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from enum import Enum

import dagster as dg

from synground_assets.ops.dagster_internals import InMemoryRunStorage, SqliteRunStorage, WorkerStatus
from synground_assets.ops.processes import REGISTRY_FOLDER, process_alive, recorded_processes, registry_folder

# Seconds a run may stay STARTING (launched, no process has reported yet) before it counts as dead;
# the same bound as `run_monitoring.start_timeout_seconds` in dagster.yaml.
START_TIMEOUT_S = 180.0
JUDGED_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
_PROCESS_EVENTS = {dg.DagsterEventType.RUN_START, dg.DagsterEventType.STEP_START}


class Health(Enum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Verdict:
    health: Health
    reason: str = ""


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    job_name: str
    status: str
    reason: str
    ended: tuple[int, ...] = ()  # pids of its leftover processes that were ended


class RunNotStartedError(RuntimeError):
    """A process of a run that is no longer STARTED tried to publish; nothing was published."""


@dataclass(frozen=True)
class RunProcess:
    pid: int
    known_at: float  # epoch seconds at which the process was known to exist (its event's or start time)
    kind: str  # "run" (reported the run's start), "step" (a step's start), "training launcher", "training rank"
    host: str = socket.gethostname()

    @property
    def here(self) -> bool:
        return self.host == socket.gethostname()


def is_local_instance(instance: dg.DagsterInstance) -> bool:
    """SQLite run storage: the laptop profile, whose runs all run on this machine. A shared instance
    (PostgreSQL) holds runs of other machines, whose pids mean nothing here."""
    return isinstance(instance.run_storage, (SqliteRunStorage, InMemoryRunStorage))


def can_judge(instance: dg.DagsterInstance) -> bool:
    """Whether this instance's started runs can be judged from here (rule 2 or 3)."""
    return instance.run_launcher.supports_check_run_worker_health or is_local_instance(instance)


def run_processes(instance: dg.DagsterInstance, run_id: str) -> list[RunProcess]:
    """Every process that reported the run's start or a step's start, then those a training job recorded."""
    records = instance.get_records_for_run(run_id, of_type=_PROCESS_EVENTS).records
    processes = [RunProcess(event.dagster_event.pid, event.timestamp,
                            "run" if event.dagster_event.event_type == dg.DagsterEventType.RUN_START else "step")
                 for event in (r.event_log_entry for r in records)
                 if event.dagster_event is not None and event.dagster_event.pid]
    if instance.root_directory:
        processes += [RunProcess(entry["pid"], entry["started"], entry["kind"], entry["host"])
                      for entry in recorded_processes(registry_folder(instance.root_directory, run_id))]
    return processes


def judge_run(instance: dg.DagsterInstance, record: dg.RunRecord, now: float | None = None,
              start_timeout_s: float = START_TIMEOUT_S) -> Verdict:
    """Whether a STARTING or STARTED run is alive, dead (with the reason) or cannot be told."""
    run = record.dagster_run
    if run.status not in JUDGED_STATUSES:
        return Verdict(Health.UNKNOWN, f"run is {run.status.value}, not in progress")
    now = time.time() if now is None else now
    processes = run_processes(instance, run.run_id)
    if not processes:  # launched, no process reported yet: wait from its last status change
        waited = now - record.update_timestamp.timestamp()
        if waited > start_timeout_s:
            return Verdict(Health.DEAD, f"no process reported its start within {start_timeout_s:.0f} s")
        return Verdict(Health.ALIVE, "launched, waiting for its process to start")
    if instance.run_launcher.supports_check_run_worker_health:
        return _launcher_verdict(instance, run)
    if not is_local_instance(instance):
        return Verdict(Health.UNKNOWN, "a shared instance whose run launcher has no worker health check")
    return _process_verdict(processes)


def _launcher_verdict(instance: dg.DagsterInstance, run: dg.DagsterRun) -> Verdict:
    if run.status != dg.DagsterRunStatus.STARTED:
        return Verdict(Health.ALIVE, "starting on its worker")
    try:
        result = instance.run_launcher.check_run_worker_health(run)
    except Exception as exc:  # e.g. the broker is unreachable: nothing is known about the worker
        return Verdict(Health.UNKNOWN, f"the run launcher's health check failed: {type(exc).__name__}: {exc}")
    if result.status == WorkerStatus.FAILED:
        return Verdict(Health.DEAD, f"its worker is dead or silent: {result.msg}")
    if result.status in (WorkerStatus.RUNNING, WorkerStatus.SUCCESS):
        return Verdict(Health.ALIVE, result.msg or "")
    return Verdict(Health.UNKNOWN, f"the run launcher says {result.status.value}: {result.msg}")


def _process_verdict(processes: list[RunProcess]) -> Verdict:
    main = [process for process in processes if process.kind == "run"]
    judged = main or [process for process in processes if process.kind == "step"] or processes
    if any(process_alive(process.pid, process.known_at) for process in judged):
        return Verdict(Health.ALIVE)
    pids = ", ".join(sorted({str(process.pid) for process in judged}))
    left = [str(process.pid) for process in processes if process not in judged and _alive_here(process)]
    leftovers = f"; its leftover process(es) (pid {', '.join(left)}) are to be ended" if left else ""
    return Verdict(Health.DEAD, f"its {'main ' if main else ''}process(es) (pid {pids}) on this machine are gone; it "
                                f"was killed or crashed without reporting{leftovers}")


def _alive_here(process: RunProcess) -> bool:
    return process.here and process_alive(process.pid, process.known_at)


def end_leftover_processes(instance: dg.DagsterInstance, run_id: str) -> list[int]:
    """SIGKILL every process of a dead run still alive on this machine (step processes on a local
    instance; a training job's launcher and ranks, which may run elsewhere: only this host's)."""
    ended = []
    for process in run_processes(instance, run_id):
        if process.kind in ("run", "step") and not is_local_instance(instance):
            continue  # the event's pid names a process of the worker's machine
        if _alive_here(process):
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            ended.append(process.pid)
    return ended


def find_dead_runs(instance: dg.DagsterInstance, start_timeout_s: float = START_TIMEOUT_S) -> list[DeadRun]:
    """STARTING or STARTED runs judged dead."""
    now = time.time()
    dead = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=JUDGED_STATUSES)):
        verdict = judge_run(instance, record, now, start_timeout_s)
        if verdict.health == Health.DEAD:
            run = record.dagster_run
            dead.append(DeadRun(run.run_id, run.job_name, run.status.value, verdict.reason))
    return dead


def fail_dead_run(instance: dg.DagsterInstance, dead: DeadRun) -> list[int]:
    """Mark the run failed (as Dagster's own run monitoring does), unless it has finished, end its
    leftover processes, then free its pool slots (so the next GPU step never shares the GPU with an
    orphan). Returns the pids ended."""
    run = instance.get_run_by_id(dead.run_id)
    if run is None:
        raise dg.DagsterRunNotFoundError(f"no run {dead.run_id} in this instance", invalid_run_id=dead.run_id)
    if not run.is_finished:
        instance.report_run_failed(run, f"Marked failed by synground cleanup: {dead.reason}.")
    ended = end_leftover_processes(instance, dead.run_id)
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(dead.run_id)
    return ended


def forget_finished_runs(instance: dg.DagsterInstance) -> None:
    """Drop the process records of runs that have finished (their processes are judged no more)."""
    folder = os.path.join(instance.root_directory or "", REGISTRY_FOLDER)
    for run_id in os.listdir(folder) if instance.root_directory and os.path.isdir(folder) else []:
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            shutil.rmtree(os.path.join(folder, run_id), ignore_errors=True)


def ensure_run_started(run_id: str | None) -> None:
    """Raise unless the Dagster run `run_id` of this process's instance (`$DAGSTER_HOME`) is STARTED:
    what a training job checks just before it publishes. A job run by hand (no run id, no instance,
    a run this instance does not hold) is not checked."""
    if not run_id or not os.environ.get("DAGSTER_HOME"):
        return
    with dg.DagsterInstance.get() as instance:
        ensure_run_is_started(instance, run_id)


def ensure_run_is_started(instance: dg.DagsterInstance, run_id: str) -> None:
    """Raise `RunNotStartedError` unless `run_id` is still the STARTED run of record in `instance`:
    what each generation shard and the training job check just before they publish. A process that
    was frozen past its heartbeats (a VM pause, a swap storm) resumes in a run already marked failed
    and retried; its shards are the retry's to publish, not its own."""
    run = instance.get_run_by_id(run_id)
    if run is not None and run.status != dg.DagsterRunStatus.STARTED:
        raise RunNotStartedError(f"run {run_id} is {run.status.value}, no longer started (marked failed by run "
                                 "monitoring or cleanup, or canceled): this process outlived it, and publishes "
                                 "nothing")


def clean_up_dead_runs(instance: dg.DagsterInstance, dry_run: bool = False,
                       start_timeout_s: float = START_TIMEOUT_S) -> list[DeadRun]:
    dead = find_dead_runs(instance, start_timeout_s)
    if not dry_run:
        dead = [dataclasses.replace(run, ended=tuple(fail_dead_run(instance, run))) for run in dead]
        forget_finished_runs(instance)
    return dead
