"""What a stage made of one shard, in memory, for the asset layer to write and publish whole."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from PIL import Image

from synground_assets.pipeline.batching import Skipped
from synground_assets.quality.removals import Removal, quality_report, removals_frame
from synground_assets.roles.base import AdapterInfo

TABLE = "table.parquet"  # the shard's main table (the store's `TABLE`)


@dataclass
class StageResult:
    """One shard of one stage.

    tables: file name in the shard folder -> frame (`table.parquet`, the stage's main table, and
    any side table such as `layout.parquet`); images: path in the shard folder -> image, written
    as PNG; lineage: lineage table -> rows, to which the publisher adds who/where/when columns;
    removals: what the quality filters removed (also in `lineage["removals"]`); skipped: items the
    stage could not process, with the reason; counts: numbers for the asset's metadata; preview:
    stage-specific preview material (tables or image tiles)."""

    info: AdapterInfo
    tables: dict[str, pd.DataFrame]
    lineage: dict[str, pd.DataFrame]
    counts: dict[str, int]
    removals: list[Removal] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    images: dict[str, Image.Image] = field(default_factory=dict)
    preview: list = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        return self.tables[TABLE]


def quality_lineage(stage: str, unit: str, items_in: int, kept: int,
                    removals: list[Removal]) -> dict[str, pd.DataFrame]:
    """The `removals` and `shard_quality` lineage tables of a stage's shard."""
    rows = removals_frame(removals)
    return {"removals": rows, "shard_quality": quality_report(stage, unit, items_in, kept, rows)}
