"""The quality report of a run's shards as asset metadata: per stage and filter, in / removed / kept."""

import dagster as dg
import pandas as pd

from synground_assets.previews import markdown_table

REPORT_COLUMNS = ["stage", "unit", "items_in", "filter", "removed", "kept"]


def run_quality_report(outputs) -> pd.DataFrame:
    """The `shard_quality` rows of every shard of the run, summed per (stage, unit, filter)."""
    frames = [o.lineage["shard_quality"] for o in outputs if "shard_quality" in o.lineage]
    if not frames:
        return pd.DataFrame(columns=REPORT_COLUMNS)
    # items_in and kept repeat on every filter row of a shard's frame: count them once per shard.
    totals = pd.concat([frame.iloc[:1] for frame in frames]).groupby(["stage", "unit"])[["items_in", "kept"]].sum()
    removed = pd.concat(frames).groupby(["stage", "unit", "filter"], as_index=False)["removed"].sum()
    if (removed["filter"] != "none").any():
        removed = removed[removed["filter"] != "none"]
    return removed.merge(totals.reset_index(), on=["stage", "unit"])[REPORT_COLUMNS]


def quality_metadata(outputs) -> dict:
    """`quality_report` (a markdown table) and one `removed_by/<filter>` number per filter."""
    report = run_quality_report(outputs)
    removed = {f"removed_by/{r.filter}": dg.MetadataValue.int(int(r.removed))
               for r in report.itertuples(index=False) if r.filter != "none"}
    return {"quality_report": dg.MetadataValue.md(markdown_table(report, max(len(report), 1))), **removed}
