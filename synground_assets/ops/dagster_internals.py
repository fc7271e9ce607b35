"""Every name this code location takes from Dagster's private modules, in one place.

Dagster exports none of these at its top level; they are the seams of its run launcher, run
coordinator and run storage that a deployment extends, the run tags of its retries (read by
synground_assets/relaunch.py), plus the origins and tag counter the tests use to hand the run
coordinator a run as the daemon does. Pinned to the release line in pyproject.toml: when an upgrade
moves one, this is the one file to change.
"""

from dagster._core.errors import DagsterPipesExecutionError
from dagster._core.events import DagsterEvent, StepMaterializationData
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.runs import InMemoryRunStorage, SqliteRunStorage
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    AUTO_RETRY_RUN_ID_TAG,
    BACKFILL_ID_TAG,
    MAX_RETRIES_TAG,
    PARTITION_NAME_TAG,
    WILL_RETRY_TAG,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._grpc.types import ExecuteRunArgs, ResumeRunArgs
from dagster._serdes import unpack_value
from dagster._utils.tags import TagConcurrencyLimitsCounter

__all__ = [
    "ASSET_PARTITION_RANGE_END_TAG",
    "ASSET_PARTITION_RANGE_START_TAG",
    "AUTO_RETRY_RUN_ID_TAG",
    "BACKFILL_ID_TAG",
    "MAX_RETRIES_TAG",
    "PARTITION_NAME_TAG",
    "WILL_RETRY_TAG",
    "CheckRunHealthResult",
    "DagsterEvent",
    "DagsterPipesExecutionError",
    "ExecuteRunArgs",
    "InMemoryRunStorage",
    "InProcessCodeLocationOrigin",
    "LoadableTargetOrigin",
    "QueuedRunCoordinator",
    "RemoteJobOrigin",
    "RemoteRepositoryOrigin",
    "ResumeRunArgs",
    "SqliteRunStorage",
    "StepMaterializationData",
    "SubmitRunContext",
    "TagConcurrencyLimitsCounter",
    "WorkerStatus",
    "unpack_value",
]
