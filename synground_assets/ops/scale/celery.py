"""Dagster's Celery run launcher, plus the liveness check it lacks for workers killed outright.

`dagster_celery`'s launcher reports a run healthy while its Celery task is `STARTED`; a worker killed
with SIGKILL (or a lost machine) never moves the task out of `STARTED`, so run monitoring would wait
forever. Each worker (synground_assets/ops/scale/worker.py) refreshes a heartbeat key in Redis every
`heartbeat_seconds`; the key expires after three beats. A started task whose worker has no live
heartbeat, or a heartbeat from another process, is reported `FAILED`: run monitoring marks the run
failed and run retries launch it again on a live worker. The message says which: a worker on this
machine whose process is gone, or one silent for N s (frozen: a VM pause, a swap storm, SIGSTOP;
or cut off), which may still resume; its publishes are then refused (`run_health.ensure_run_started`).
The beat comes from a thread, so it keeps going while the worker's one process executes a long run (`--pool=solo`).

A Redis restart is neither a dead worker nor a dead run: a beat that fails is tried again at the
next beat; a health check that cannot reach Redis, or that runs before the workers have beaten
again after a restart, raises `WorkerHealthUnknown` (run monitoring then leaves the run alone, and
`run_health` says "unknown"); a task whose state Redis forgot is judged by the worker named on
the run's tags. The broker URL is shown with its password masked (`scale/urls.py`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

import redis
from dagster import Field, IntSource
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG
from kombu.exceptions import OperationalError

from synground_assets.ops.dagster_internals import CheckRunHealthResult, WorkerStatus
from synground_assets.ops.processes import process_alive
from synground_assets.ops.scale.urls import password_of, redact, safe_url

HEARTBEAT_KEY = "synground:celery-worker:{node}"
LAST_BEAT_KEY = "synground:celery-worker-last-beat:{node}"  # epoch seconds of its last beat, kept a day
LAST_BEAT_KEPT_S = 86400
BEATS_TO_EXPIRE = 3
REDIS_TIMEOUT_S = 5.0
WORKER_TAG, WORKER_PID_TAG = "synground/worker", "synground/worker_pid"  # set by scale/worker.py
WORKER_HOST_TAG = "synground/worker_host"

log = logging.getLogger(__name__)


class WorkerHealthUnknown(RuntimeError):
    """The worker's health cannot be told now (Redis unreachable or just restarted): neither alive nor dead."""


def worker_identity() -> dict[str, Any]:
    """The host, process and GPU(s) of this worker."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


class HeartbeatCeleryRunLauncher(CeleryRunLauncher):
    """`CeleryRunLauncher` whose health check also asks whether the task's worker is alive."""

    def __init__(self, heartbeat_seconds: int = 10, **kwargs: Any):
        self.heartbeat_seconds = heartbeat_seconds
        super().__init__(**kwargs)

    @classmethod
    def config_type(cls):
        return {
            **CeleryRunLauncher.config_type(),
            "heartbeat_seconds": Field(IntSource, is_required=False, default_value=10,
                                       description="How often workers beat; a worker silent for 3 beats is dead."),
        }

    def redis_client(self) -> redis.Redis:
        if not (self.broker or "").startswith("redis"):
            raise ValueError(f"heartbeats are kept in the Redis broker; broker is {safe_url(self.broker)!r}: use "
                             "redis://[:password@]host:port/db")
        # Bounded waits: a health check of an unreachable Redis must answer "unknown", not hang the daemon.
        return redis.Redis.from_url(self.broker, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)

    def beat(self, node: str, client: redis.Redis) -> None:
        client.set(HEARTBEAT_KEY.format(node=node), json.dumps(worker_identity()),
                   ex=BEATS_TO_EXPIRE * self.heartbeat_seconds)
        client.set(LAST_BEAT_KEY.format(node=node), str(time.time()), ex=LAST_BEAT_KEPT_S)

    def safe(self, text: object) -> str:
        """`text` with the broker's and backend's passwords masked: what may be logged or raised."""
        return redact(str(text), *(password_of(url) for url in (self.broker, self.backend)))

    def start_heartbeat(self, node: str) -> threading.Thread:
        """Beat now, then from a daemon thread for as long as this process lives. A beat that cannot
        reach Redis (restarted, unreachable) is logged and the next one tried: the key comes back
        with the first beat after Redis does."""
        client = self.redis_client()
        self.beat(node, client)
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.heartbeat_seconds):
                try:
                    self.beat(node, client)
                except redis.RedisError as exc:
                    log.warning(f"heartbeat of {node}: Redis unreachable ({self.safe(exc)}); trying again in "
                                f"{self.heartbeat_seconds} s")

        thread = threading.Thread(target=loop, name=f"heartbeat-{node}", daemon=True)
        thread.start()
        return thread

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        """RUNNING, SUCCESS or FAILED from the Celery task and the worker's heartbeat; raises
        `WorkerHealthUnknown` when that cannot be told (Redis unreachable, or restarted less than a
        heartbeat's lifetime ago), so that run monitoring leaves the run alone instead of failing it."""
        try:
            return self._worker_health(run)
        except (redis.RedisError, OSError, OperationalError) as exc:
            # Not `from exc`: the cause's text is Redis's, and a log prints the chain; what it says is kept, masked.
            raise WorkerHealthUnknown(f"run {run.run_id}: Redis at {safe_url(self.broker)} cannot be reached "
                                      f"({type(exc).__name__}: {self.safe(exc)}); the health of its worker is "
                                      "unknown") from None

    def _worker_health(self, run) -> CheckRunHealthResult:
        task = self.celery.AsyncResult(run.tags[DAGSTER_CELERY_TASK_ID_TAG])
        state = task.state
        if state == "SUCCESS":
            return CheckRunHealthResult(WorkerStatus.SUCCESS)
        if state == "FAILURE":
            return CheckRunHealthResult(WorkerStatus.FAILED, "Celery task failed.")
        started = task.info if state == "STARTED" and isinstance(task.info, dict) else {}
        # A Redis restart without persistence forgets every task (PENDING again); the worker's name and pid
        # are also on the run's tags (scale/worker.py), which live in the instance.
        node = started.get("hostname") or run.tags.get(WORKER_TAG)
        pid = started.get("pid") or int(run.tags.get(WORKER_PID_TAG) or 0)
        if not node:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, f"Unknown task status: {state}")
        client = self.redis_client()
        beat = client.get(HEARTBEAT_KEY.format(node=node))
        if beat is not None and json.loads(beat)["pid"] == pid:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        lifetime = BEATS_TO_EXPIRE * self.heartbeat_seconds
        if beat is None and client.info("server")["uptime_in_seconds"] < lifetime:
            raise WorkerHealthUnknown(f"run {run.run_id}: Redis restarted less than {lifetime} s ago; worker {node} "
                                      "has not beaten since")
        return CheckRunHealthResult(WorkerStatus.FAILED, silent_worker_message(run, node, pid, beat, client, lifetime))


def silent_worker_message(run, node: str, pid: int, beat: bytes | None, client: redis.Redis, lifetime: int) -> str:
    """Why the worker counts as dead. Only a process on this machine can be seen to be gone; a worker
    that stopped beating may be frozen (and resume) or cut off, so it is called silent, for as long
    as its last beat tells."""
    if beat is not None:
        return (f"Celery worker {node} (pid {pid}) is gone: process {json.loads(beat)['pid']} now beats under its "
                "name (the worker was restarted)")
    if run.tags.get(WORKER_HOST_TAG) == socket.gethostname() and pid and not process_alive(pid):
        return f"Celery worker {node} (pid {pid}) has sent no heartbeat for {lifetime} s: its process is gone"
    last = client.get(LAST_BEAT_KEY.format(node=node))
    silent = f"{time.time() - float(last):.0f}" if last is not None else f"more than {lifetime}"
    return (f"Celery worker {node} (pid {pid}) silent for {silent} s (no heartbeat within {lifetime} s): frozen (a "
            "VM pause, a swap storm), overloaded or cut off; if it resumes, its run publishes nothing more")

