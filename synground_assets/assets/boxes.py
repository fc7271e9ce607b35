"""`boxes`: each phrase boxed in its synthetic image by the detector (Psi_d), or taken from the
GLIGEN layout the image was drawn from (`box_source: gligen`); the stage itself (detection by one
detector or an ensemble, box filters, agreement filter, crop verification) is `pipeline/boxes.py`.
Two checks read back what was published."""

import dagster as dg

from synground_assets.assets.quality_report import box_filters_metadata, quality_metadata
from synground_assets.assets.stage import generation_asset, materialize_shards, summary_metadata
from synground_assets.config.recipes import recipe_book
from synground_assets.partitions import split_shard_key
from synground_assets.pipeline.boxes import BoxInputs, box_phrases
from synground_assets.pipeline.result import StageResult
from synground_assets.records.previews import contact_sheet, image_markdown
from synground_assets.resources import ModelSuiteResource, StoreResource

BOXES_IN_BOUNDS = dg.AssetCheckSpec("boxes_in_image_bounds", asset="boxes",
                                    description="0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height for every box.")
YIELD_ABOVE_THRESHOLD = dg.AssetCheckSpec(
    "yield_above_threshold", asset="boxes",
    description="Per shard, phrases with a box / phrases >= the recipe's min_yield.")


@generation_asset(deps=["images", "phrases"], kinds={"parquet"}, check_specs=[BOXES_IN_BOUNDS, YIELD_ABOVE_THRESHOLD])
def boxes(
    context: dg.AssetExecutionContext, store: StoreResource, suite: ModelSuiteResource
) -> dg.MaterializeResult:
    """One row per box (phrases without a box have none); the triplets are <image, phrase, box>."""

    def run_shard(recipe, shard, shard_store, _files):
        inputs = BoxInputs(
            images=shard_store.read_table(recipe.name, "images", shard),
            phrases=shard_store.read_table(recipe.name, "phrases", shard),
            image_folder=shard_store.shard_dir(recipe.name, "images", shard),
            layout=(shard_store.read_table(recipe.name, "images", shard, "layout.parquet")
                    if recipe.box_source == "gligen" else None))
        return box_phrases(recipe, shard, inputs, suite.suite(), context.log)

    results = materialize_shards(context, store, "boxes", run_shard)
    recipes = [recipe_book().get(name) for name in sorted({split_shard_key(k)[0] for k in context.partition_keys})]
    return dg.MaterializeResult(metadata={**_metadata(results), **quality_metadata(results),
                                          **box_filters_metadata(recipes)},
                                check_results=_checks(context, store))


def _metadata(results: list[StageResult]) -> dict:
    phrases = sum(r.counts["phrases"] for r in results)
    boxed = sum(r.counts["phrases_with_box"] for r in results)
    return {
        **summary_metadata(results),
        "yield": dg.MetadataValue.float(boxed / phrases if phrases else 0.0),
        "preview": dg.MetadataValue.md(image_markdown(contact_sheet(results[0].preview), photo=True)),
    }


def _checks(context: dg.AssetExecutionContext, store: StoreResource) -> list[dg.AssetCheckResult]:
    """Checks read back what was published, shard by shard."""
    shard_store = store.store()
    out_of_bounds, yields, failing = 0, {}, []
    for key in context.partition_keys:
        recipe, shard = split_shard_key(key)
        table = shard_store.read_table(recipe, "boxes", shard)
        sizes = shard_store.read_table(recipe, "images", shard)[["item_id", "width", "height"]]
        merged = table.merge(sizes, on="item_id")
        bad = ~((merged.x0 >= 0) & (merged.x0 < merged.x1) & (merged.x1 <= merged.width)
                & (merged.y0 >= 0) & (merged.y0 < merged.y1) & (merged.y1 <= merged.height))
        out_of_bounds += int(bad.sum())
        phrases = int(shard_store.read_table(recipe, "phrases", shard).kept.sum())
        yields[key] = table.phrase_id.nunique() / phrases if phrases else 0.0
        if yields[key] < recipe_book().get(recipe).min_yield:
            failing.append(key)
    return [
        dg.AssetCheckResult(check_name="boxes_in_image_bounds", passed=out_of_bounds == 0,
                            metadata={"boxes_out_of_bounds": out_of_bounds}),
        dg.AssetCheckResult(check_name="yield_above_threshold", passed=not failing,
                            metadata={"min_shard_yield": min(yields.values()), "failing_shards": ", ".join(failing)}),
    ]
