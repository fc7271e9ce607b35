"""The Celery app a worker runs: `celery -A synground_assets.scale.worker worker --pool=solo -Q gpu`.

The app takes its broker, result backend and queues from the run launcher of the Dagster instance
(`$DAGSTER_HOME/dagster.yaml`, which must configure `HeartbeatCeleryRunLauncher`), so workers and
launcher cannot disagree. Start one worker per GPU with `CUDA_VISIBLE_DEVICES` set to its GPU and
`--pool=solo`: the worker's own process executes the run, one run at a time. Each run started here
is tagged with the worker's name, host, pid and visible GPUs (`synground/worker*`), and the worker
keeps a heartbeat in Redis so that run monitoring notices when it dies.
"""

from __future__ import annotations

from celery import signals
from dagster import DagsterInstance
from dagster._grpc.types import ExecuteRunArgs, ResumeRunArgs
from dagster._serdes import unpack_value
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

from synground_assets.scale.celery import HeartbeatCeleryRunLauncher, worker_identity

instance = DagsterInstance.get()
launcher = instance.run_launcher
if not isinstance(launcher, HeartbeatCeleryRunLauncher):
    raise TypeError(
        f"{instance.root_directory}/dagster.yaml: run_launcher is {type(launcher).__name__}; workers need "
        "synground_assets.scale.celery.HeartbeatCeleryRunLauncher (see deploy/dagster.yaml)"
    )

app = make_app(launcher.app_args())
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)


@signals.worker_ready.connect
def start_heartbeat(sender, **_) -> None:
    launcher.start_heartbeat(sender.hostname)


@signals.task_prerun.connect
def tag_run_with_worker(task, kwargs, **_) -> None:
    """Record on the run which worker executes it, before any step starts."""
    packed = (kwargs or {}).get("execute_job_args_packed")
    if packed is None:
        return
    args = unpack_value(packed, as_type=(ExecuteRunArgs, ResumeRunArgs))
    identity = worker_identity()
    instance.add_run_tags(args.run_id, {
        "synground/worker": task.request.hostname,
        "synground/worker_host": identity["host"],
        "synground/worker_pid": str(identity["pid"]),
        "synground/cuda_visible_devices": identity["cuda_visible_devices"],
    })
