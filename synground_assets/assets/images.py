"""`images`: one synthetic image per description, from the recipe's generator (the paper's Psi_g).

Failures are never published: an image the generator's safety checker flagged or a degenerate
(near-constant) one is regenerated with the next seed while the recipe's `regenerate_attempts` allow,
each failed attempt recorded in the `removals` lineage table, and skipped with its reason when none
is left. Near-duplicates of an image of this shard or of an earlier shard (perceptual hash) are
removed the same way, keeping the earliest item.
"""

import dagster as dg
import pandas as pd

from synground_assets.assets.quality_report import quality_metadata
from synground_assets.assets.stage import (
    Progress,
    ShardOutput,
    generation_asset,
    materialize_shards,
    run_batched,
    summary_metadata,
)
from synground_assets.items import derive_seed
from synground_assets.previews import contact_sheet, draw_triplets, image_markdown
from synground_assets.quality.images import (
    degenerate_reason,
    find_near_duplicates,
    perceptual_hash,
    pixel_std,
)
from synground_assets.quality.removals import Removal, quality_report, removals_frame
from synground_assets.quality.settings import QualitySettings
from synground_assets.resources import ModelSuiteResource, StoreResource
from synground_assets.resources.published import earlier_shard_rows
from synground_assets.resources.store import write_table

IMAGE_FOLDER = "images"
PREVIEW_ITEMS = 8
STAGE = "images"


def _box_rows(item: str, pairs) -> list[tuple]:
    return [(item, phrase, *box) for phrase, box in pairs or []]


def image_failure(output, settings: QualitySettings, attempt: int, seed: int) -> Removal | None:
    """The removal of a flagged or degenerate image, or None when the image can be used."""
    detail = f"attempt {attempt}, seed {seed}: "
    if output.flagged:
        return Removal(STAGE, "", "safety_checker", 1.0, None,
                       detail=detail + "the generator's safety checker flagged the image (nsfw_content_detected)")
    reason = degenerate_reason(output.image, settings.min_image_std)
    if reason:
        return Removal(STAGE, "", "degenerate_image", pixel_std(output.image), settings.min_image_std, detail=detail + reason)
    return None


def generate_checked(generator, pairs, seeds, batch_size, settings, progress):
    """Generate, check and regenerate with the next seed (seed + attempt) while attempts are left.
    Returns {item: (output, seed)}, the skipped (item, reason) pairs and the removals."""
    accepted, skipped, removals, pending = {}, [], [], list(pairs)
    for attempt in range(settings.regenerate_attempts + 1):
        generated, failed = run_batched(
            pending, batch_size,
            lambda batch: generator.generate([text for _, text in batch], [seeds[item] + attempt for item, _ in batch]),
            lambda pair: pair[0], progress if attempt == 0 else None,
        )
        skipped += failed
        retry = []
        for (item, text), output in zip(pending, generated):
            if output is None:
                continue
            failure = image_failure(output, settings, attempt, seeds[item] + attempt)
            if failure is None:
                accepted[item] = (output, seeds[item] + attempt)
            else:
                removals.append(Removal(**{**vars(failure), "item_id": item}))
                retry.append((item, text))
        pending = retry
    for item, _ in pending:
        last = next(r for r in reversed(removals) if r.item_id == item)
        skipped.append((item, f"{last.detail} (no usable image after {settings.regenerate_attempts + 1} attempt(s))"))
    return accepted, skipped, removals


def dedup_images(accepted: dict, earlier, settings: QualitySettings) -> tuple[dict[str, str], list[Removal]]:
    """Perceptual hashes of the accepted images, and the near-duplicates removed (earliest kept)."""
    hashes = {item: perceptual_hash(output.image) for item, (output, _) in accepted.items()}
    if settings.image_dedup_distance is None:
        return hashes, []
    duplicates = find_near_duplicates(list(hashes.items()), list(zip(earlier.item_id, earlier.phash)),
                                      settings.image_dedup_distance)
    removals = [Removal(STAGE, item, "near_duplicate_image", float(distance), float(settings.image_dedup_distance),
                        detail=f"perceptual hash {distance} bits from {kept}") for item, (kept, distance) in duplicates.items()]
    return hashes, removals


@generation_asset(
    deps=["descriptions"],
    kinds={"png", "parquet"},
)
def images(
    context: dg.AssetExecutionContext, store: StoreResource, models: ModelSuiteResource
) -> dg.MaterializeResult:
    """PNG files plus a table (item, file, size, seed, perceptual hash); GLIGEN recipes also keep the layout drawn."""

    def write_shard(recipe, shard, shard_store, folder) -> ShardOutput:
        # 1. Generate, with the safety flag and degenerate-image checks (and retries).
        generator = models.suite().image_generator(recipe.name)
        settings = QualitySettings.from_dict(recipe.quality)
        described = shard_store.read_table(recipe.name, "descriptions", shard)
        seeds = {item: derive_seed("image", item) for item in described.item_id}
        pairs = list(zip(described.item_id, described.description))
        progress = Progress(context.log, f"images {recipe.name}|{shard}", len(pairs))
        accepted, skipped, removals = generate_checked(generator, pairs, seeds, recipe.roles["image_generator"].batch_size,
                                                       settings, progress)
        # 2. Near-duplicates of earlier shards' images and of this shard's earlier items.
        earlier = earlier_shard_rows(shard_store, recipe.name, "images", shard, ["item_id", "phash"])
        hashes, duplicates = dedup_images(accepted, earlier, settings)
        removed = {r.item_id for r in duplicates}
        # 3. Write what is left.
        (folder / IMAGE_FOLDER).mkdir()
        rows, layout, truth, preview = [], [], [], []
        for item, text in pairs:
            if item not in accepted or item in removed:
                continue
            output, seed = accepted[item]
            file = f"{IMAGE_FOLDER}/{item.rsplit(':', 1)[-1]}.png"
            output.image.save(folder / file, format="PNG")
            rows.append((item, file, f"{recipe.name}/images/{shard}/{file}", *output.image.size, seed, hashes[item]))
            layout += _box_rows(item, output.layout)
            truth += _box_rows(item, output.ground_truth)
            if len(preview) < PREVIEW_ITEMS:
                preview.append(draw_triplets(output.image, output.layout or [(text, None)], mark_missing=False))
        table = pd.DataFrame(rows, columns=["item_id", "file", "image_path", "width", "height", "image_seed", "phash"])
        write_table(folder, table)
        box_columns = ["item_id", "phrase", "x0", "y0", "x1", "y1"]
        if recipe.box_source == "gligen":  # the boxes stage reads it, even when no item has a layout
            write_table(folder, pd.DataFrame(layout, columns=box_columns), "layout.parquet")
        if truth:
            write_table(folder, pd.DataFrame(truth, columns=box_columns), "ground_truth.parquet")
        removal_rows = removals_frame(removals + duplicates)
        report = quality_report(STAGE, "images", len(pairs), len(table), removal_rows)
        return ShardOutput(lineage={"images": table.drop(columns=["file", "phash"]), "removals": removal_rows,
                                    "shard_quality": report},
                           info=generator.info, counts={"images": len(table), "removed_images": len(removed)},
                           skipped=skipped, preview=preview)

    outputs = materialize_shards(context, store, "images", write_shard)
    sheet = contact_sheet(outputs[0].preview)
    return dg.MaterializeResult(metadata={**summary_metadata(outputs), **quality_metadata(outputs),
                                          "preview": dg.MetadataValue.md(image_markdown(sheet))})
