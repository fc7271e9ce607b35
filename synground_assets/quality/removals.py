"""What a filter removed, one row each, and the quality report summed from those rows."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

REMOVAL_COLUMNS = ["stage", "item_id", "phrase_id", "box_id", "filter", "value", "threshold", "detail"]


@dataclass(frozen=True)
class Removal:
    """One removed item, phrase or box: which filter, the value it measured and the threshold it failed."""

    stage: str
    item_id: str
    filter: str
    value: float | None = None
    threshold: float | None = None
    phrase_id: str | None = None
    box_id: str | None = None
    detail: str = ""


def removals_frame(removals: list[Removal]) -> pd.DataFrame:
    rows = [(r.stage, r.item_id, r.phrase_id, r.box_id, r.filter, r.value, r.threshold, r.detail) for r in removals]
    frame = pd.DataFrame(rows, columns=REMOVAL_COLUMNS)
    return frame.astype({"value": "float64", "threshold": "float64"})


def quality_report(stage: str, unit: str, items_in: int, kept: int, removals: pd.DataFrame) -> pd.DataFrame:
    """One row per filter of a stage's shard: what came in, what the filter removed, what was kept.

    `unit` says what is counted (images, descriptions, boxes). `removed` counts removal rows; for
    images those are failed attempts, so an item regenerated successfully counts there and in `kept`."""
    removed = removals.groupby("filter").size() if len(removals) else pd.Series(dtype="int64")
    rows = [(stage, unit, items_in, name, int(count), kept) for name, count in removed.items()]
    rows = rows or [(stage, unit, items_in, "none", 0, kept)]
    return pd.DataFrame(rows, columns=["stage", "unit", "items_in", "filter", "removed", "kept"])
