"""The Celery app a worker runs: `celery -A synground_assets.ops.scale.worker worker --pool=solo -Q gpu`.

The app takes its broker, result backend and queues from the run launcher of the Dagster instance
(`$DAGSTER_HOME/dagster.yaml`, which must configure `HeartbeatCeleryRunLauncher`), so workers and
launcher cannot disagree. Start one worker per GPU with `CUDA_VISIBLE_DEVICES` set to its GPU and
`--pool=solo`: the worker's own process executes the run, one run at a time. Each run started here
is tagged with the worker's name, host, pid and visible GPUs (`synground/worker*`), and the worker
keeps a heartbeat in Redis so that run monitoring notices when it dies.
"""

from __future__ import annotations

import time

from celery import signals
from dagster import DagsterInstance
from dagster_celery.make_app import make_app
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

from synground_assets.ops.dagster_internals import ExecuteRunArgs, ResumeRunArgs, unpack_value
from synground_assets.ops.scale.celery import WORKER_PID_TAG, WORKER_TAG, HeartbeatCeleryRunLauncher, worker_identity

instance = DagsterInstance.get()
launcher = instance.run_launcher
if not isinstance(launcher, HeartbeatCeleryRunLauncher):
    raise TypeError(
        f"{instance.root_directory}/dagster.yaml: run_launcher is {type(launcher).__name__}; workers need "
        "synground_assets.ops.scale.celery.HeartbeatCeleryRunLauncher (see deploy/dagster.yaml)"
    )

app = make_app(launcher.app_args())
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)


@signals.worker_ready.connect
def start_heartbeat(sender, **_) -> None:
    launcher.start_heartbeat(sender.hostname)


def _wait_for_launcher_tags(run_id: str, task_id: str, timeout_s: float = 30) -> None:
    """The launcher tags the run with this task's id just after sending the task; tags are written
    read-modify-write, so tagging before that write lands could see our tags overwritten. (A retry
    starts with its parent run's tags, the parent's task id among them.)"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is None or run.tags.get(DAGSTER_CELERY_TASK_ID_TAG) == task_id:
            return
        time.sleep(0.1)


@signals.task_prerun.connect
def tag_run_with_worker(task_id, task, kwargs, **_) -> None:
    """Record on the run which worker executes it, before any step starts."""
    packed = (kwargs or {}).get("execute_job_args_packed")
    if packed is None:
        return
    args = unpack_value(packed, as_type=(ExecuteRunArgs, ResumeRunArgs))
    _wait_for_launcher_tags(args.run_id, task_id)
    identity = worker_identity()
    instance.add_run_tags(args.run_id, {
        WORKER_TAG: task.request.hostname,
        "synground/worker_host": identity["host"],
        WORKER_PID_TAG: str(identity["pid"]),
        "synground/cuda_visible_devices": identity["cuda_visible_devices"],
    })
