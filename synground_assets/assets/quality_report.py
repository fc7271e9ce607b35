"""The quality report of a run's shards as asset metadata: per stage and filter, in / removed / kept."""

import dagster as dg
import pandas as pd

from synground_assets.records.previews import markdown_table

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


def box_filter_settings(recipe) -> dict[str, str]:
    """The box stage's detectors and its optional filters as the recipe sets them, one line each:
    what the quality report's `ensemble_agreement`, `verify_crop` and `agreement_*` rows come from."""
    from synground_assets.quality.settings import EnsembleSettings

    settings = recipe.quality
    detectors = ", ".join(f"{name} ({spec.adapter}{' ' + spec.model if spec.model else ''})"
                          for name, spec in recipe.detectors())
    rows = {"detectors": detectors if recipe.box_source == "detector" else f"{recipe.box_source} layout"}
    if recipe.ensemble:
        ensemble = settings.ensemble or EnsembleSettings()
        rows["ensemble"] = (f"{ensemble.fusion}, kept when >= {ensemble.min_agreeing} of {len(recipe.ensemble)} "
                            f"detectors agree at IoU >= {ensemble.iou}")
    else:
        rows["ensemble"] = "off (one detector)"
    verify = settings.verify
    rows["verify"] = "off" if verify is None else (
        f"{verify.judge} {verify.model or 'the recipe grounding_model'}: P(yes) >= P(no) + {verify.margin}, "
        f"crop context {verify.context}")
    agreement = settings.agreement
    rows["agreement"] = "off" if agreement is None else (
        f"{agreement.model or 'the recipe grounding_model'}: ITM >= {agreement.min_itm_probability}, "
        f"mass lift >= {agreement.min_box_mass_lift}{', peak in box' if agreement.require_peak_in_box else ''}")
    return rows


def box_filters_metadata(recipes) -> dict:
    """`box_filters`: per recipe of the run, its detectors and box filters (a markdown table)."""
    rows = [(recipe.name, name, value) for recipe in recipes for name, value in box_filter_settings(recipe).items()]
    frame = pd.DataFrame(rows, columns=["recipe", "filter", "setting"])
    return {"box_filters": dg.MetadataValue.md(markdown_table(frame, max(len(frame), 1)))}


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


def log_quality_report(run, report: pd.DataFrame, folder, filters: dict[str, str] | None = None) -> None:
    """The report of the triplets a training run used, as MLflow metrics and a CSV artifact; `filters`
    (box_filter_settings of the recipe) as `quality/box_filters/<name>` parameters."""
    if filters:
        run.log_params({f"quality/box_filters/{name}": value[:500] for name, value in filters.items()})
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
