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


def quality_report(stage: str, items_in: int, removals: pd.DataFrame, unit: str) -> pd.DataFrame:
    """One row per filter of a stage: what came in, what each filter removed, what was kept.

    `unit` says what was counted (images, descriptions, boxes)."""
    removed = removals.groupby("filter").size() if len(removals) else pd.Series(dtype="int64")
    rows = [(stage, unit, items_in, name, int(count)) for name, count in removed.items()]
    report = pd.DataFrame(rows, columns=["stage", "unit", "items_in", "filter", "removed"])
    report["kept"] = items_in - int(removed.sum())
    return report
