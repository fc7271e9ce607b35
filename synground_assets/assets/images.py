"""`images`: one synthetic image per description, from the recipe's generator (the paper's Psi_g);
the stage itself (safety and degenerate checks, regeneration, near-duplicates) is `pipeline/images.py`.
Images are written in the background while the next batch is drawn; the earlier shards' images a
near-duplicate may repeat come from the lineage index."""

import dagster as dg

from synground_assets.assets.quality_report import quality_metadata
from synground_assets.assets.stage import generation_asset, materialize_shards, summary_metadata
from synground_assets.pipeline.images import draw_images
from synground_assets.records.previews import contact_sheet, image_markdown
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource
from synground_assets.resources.dedup_index import earlier_image_hashes


@generation_asset(deps=["descriptions"], kinds={"png", "parquet"})
def images(
    context: dg.AssetExecutionContext, store: StoreResource, lineage: LineageResource,
    suite: ModelSuiteResource
) -> dg.MaterializeResult:
    """PNG files plus a table (item, file, size, seed, perceptual hash); GLIGEN recipes also keep the layout drawn."""

    def run_shard(recipe, shard, shard_store, files):
        described = shard_store.read_table(recipe.name, "descriptions", shard)
        distance = recipe.quality.image_dedup_distance
        earlier = lambda hashes: earlier_image_hashes(shard_store, lineage.resolved_path(), recipe.name,  # noqa: E731
                                                      shard, hashes, distance)
        return draw_images(recipe, shard, described, suite.suite(), earlier, context.log, files)

    results = materialize_shards(context, store, "images", run_shard)
    sheet = contact_sheet(results[0].preview)
    return dg.MaterializeResult(metadata={**summary_metadata(results), **quality_metadata(results),
                                          "preview": dg.MetadataValue.md(image_markdown(sheet, photo=True))})
