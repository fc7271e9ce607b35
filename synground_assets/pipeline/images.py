"""`images`: one synthetic image per description, from the recipe's generator (the paper's Psi_g).

Failures are never published: an image the generator's safety checker flagged or a degenerate
(near-constant) one is regenerated with the next seed while the recipe's `regenerate_attempts` allow,
each failed attempt recorded as a removal, and skipped with its reason when none is left.
Near-duplicates of an image of this shard or of an earlier shard (perceptual hash) are removed the
same way, keeping the earliest item.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import pandas as pd

from synground_assets.items import derive_seed
from synground_assets.pipeline.batching import Logger, Progress, Skipped, progress_or_none, run_batched
from synground_assets.pipeline.result import TABLE, StageResult, quality_lineage
from synground_assets.previews import draw_triplets
from synground_assets.quality.images import degenerate_reason, find_near_duplicates, perceptual_hash, pixel_std
from synground_assets.quality.removals import Removal
from synground_assets.quality.settings import QualitySettings
from synground_assets.recipes import Recipe
from synground_assets.roles.base import GeneratedImage, ImageGenerator

IMAGE_FOLDER = "images"
PREVIEW_ITEMS = 8
STAGE = "images"
TABLE_COLUMNS = ["item_id", "file", "image_path", "width", "height", "image_seed", "phash"]
BOX_COLUMNS = ["item_id", "phrase", "x0", "y0", "x1", "y1"]

Accepted = dict[str, tuple[GeneratedImage, int]]  # item -> (the usable output, the seed that drew it)


def image_failure(output: GeneratedImage, settings: QualitySettings, attempt: int, seed: int) -> Removal | None:
    """The removal of a flagged or degenerate image (item_id left blank), or None when it can be used."""
    detail = f"attempt {attempt}, seed {seed}: "
    if output.flagged:
        return Removal(STAGE, "", "safety_checker", 1.0, None,
                       detail=detail + "the generator's safety checker flagged the image (nsfw_content_detected)")
    reason = degenerate_reason(output.image, settings.min_image_std)
    if reason:
        return Removal(STAGE, "", "degenerate_image", pixel_std(output.image), settings.min_image_std,
                       detail=detail + reason)
    return None


def generate_checked(generator: ImageGenerator, pairs: Sequence[tuple[str, str]], seeds: dict[str, int],
                     batch_size: int, settings: QualitySettings,
                     progress: Progress | None = None) -> tuple[Accepted, list[Skipped], list[Removal]]:
    """pairs: (item, prompt). Generate, check and regenerate with the next seed (seed + attempt)
    while attempts are left. Returns {item: (output, seed)}, the skipped (item, reason) pairs and
    the removals (one per failed attempt)."""
    accepted: Accepted = {}
    skipped: list[Skipped] = []
    removals: list[Removal] = []
    pending = list(pairs)
    for attempt in range(settings.regenerate_attempts + 1):
        generated, failed = run_batched(
            pending, batch_size,
            lambda batch, attempt=attempt: generator.generate([text for _, text in batch],
                                                              [seeds[item] + attempt for item, _ in batch]),
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
                removals.append(replace(failure, item_id=item))
                retry.append((item, text))
        pending = retry
    for item, _ in pending:
        last = next(r for r in reversed(removals) if r.item_id == item)
        skipped.append((item, f"{last.detail} (no usable image after {settings.regenerate_attempts + 1} attempt(s))"))
    return accepted, skipped, removals


def dedup_images(accepted: Accepted, earlier: pd.DataFrame,
                 settings: QualitySettings) -> tuple[dict[str, str], list[Removal]]:
    """earlier: item_id, phash of earlier shards' images, in key order. Returns the perceptual hash
    of each accepted image and the near-duplicates removed (earliest kept)."""
    hashes = {item: perceptual_hash(output.image) for item, (output, _) in accepted.items()}
    if settings.image_dedup_distance is None:
        return hashes, []
    duplicates = find_near_duplicates(list(hashes.items()), list(zip(earlier.item_id, earlier.phash)),
                                      settings.image_dedup_distance)
    removals = [Removal(STAGE, item, "near_duplicate_image", float(distance), float(settings.image_dedup_distance),
                        detail=f"perceptual hash {distance} bits from {kept}")
                for item, (kept, distance) in duplicates.items()]
    return hashes, removals


def draw_images(recipe: Recipe, shard: str, descriptions: pd.DataFrame, roles, earlier: pd.DataFrame,
                log: Logger | None = None) -> StageResult:
    """descriptions: item_id, description of this shard; earlier: item_id, phash of earlier shards.
    PNG files plus a table (item, file, size, seed, perceptual hash); GLIGEN recipes also keep the
    layout each image was drawn in (`layout.parquet`), procedural worlds their ground truth."""
    # 1. Generate, with the safety flag and degenerate-image checks (and retries).
    generator = roles.image_generator(recipe.name)
    settings = QualitySettings.from_dict(recipe.quality)
    seeds = {item: derive_seed("image", item) for item in descriptions.item_id}
    pairs = list(zip(descriptions.item_id, descriptions.description))
    progress = progress_or_none(log, f"images {recipe.name}|{shard}", len(pairs))
    accepted, skipped, removals = generate_checked(generator, pairs, seeds, recipe.roles["image_generator"].batch_size,
                                                   settings, progress)
    # 2. Near-duplicates of earlier shards' images and of this shard's earlier items.
    hashes, duplicates = dedup_images(accepted, earlier, settings)
    removed = {r.item_id for r in duplicates}
    # 3. What is left, in description order.
    rows, layout, truth, files, preview = [], [], [], {}, []
    for item, text in pairs:
        if item not in accepted or item in removed:
            continue
        output, seed = accepted[item]
        file = f"{IMAGE_FOLDER}/{item.rsplit(':', 1)[-1]}.png"
        files[file] = output.image
        rows.append((item, file, f"{recipe.name}/images/{shard}/{file}", *output.image.size, seed, hashes[item]))
        layout += _box_rows(item, output.layout)
        truth += _box_rows(item, output.ground_truth)
        if len(preview) < PREVIEW_ITEMS:
            preview.append(draw_triplets(output.image, output.layout or [(text, None)], mark_missing=False))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    tables = {TABLE: table}
    if recipe.box_source == "gligen":  # the boxes stage reads it, even when no item has a layout
        tables["layout.parquet"] = pd.DataFrame(layout, columns=BOX_COLUMNS)
    if truth:
        tables["ground_truth.parquet"] = pd.DataFrame(truth, columns=BOX_COLUMNS)
    every_removal = removals + duplicates
    return StageResult(
        info=generator.info, tables=tables, images=files, removals=every_removal, skipped=skipped, preview=preview,
        lineage={"images": table.drop(columns=["file", "phash"]),
                 **quality_lineage(STAGE, "images", len(pairs), len(table), every_removal)},
        counts={"images": len(table), "removed_images": len(removed)},
    )


def _box_rows(item: str, pairs) -> list[tuple]:
    return [(item, phrase, *box) for phrase, box in pairs or []]
