"""Every name this code location takes from Dagster's private modules, in one place.

Dagster exports none of these at its top level; they are the seams of its run launcher, run
coordinator and run storage that a deployment extends. Pinned to the release line in
pyproject.toml: when an upgrade moves one, this is the one file to change.
"""

from dagster._core.errors import DagsterPipesExecutionError
from dagster._core.events import DagsterEvent
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.runs import InMemoryRunStorage, SqliteRunStorage
from dagster._grpc.types import ExecuteRunArgs, ResumeRunArgs
from dagster._serdes import unpack_value

__all__ = [
    "CheckRunHealthResult",
    "DagsterEvent",
    "DagsterPipesExecutionError",
    "ExecuteRunArgs",
    "InMemoryRunStorage",
    "QueuedRunCoordinator",
    "ResumeRunArgs",
    "SqliteRunStorage",
    "SubmitRunContext",
    "WorkerStatus",
    "unpack_value",
]
