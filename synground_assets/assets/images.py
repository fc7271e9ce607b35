"""`images`: one synthetic image per description, from the recipe's generator (the paper's Psi_g)."""

import dagster as dg
import pandas as pd

from synground_assets.assets.stage import Progress, ShardOutput, generation_asset, materialize_shards, run_batched, summary_metadata
from synground_assets.items import derive_seed
from synground_assets.previews import contact_sheet, draw_triplets, image_markdown
from synground_assets.resources import ModelSuiteResource, StoreResource
from synground_assets.resources.store import write_table

IMAGE_FOLDER = "images"
PREVIEW_ITEMS = 8


def _box_rows(item: str, pairs) -> list[tuple]:
    return [(item, phrase, *box) for phrase, box in pairs or []]


@generation_asset(
    deps=["descriptions"],
    kinds={"png", "parquet"},
)
def images(
    context: dg.AssetExecutionContext, store: StoreResource, models: ModelSuiteResource
) -> dg.MaterializeResult:
    """PNG files plus a table (item, file, size, seed); GLIGEN recipes also keep the layout drawn."""

    def write_shard(recipe, shard, shard_store, folder) -> ShardOutput:
        generator = models.role(recipe.name, "image_generator")
        described = shard_store.read_table(recipe.name, "descriptions", shard)
        seeds = {item: derive_seed("image", item) for item in described.item_id}
        pairs = list(zip(described.item_id, described.description))
        progress = Progress(context.log, f"images {recipe.name}|{shard}", len(pairs))
        generated, skipped = run_batched(
            pairs, recipe.roles["image_generator"].batch_size,
            lambda batch: generator.generate([text for _, text in batch], [seeds[item] for item, _ in batch]),
            lambda pair: pair[0], progress,
        )
        (folder / IMAGE_FOLDER).mkdir()
        rows, layout, truth, preview = [], [], [], []
        for (item, text), output in zip(pairs, generated):
            if output is None:
                continue
            file = f"{IMAGE_FOLDER}/{item.rsplit(':', 1)[-1]}.png"
            output.image.save(folder / file, format="PNG")
            rows.append((item, file, f"{recipe.name}/images/{shard}/{file}", *output.image.size, seeds[item]))
            layout += _box_rows(item, output.layout)
            truth += _box_rows(item, output.ground_truth)
            if len(preview) < PREVIEW_ITEMS:
                preview.append(draw_triplets(output.image, output.layout or [(text, None)], mark_missing=False))
        table = pd.DataFrame(rows, columns=["item_id", "file", "image_path", "width", "height", "image_seed"])
        write_table(folder, table)
        box_columns = ["item_id", "phrase", "x0", "y0", "x1", "y1"]
        if recipe.box_source == "gligen":  # the boxes stage reads it, even when no item has a layout
            write_table(folder, pd.DataFrame(layout, columns=box_columns), "layout.parquet")
        if truth:
            write_table(folder, pd.DataFrame(truth, columns=box_columns), "ground_truth.parquet")
        return ShardOutput(lineage={"images": table.drop(columns=["file"])}, info=generator.info,
                           counts={"images": len(table)}, skipped=skipped, preview=preview)

    outputs = materialize_shards(context, store, "images", write_shard)
    sheet = contact_sheet(outputs[0].preview)
    return dg.MaterializeResult(metadata={**summary_metadata(outputs), "preview": dg.MetadataValue.md(image_markdown(sheet))})
