"""The quality report of a run's shards as asset metadata: per stage and filter, in / removed / kept."""

import dagster as dg
import pandas as pd

from synground_assets.previews import markdown_table

REPORT_COLUMNS = ["stage", "unit", "items_in", "filter", "removed", "kept"]


def run_quality_report(outputs) -> pd.DataFrame:
    """The `shard_quality` rows of every shard of the run, summed per (stage, unit, filter), in
    that order. Summed in plain Python: a handful of rows, where pandas' groupby and merge cost a
    tenth of a second per asset."""
    totals: dict[tuple[str, str], list[int]] = {}  # (stage, unit) -> [items_in, kept]
    removed: dict[tuple[str, str, str], int] = {}
    for output in outputs:
        frame = output.lineage.get("shard_quality")
        rows = list(frame.itertuples(index=False)) if frame is not None else []
        if rows:  # items_in and kept repeat on every filter row of a shard's frame: count them once per shard
            total = totals.setdefault((rows[0].stage, rows[0].unit), [0, 0])
            total[0], total[1] = total[0] + int(rows[0].items_in), total[1] + int(rows[0].kept)
        for row in rows:
            key = (row.stage, row.unit, row.filter)
            removed[key] = removed.get(key, 0) + int(row.removed)
    keys = sorted(removed)
    if any(name != "none" for _, _, name in keys):
        keys = [key for key in keys if key[2] != "none"]
    return pd.DataFrame([(stage, unit, totals[stage, unit][0], name, removed[stage, unit, name], totals[stage, unit][1])
                         for stage, unit, name in keys], columns=REPORT_COLUMNS)


def quality_metadata(outputs) -> dict:
    """`quality_report` (a markdown table) and one `removed_by/<filter>` number per filter."""
    report = run_quality_report(outputs)
    removed = {f"removed_by/{r.filter}": dg.MetadataValue.int(int(r.removed))
               for r in report.itertuples(index=False) if r.filter != "none"}
    return {"quality_report": dg.MetadataValue.md(markdown_table(report, max(len(report), 1))), **removed}


def recipe_quality_report(lineage_db, recipe: str, shards: list[str]) -> pd.DataFrame:
    """The quality report of some shards of a recipe, read from lineage (empty where none was recorded)."""
    import duckdb

    marks = ", ".join("?" for _ in shards) or "NULL"
    query = f"""
        WITH rows AS (SELECT * FROM shard_quality WHERE recipe = ? AND shard IN ({marks})),
             totals AS (SELECT stage, unit, sum(items_in)::BIGINT AS items_in, sum(kept)::BIGINT AS kept
                        FROM (SELECT DISTINCT shard, stage, unit, items_in, kept FROM rows) GROUP BY ALL)
        SELECT r.stage, r.unit, t.items_in, r.filter, sum(r.removed)::BIGINT AS removed, t.kept
        FROM rows r JOIN totals t USING (stage, unit) GROUP BY ALL ORDER BY r.stage, r.filter"""
    try:
        return lineage_db.query(query, [recipe, *shards])
    except (FileNotFoundError, duckdb.CatalogException):  # nothing recorded yet (or an older lineage file)
        return pd.DataFrame(columns=REPORT_COLUMNS)


def log_quality_report(run, report: pd.DataFrame, folder) -> None:
    """The report of the triplets a training run used, as MLflow metrics and a CSV artifact."""
    metrics = {}
    for row in report.itertuples(index=False):
        metrics[f"quality/{row.stage}/items_in"] = row.items_in
        metrics[f"quality/{row.stage}/kept"] = row.kept
        if row.filter != "none":
            metrics[f"quality/{row.stage}/removed_by/{row.filter}"] = row.removed
    if metrics:
        run.log_metrics(metrics)
    path = folder / "quality_report.csv"
    report.to_csv(path, index=False)
    run.log_artifact(path)
