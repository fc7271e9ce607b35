"""Dagster resources: thin configurable wrappers over the store, lineage and model suite."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from synground_assets.adapters.suite import ModelSuite, model_suite
from synground_assets.resources.lineage import Lineage, default_lineage_path
from synground_assets.resources.store import ShardStore, default_data_root
from synground_assets.resources.tracking import Tracking


class StoreResource(dg.ConfigurableResource):
    """Where shards live. Empty root: `$SYNGROUND_DATA`, else `<project home>/data`."""

    root: str = ""

    def store(self) -> ShardStore:
        return ShardStore(self.root or default_data_root())


class LineageResource(dg.ConfigurableResource):
    """The lineage index (DuckDB). Empty path: `$SYNGROUND_LINEAGE`, else `<data root>/lineage.duckdb`."""

    path: str = ""

    def resolved_path(self) -> Path:
        """The index's file: this resource's `path`, else the settings' default."""
        return Path(self.path) if self.path else default_lineage_path()

    def lineage(self) -> Lineage:
        return Lineage(self.resolved_path())


class ModelSuiteResource(dg.ConfigurableResource):
    """Recipe -> the models that play its roles, built lazily and cached per process."""

    def suite(self) -> ModelSuite:
        return model_suite()


class TrackingResource(dg.ConfigurableResource):
    """MLflow. Empty URI: `$MLFLOW_TRACKING_URI`, else SQLite `<project home>/mlflow.db`."""

    tracking_uri: str = ""
    experiment: str = "synground"

    def tracking(self) -> Tracking:
        return Tracking(self.tracking_uri or None, self.experiment)
