"""Dagster's Celery run launcher, plus the liveness check it lacks for workers killed outright.

`dagster_celery`'s launcher reports a run healthy while its Celery task is `STARTED`; a worker killed
with SIGKILL (or a lost machine) never moves the task out of `STARTED`, so run monitoring would wait
forever. Each worker (synground_assets/scale/worker.py) refreshes a heartbeat key in Redis every
`heartbeat_seconds`; the key expires after three beats. A started task whose worker has no live
heartbeat, or a heartbeat from another process, is reported `FAILED`: run monitoring marks the run
failed and run retries launch it again on a live worker. The beat comes from a thread, so it keeps
going while the worker's one process executes a long run (`--pool=solo`).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any

import redis
from dagster import Field, IntSource
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from synground_assets.dagster_internals import CheckRunHealthResult, WorkerStatus

HEARTBEAT_KEY = "synground:celery-worker:{node}"
BEATS_TO_EXPIRE = 3


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
            raise ValueError(f"heartbeats are kept in the Redis broker; broker is {self.broker!r}: use redis://host:port/db")
        return redis.Redis.from_url(self.broker)

    def beat(self, node: str, client: redis.Redis) -> None:
        client.set(HEARTBEAT_KEY.format(node=node), json.dumps(worker_identity()),
                   ex=BEATS_TO_EXPIRE * self.heartbeat_seconds)

    def start_heartbeat(self, node: str) -> threading.Thread:
        """Beat now, then from a daemon thread for as long as this process lives."""
        client = self.redis_client()
        self.beat(node, client)
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.heartbeat_seconds):
                self.beat(node, client)

        thread = threading.Thread(target=loop, name=f"heartbeat-{node}", daemon=True)
        thread.start()
        return thread

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        health = super().check_run_worker_health(run)
        if health.status != WorkerStatus.RUNNING:
            return health
        started = self.celery.AsyncResult(run.tags[DAGSTER_CELERY_TASK_ID_TAG]).info or {}
        node, pid = started.get("hostname"), started.get("pid")
        beat = self.redis_client().get(HEARTBEAT_KEY.format(node=node))
        if beat is None or json.loads(beat)["pid"] != pid:
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"Celery worker {node} (pid {pid}) has sent no heartbeat for "
                f"{BEATS_TO_EXPIRE * self.heartbeat_seconds} s: its process is gone",
            )
        return health
