"""Experiment tracking: a thin layer over `MlflowClient` whose runs always end.

Every run is opened by `Tracking.run(...)`, a context manager that marks it FINISHED when the block
succeeds and FAILED when it raises, so no run is left RUNNING. The embedded default is a SQLite
tracking store with file artifacts under the project folder (`mlflow.db`, `mlartifacts/`);
`MLFLOW_TRACKING_URI` (or the resource's `tracking_uri`) points at a tracking server instead.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from synground_assets.resources.store import project_home

EXPERIMENT = "synground"


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_home() / 'mlflow.db'}"


def default_artifact_location() -> str:
    return (project_home() / "mlartifacts").as_uri()


@dataclass
class TrackedRun:
    client: MlflowClient
    run_id: str
    experiment_id: str
    tracking_uri: str

    def log_params(self, params: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), 0, step) for k, v in metrics.items()]
        )

    def log_metric_history(self, history: list[dict[str, float]], step_key: str = "step", prefix: str = "") -> None:
        """A loss curve: one MLflow metric point per entry and key."""
        metrics = [Metric(prefix + k, float(v), 0, int(row[step_key])) for row in history
                   for k, v in row.items() if k != step_key]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    @property
    def url(self) -> str:
        """The run's page when the store is a server; the local `mlflow ui` address otherwise."""
        base = self.tracking_uri if self.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"


class Tracking:
    def __init__(self, tracking_uri: str | None = None, experiment: str = EXPERIMENT):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=self.tracking_uri)

    def experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = None if self.tracking_uri.startswith("http") else default_artifact_location()
        return self.client.create_experiment(self.experiment, artifact_location=location)

    @contextmanager
    def run(self, name: str, tags: dict[str, str] | None = None) -> Iterator[TrackedRun]:
        experiment_id = self.experiment_id()
        run = self.client.create_run(experiment_id, run_name=name, tags=tags or {})
        tracked = TrackedRun(self.client, run.info.run_id, experiment_id, self.tracking_uri)
        try:
            yield tracked
        except BaseException:
            self.client.set_terminated(tracked.run_id, "FAILED")
            raise
        self.client.set_terminated(tracked.run_id, "FINISHED")
