"""Who made an output, built once per asset run and written the same way everywhere: the lineage
rows' columns (`run_id`, `code_version`, `materialized_at`) and the MLflow runs' tags
(`dagster_run_id`, `code_version`, ...). Every asset, generation and learning, takes it from here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

from synground_assets import code_version


@dataclass(frozen=True)
class Provenance:
    run_id: str  # the Dagster run
    code_version: str

    @classmethod
    def of(cls, context: dg.AssetExecutionContext) -> Provenance:
        return cls(context.run_id, code_version())

    def columns(self) -> dict:
        """A lineage row's provenance columns; `materialized_at` is now (UTC, naive), each time asked."""
        return {"run_id": self.run_id, "code_version": self.code_version,
                "materialized_at": datetime.now(timezone.utc).replace(tzinfo=None)}

    def tags(self, **more: str) -> dict[str, str]:
        """An MLflow run's tags: the Dagster run and the code, with the asset's own (recipe, stage, ...)."""
        return {"dagster_run_id": self.run_id, **more, "code_version": self.code_version}
